//! The warehouse: Delta tables under one root URI, the run clock, and the
//! run ledger `_gold_runs`.
//!
//! Every table lives at `ROOT/<name>/`, with a layer prefix in the name
//! (`bronze_`, `silver_`, `dim_`, `fact_`, `gold_`, `quarantine_`, or `_` for
//! gold's own bookkeeping). Every commit carries the run id and the
//! operation in its commit info, so `DESCRIBE HISTORY` in any Delta engine
//! shows which gold run wrote it. Strings are written as plain `Utf8`.
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

mod clock;
mod content;
mod ledger;
mod stream;
mod warehouse;

pub use clock::{RunClock, RunContext, RunId, RunKind};
pub use content::{RowSet, row_diff};
pub use ledger::{LEDGER_TABLE, Ledger, RunRecord, RunStatus, TableVersion};
pub use stream::{Lane, StreamingAppend};
pub use warehouse::{Commit, HistoryEntry, OBJECT_STORE_SCHEMES, TableName, Warehouse, plain_batch, plain_type};

/// Errors of the warehouse layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The warehouse location is not a usable path or URI.
    #[error("warehouse location {location:?}: {reason}")]
    InvalidLocation { location: String, reason: String },
    /// A table name breaks the naming rules.
    #[error("invalid table name {name:?}: {reason}")]
    InvalidTableName { name: String, reason: String },
    /// A table that must exist does not.
    #[error("table {table} does not exist in the warehouse")]
    NoSuchTable { table: String },
    /// Time travel to a version the table does not have.
    #[error("table {table} has no version {version} (latest is {latest})")]
    NoSuchVersion { table: String, version: i64, latest: u64 },
    /// Delta Lake reported an error on a table.
    #[error("table {table}: {source}")]
    Delta {
        table: String,
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
    /// A query over a table failed.
    #[error("query on {table}: {source}")]
    Query {
        table: String,
        #[source]
        source: Box<deltalake::datafusion::error::DataFusionError>,
    },
    /// Building or reading Arrow data failed.
    #[error("arrow data for {table}: {source}")]
    Arrow {
        table: String,
        #[source]
        source: Box<deltalake::arrow::error::ArrowError>,
    },
    /// Data that gold refuses to write, such as `Utf8View` columns.
    #[error("table {table}: {reason}")]
    Unsupported { table: String, reason: String },
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
    RunNotUsable { run: i64, status: String },
    /// A local warehouse folder could not be created.
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl Error {
    /// Whether the user can fix this (bad location or name, missing table),
    /// as opposed to a storage fault or a bug.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Self::InvalidLocation { .. }
                | Self::InvalidTableName { .. }
                | Self::NoSuchTable { .. }
                | Self::NoSuchVersion { .. }
                | Self::Busy(_)
                | Self::NoSuchRun(_)
                | Self::RunNotUsable { .. }
        )
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
