//! The warehouse: Delta tables under one root URI, the run clock, and the
//! run ledger `_gold_runs`.
//!
//! Every table lives at `ROOT/<name>/`, with a layer prefix in the name
//! (`bronze_`, `silver_`, `dim_`, `fact_`, `gold_`, `quarantine_`, or `_` for
//! gold's own bookkeeping). Every commit carries the run id and the
//! operation in its commit info, so `DESCRIBE HISTORY` in any Delta engine
//! shows which gold run wrote it. Strings are written as plain `Utf8`.
//!
//! Main types: [`Warehouse`] (the tables), [`TableName`], [`Commit`] (what
//! a write records), [`RunClock`] and [`RunContext`] (a run's time and
//! identity), [`Ledger`] (the runs), and [`StreamingAppend`]. Table
//! contents take their time from the run clock; [`wall_clock`] is the one
//! function in gold that reads the wall clock.
//!
//! ```no_run
//! use storage::{Ledger, RunClock, RunKind, RunRecord, Warehouse};
//! # async fn run() -> storage::Result<()> {
//! let warehouse = Warehouse::open("./warehouse")?;
//! let ledger = Ledger::new(&warehouse);
//! let clock = RunClock::for_date(chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap());
//! let run = ledger.begin(RunKind::Build, clock).await?;
//! ledger.finish(&run, RunRecord::succeeded(&run, env!("CARGO_PKG_VERSION"))).await?;
//! for past in ledger.runs().await? {
//!     println!("run {} {} {}", past.run_id, past.kind, past.status);
//! }
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod clock;
mod content;
mod layout;
mod ledger;
mod rewrite;
mod stream;
mod warehouse;

pub use clock::{RunClock, RunContext, RunId, RunKind, wall_clock};
pub use content::{RowSet, row_diff};
pub use layout::{CHECKPOINT_INTERVAL, COMPACT_AT, COMPACT_TARGET, LOG_RETENTION, Upkeep, table_properties};
pub use ledger::{LEDGER_TABLE, Ledger, RunRecord, RunStatus, TableVersion};
pub use rewrite::Touched;
pub use stream::{Lane, StreamingAppend};
pub use warehouse::{Commit, HistoryEntry, OBJECT_STORE_SCHEMES, TableName, Warehouse, plain_batch, plain_type};

/// Errors of the warehouse layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The warehouse location is not a usable path or URI.
    #[error("warehouse location {location:?}: {reason}")]
    InvalidLocation {
        /// The location as given.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A local warehouse path could not be made absolute (the current
    /// folder is unreadable).
    #[error("warehouse location {location:?}: {source}")]
    LocationPath {
        /// The location as given.
        location: String,
        /// Why the path could not be resolved.
        #[source]
        source: std::io::Error,
    },
    /// A table's URI could not be formed under the warehouse root.
    #[error("warehouse location {location:?}: {source}")]
    TableUrl {
        /// The warehouse root.
        location: String,
        /// Why the table's URI is not valid.
        #[source]
        source: url::ParseError,
    },
    /// A table name breaks the naming rules.
    #[error("invalid table name {name:?}: {reason}")]
    InvalidTableName {
        /// The name as given.
        name: String,
        /// The rule it breaks.
        reason: String,
    },
    /// A table that must exist does not.
    #[error("table {table} does not exist in the warehouse")]
    NoSuchTable {
        /// The table.
        table: String,
    },
    /// Time travel to a version the table does not have.
    #[error("table {table} has no version {version} (latest is {latest})")]
    NoSuchVersion {
        /// The table.
        table: String,
        /// The version asked for.
        version: i64,
        /// The table's latest version.
        latest: u64,
    },
    /// Delta Lake reported an error on a table.
    #[error("table {table}: {source}")]
    Delta {
        /// The table.
        table: String,
        /// Delta's error.
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
    /// A query over a table failed.
    #[error("query on {table}: {source}")]
    Query {
        /// The table.
        table: String,
        /// DataFusion's error.
        #[source]
        source: Box<deltalake::datafusion::error::DataFusionError>,
    },
    /// Building or reading Arrow data failed.
    #[error("arrow data for {table}: {source}")]
    Arrow {
        /// The table.
        table: String,
        /// Arrow's error.
        #[source]
        source: Box<deltalake::arrow::error::ArrowError>,
    },
    /// Rows whose Arrow schema has no Delta equivalent.
    #[error("table {table}: schema: {source}")]
    Schema {
        /// The table.
        table: String,
        /// Why the schema does not convert.
        #[source]
        source: Box<deltalake::arrow::error::ArrowError>,
    },
    /// A file writer of a streaming append panicked or was cancelled.
    #[error("table {table}: a file writer failed: {source}")]
    Writer {
        /// The table.
        table: String,
        /// The writer task's end.
        #[source]
        source: Box<tokio::task::JoinError>,
    },
    /// Data that gold refuses to write, such as `Utf8View` columns.
    #[error("table {table}: {reason}")]
    Unsupported {
        /// The table.
        table: String,
        /// What gold refuses, and why.
        reason: String,
    },
    /// The ledger holds something gold did not write.
    #[error("run ledger: {0}")]
    Ledger(String),
    /// Another run holds the warehouse.
    #[error("the warehouse is busy: {0}")]
    Busy(String),
    /// A run id the ledger does not have.
    #[error("run {0} is not in the run ledger (see gold runs)")]
    NoSuchRun(i64),
    /// A run whose state cannot be gone back to.
    #[error("run {run} {status}, so it left no state to go back to; choose a run that succeeded (see gold runs)")]
    RunNotUsable {
        /// The run.
        run: i64,
        /// How it ended.
        status: String,
    },
    /// A local warehouse folder could not be created.
    #[error("{path}: {source}")]
    Io {
        /// The folder.
        path: String,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the user can fix this (bad location or name, missing table),
    /// as opposed to a storage fault or a bug.
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::InvalidLocation { .. }
            | Self::LocationPath { .. }
            | Self::TableUrl { .. }
            | Self::InvalidTableName { .. }
            | Self::NoSuchTable { .. }
            | Self::NoSuchVersion { .. }
            | Self::Busy(_)
            | Self::NoSuchRun(_)
            | Self::RunNotUsable { .. } => true,
            Self::Delta { .. }
            | Self::Query { .. }
            | Self::Arrow { .. }
            | Self::Schema { .. }
            | Self::Writer { .. }
            | Self::Unsupported { .. }
            | Self::Ledger(_)
            | Self::Io { .. } => false,
        }
    }

    /// Whether a commit lost a race with a concurrent writer.
    pub fn is_commit_conflict(&self) -> bool {
        use deltalake::kernel::transaction::TransactionError;
        match self {
            Self::Delta { source, .. } => matches!(
                source.as_ref(),
                deltalake::DeltaTableError::Transaction {
                    source: TransactionError::CommitConflict(_) | TransactionError::VersionAlreadyExists(_)
                } | deltalake::DeltaTableError::VersionAlreadyExists(_)
            ),
            _ => false,
        }
    }
}

/// A hook for crash tests: when the environment variable `GOLD_FAILPOINT`
/// names this point, the process says so on stderr and stops here, for the
/// test to kill it with SIGKILL at exactly this point. Unset, it does
/// nothing.
pub fn failpoint(name: &str) {
    if std::env::var("GOLD_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: waiting to be killed");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
