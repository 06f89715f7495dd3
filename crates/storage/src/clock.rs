//! The run clock, and [`wall_clock`]: the one function in gold that reads
//! the wall clock.
//!
//! Table contents never see the wall clock: they take their time from
//! [`RunClock::now`], which a dated run derives from its logical date. The
//! wall clock is read for what really happened when: a run's start and
//! end times in the ledger, and the age of a lease held by a run begun on
//! another host. Durations come from a monotonic timer. The test
//! `only_the_clock_module_reads_the_wall_clock` (tests/it/clock.rs) fails
//! when any other source file of the workspace reads it.

use std::fmt;
use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};

/// The wall clock, now, in UTC. Gold reads the wall clock here and nowhere
/// else: for a run's real start and end times and for leases. Table
/// contents take their time from [`RunClock::now`] instead.
pub fn wall_clock() -> DateTime<Utc> {
    Utc::now()
}

/// A run's notion of time. Table contents take their timestamps from
/// [`RunClock::now`], which a dated run derives from its logical date, so
/// the same inputs and date give the same tables. The wall clock is read
/// once, when the clock starts, for the ledger's start time; durations come
/// from a monotonic timer.
#[derive(Clone, Debug)]
pub struct RunClock {
    logical_date: NaiveDate,
    now: DateTime<Utc>,
    started_at: DateTime<Utc>,
    started: Instant,
}

impl RunClock {
    /// A run for logical date `date`: its clock reads midnight UTC of that
    /// date for the whole run.
    pub fn for_date(date: NaiveDate) -> Self {
        let now = date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
        Self { logical_date: date, now, started_at: wall_clock(), started: Instant::now() }
    }

    /// A run that replays a past one: logical date `date`, its clock reading
    /// `now` (the past run's `now`) for the whole run.
    pub fn replaying(date: NaiveDate, now: DateTime<Utc>) -> Self {
        Self { logical_date: date, now, started_at: wall_clock(), started: Instant::now() }
    }

    /// A run without `--date`: today (UTC), at the moment the clock starts.
    pub fn from_wall_clock() -> Self {
        let now = wall_clock();
        Self { logical_date: now.date_naive(), now, started_at: now, started: Instant::now() }
    }

    /// The date the run is for.
    pub fn logical_date(&self) -> NaiveDate {
        self.logical_date
    }

    /// The instant the run treats as "now" in everything it writes.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    /// When the run really started (wall clock, read once).
    pub fn started_at(&self) -> DateTime<Utc> {
        self.started_at
    }

    /// When the run really ended: its start plus the monotonic time since.
    pub fn ended_at(&self) -> DateTime<Utc> {
        self.started_at + chrono::Duration::from_std(self.started.elapsed()).unwrap_or_default()
    }

    /// Seconds since the clock started.
    pub fn elapsed_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// A run's number in the ledger: 1, 2, 3, … in the order runs began.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct RunId(pub i64);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    /// `gold build` (and `gold ingest`, its first stage alone).
    Build,
    /// `gold demo`.
    Demo,
    /// `gold rollback`.
    Rollback,
    /// `gold rebuild`.
    Rebuild,
    /// `gold train`.
    Train,
    /// `gold score`.
    Score,
    /// `gold maintain`.
    Maintain,
}

impl RunKind {
    /// The name stored in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Build => "build",
            Self::Demo => "demo",
            Self::Rollback => "rollback",
            Self::Rebuild => "rebuild",
            Self::Train => "train",
            Self::Score => "score",
            Self::Maintain => "maintain",
        }
    }
}

impl fmt::Display for RunKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run in progress: its id, kind and clock. Every table write of the run
/// goes through it, so every commit names the run.
#[derive(Clone, Debug)]
pub struct RunContext {
    /// The run's number in the ledger.
    pub id: RunId,
    /// What the run does.
    pub kind: RunKind,
    /// The run's time.
    pub clock: RunClock,
}
