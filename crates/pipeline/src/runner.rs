//! The stage runner: a build's stages in order, each with its retries,
//! recorded as one run.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde_json::json;
use storage::{Ledger, RunClock, RunContext, RunKind, Warehouse};

use crate::stages::{self, StageDone, TableWritten};
use crate::{Error, Models, finish_run, with_retries};

/// The stages of `gold build`, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Bronze: every source's new files and rows, exactly once.
    Ingest,
    /// Upkeep, after an ingest that brought something new: table
    /// properties and the compaction of small files, so that the stages
    /// after it read compacted tables.
    Compact,
    /// Silver: typing, data-quality rules, quarantine, de-duplication.
    Silver,
    /// The SCD2 dimensions.
    Dims,
    /// The star schema: facts, bridges, `dim_date` and `dim_diagnosis`.
    Facts,
    /// Fraud scores.
    Score,
    /// The regulatory aggregates.
    Aggregates,
}

impl Stage {
    /// Every stage, in order: what a build runs by default.
    pub const ALL: [Stage; 7] =
        [Self::Ingest, Self::Compact, Self::Silver, Self::Dims, Self::Facts, Self::Score, Self::Aggregates];

    /// The stage's name, as in `--only` and the run summary.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Compact => "compact",
            Self::Silver => "silver",
            Self::Dims => "dims",
            Self::Facts => "facts",
            Self::Score => "score",
            Self::Aggregates => "aggregates",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Every stage a run ran, in order.
#[derive(Debug, Default)]
pub struct StagesDone(pub Vec<StageDone>);

impl StagesDone {
    /// Each stage's JSON document, in order.
    pub fn docs(&self) -> Vec<serde_json::Value> {
        self.0.iter().map(|s| s.doc.clone()).collect()
    }

    /// Every table version written, stage by stage.
    pub fn tables(&self) -> Vec<TableWritten> {
        self.0.iter().flat_map(|s| s.tables.iter().cloned()).collect()
    }
}

/// What [`build`] is asked to do.
#[derive(Clone, Debug)]
pub struct BuildRequest {
    /// The landing root holding `YYYY-MM-DD/` day folders.
    pub landing: PathBuf,
    /// The run's logical date; `None` is today, by the wall clock.
    pub date: Option<NaiveDate>,
    /// The stages to run, in any order; empty is every stage.
    pub only: Vec<Stage>,
    /// Rebuild every fact rather than only the changed ones.
    pub full_refresh: bool,
}

impl BuildRequest {
    /// The nightly build of `date`: every stage, incrementally.
    pub fn nightly(landing: &Path, date: Option<NaiveDate>) -> Self {
        Self { landing: landing.to_path_buf(), date, only: Vec::new(), full_refresh: false }
    }

    /// The stages to run, in order, each once.
    fn stages(&self) -> Vec<Stage> {
        let mut stages = if self.only.is_empty() { Stage::ALL.to_vec() } else { self.only.clone() };
        stages.sort();
        stages.dedup();
        stages
    }
}

/// A build that succeeded.
#[derive(Debug)]
pub struct BuildDone {
    /// The run, as the ledger holds it.
    pub run: RunContext,
    /// Its stages.
    pub stages: StagesDone,
}

fn clock_of(date: Option<NaiveDate>) -> RunClock {
    date.map_or_else(RunClock::from_wall_clock, RunClock::for_date)
}

async fn begin(warehouse: &Warehouse, kind: RunKind, clock: RunClock) -> Result<RunContext, Error> {
    Ledger::new(warehouse)
        .begin(kind, clock)
        .await
        .map_err(|source| Error::Ledger { what: "cannot start a run", source })
}

/// The run summary of a run of stages.
fn summary(run: &RunContext, kind: &str, stages: Vec<serde_json::Value>) -> serde_json::Value {
    json!({"run_id": run.id, "kind": kind, "logical_date": run.clock.logical_date(), "stages": stages})
}

/// Runs `stages` (in their order) for `run`: ingest from `landing`,
/// silver and dims in rounds, facts with `facts_options`, scoring with
/// `training`, then the aggregates.
pub async fn run_stages(
    warehouse: &Warehouse,
    run: &RunContext,
    models: &Models,
    landing: &Path,
    stages: &[Stage],
    facts_options: facts::FactOptions,
    training: scoring::Training,
) -> Result<StagesDone, Error> {
    let retries = models.retries;
    let mut done = Vec::new();
    if stages.contains(&Stage::Ingest) {
        done.push(with_retries(retries, "ingest", || stages::ingest(warehouse, run, &models.sources, landing)).await?);
        storage::failpoint("after-ingest");
    }
    // A build whose ingest brought nothing new writes nothing: no upkeep.
    let news = !stages.contains(&Stage::Ingest) || done.iter().any(|d| !d.tables.is_empty());
    if stages.contains(&Stage::Compact) && news {
        done.push(with_retries(retries, "compact", || stages::compact(warehouse, run, &models.dims)).await?);
    }
    if stages.contains(&Stage::Silver) {
        done.extend(crate::rounds::silver_and_dims(warehouse, run, models, stages.contains(&Stage::Dims)).await?);
    } else if stages.contains(&Stage::Dims) {
        done.push(with_retries(retries, "dims", || stages::dims(warehouse, run, &models.dims)).await?);
    }
    if stages.contains(&Stage::Facts) {
        let facts = || stages::facts(warehouse, run, &models.dims, facts_options);
        done.push(with_retries(retries, "facts", facts).await?);
    }
    if stages.contains(&Stage::Score) {
        let score = || stages::score(warehouse, run, &models.scoring, training);
        done.push(with_retries(retries, "score", score).await?);
    }
    if stages.contains(&Stage::Aggregates) {
        done.push(with_retries(retries, "aggregates", || stages::aggregates(warehouse, run, models)).await?);
    }
    Ok(StagesDone(done))
}

/// `gold build`: begins a build run, runs the requested stages and
/// records the outcome in the ledger.
pub async fn build(warehouse: &Warehouse, models: &Models, request: &BuildRequest) -> Result<BuildDone, Error> {
    let run = begin(warehouse, RunKind::Build, clock_of(request.date)).await?;
    let options = facts::FactOptions { full_refresh: request.full_refresh };
    let stages = request.stages();
    let outcome =
        run_stages(warehouse, &run, models, &request.landing, &stages, options, scoring::Training::WhenStale).await;
    let ledger = Ledger::new(warehouse);
    let (stages, _) =
        finish_run(&ledger, &run, outcome, StagesDone::tables, |s| summary(&run, "build", s.docs())).await?;
    Ok(BuildDone { run, stages })
}

/// `gold ingest`: the ingest stage alone, with `sources` and `retries`,
/// recorded as a build run.
pub async fn ingest_only(
    warehouse: &Warehouse,
    sources: &ingest::SourceCatalog,
    retries: u32,
    landing: &Path,
    date: Option<NaiveDate>,
) -> Result<BuildDone, Error> {
    let run = begin(warehouse, RunKind::Build, clock_of(date)).await?;
    let outcome = with_retries(retries, "ingest", || stages::ingest(warehouse, &run, sources, landing))
        .await
        .map(|s| StagesDone(vec![s]));
    let ledger = Ledger::new(warehouse);
    let (stages, _) =
        finish_run(&ledger, &run, outcome, StagesDone::tables, |s| summary(&run, "build", s.docs())).await?;
    Ok(BuildDone { run, stages })
}

/// A demo that ran.
#[derive(Debug)]
pub struct DemoDone {
    /// The generated insurer.
    pub generated: synth::Summary,
    /// The generator's seconds.
    pub generate_seconds: f64,
    /// The landing folder it wrote.
    pub landing: PathBuf,
    /// The build of the last generated day.
    pub build: BuildDone,
    /// The ledger's version after the run was recorded.
    pub ledger_version: i64,
}

/// `gold demo`: generates an insurer into `out/landing` (replacing an
/// earlier demo's), then builds every stage for its last day as one run
/// of kind demo. `progress` hears (members done, members) while the
/// generator runs.
pub async fn demo(
    warehouse: &Warehouse,
    models: &Models,
    out: &Path,
    members: u64,
    seed: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<DemoDone, Error> {
    let landing = out.join("landing");
    let config = synth::Config { members, seed, force: true, ..synth::Config::new(&landing) };
    let clock = RunClock::for_date(config.start_date + chrono::Duration::days(i64::from(config.days) - 1));
    let started = std::time::Instant::now();
    let generated = synth::generate(&config, progress)
        .await
        .map_err(|source| Error::Generate { out: landing.display().to_string(), source })?;
    let generate_seconds = started.elapsed().as_secs_f64();
    let run = begin(warehouse, RunKind::Demo, clock).await?;
    let generate = json!({"stage": "generate", "seconds": generate_seconds, "rows_out": generated.rows, "landing": landing.display().to_string()});
    let outcome = run_stages(
        warehouse,
        &run,
        models,
        &landing,
        &Stage::ALL,
        facts::FactOptions::default(),
        scoring::Training::WhenStale,
    )
    .await;
    let ledger = Ledger::new(warehouse);
    let run_summary = |s: &StagesDone| {
        let mut stages = vec![generate.clone()];
        stages.extend(s.docs());
        summary(&run, "demo", stages)
    };
    let (stages, ledger_version) = finish_run(&ledger, &run, outcome, StagesDone::tables, run_summary).await?;
    Ok(DemoDone { generated, generate_seconds, landing, build: BuildDone { run, stages }, ledger_version })
}
