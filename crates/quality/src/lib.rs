//! Silver: bronze batches turned into typed, validated, de-duplicated rows
//! of one common data model, with every rejected row kept and counted.
//!
//! Each silver table is declared in `models/silver/<table>.toml`
//! ([`TableModel`]): SQL expressions that type and normalise each bronze
//! source, named expectations with an [`Action`] (`warn`, `drop`,
//! `quarantine`, `fail`) and an optional threshold, parents for
//! referential integrity, and a latest-wins ordering for
//! de-duplication. [`build_silver`] processes the bronze batches not yet
//! processed, for every table of a [`SilverCatalog`], and writes:
//!
//! - `silver_<t>`: one row per key, with `_lineage` (every contributing
//!   bronze row), `_dq_warnings`, `_is_deleted` and the winning row's
//!   `_batch_id`, `_source_file` and `_source_row`;
//! - `quarantine_silver_<t>`: each rejected row with every rule it failed,
//!   its batch and its raw bronze row as JSON;
//! - `dq_results`: one row per batch, table and rule;
//! - the derived tables (e.g. flattened provider specialties).
//!
//! For every batch, rows in silver lineage + quarantined + exact
//! duplicates + dropped = bronze rows.
//!
//! ```no_run
//! # async fn run(warehouse: &storage::Warehouse, run: &storage::RunContext) -> quality::Result<()> {
//! let catalog = quality::SilverCatalog::default_catalog()?;
//! let report = quality::build_silver(warehouse, run, &catalog).await?;
//! for table in &report.tables {
//!     println!("{}: {} rows", table.table, table.rows);
//! }
//! # Ok(())
//! # }
//! ```

mod dedup;
mod engine;
mod model;
mod udf;

pub use engine::{
    BatchAccount, DQ_RESULTS_TABLE, Round, RuleCount, SilverReport, TableReport, build_silver, build_silver_round,
    silver_rounds,
};
pub use model::{
    Action, ColumnModel, DEFAULT_MODELS, Derived, Expectation, OnMissing, Parent, SilverCatalog, SourceModel,
    TableModel,
};
pub use udf::{Icd10cmCode, icd10cm_code_count, icd10cm_list};

/// Errors of the silver stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A model file is malformed or inconsistent.
    #[error("silver model {origin}: {reason}")]
    Model { origin: String, reason: String },
    /// A model's SQL (a column expression or a rule) does not plan or run.
    #[error("{table}: {what}: {source}")]
    Sql {
        table: String,
        what: String,
        #[source]
        source: Box<deltalake::datafusion::error::DataFusionError>,
    },
    /// An expectation with action `fail`, or over its threshold, failed.
    #[error(
        "{table}: expectation {rule} failed for {failed} of {evaluated} rows of batch {batch_id}{}; nothing was committed",
        threshold.map(|t| format!(" (more than {:.2}% allowed)", t * 100.0)).unwrap_or_default()
    )]
    ExpectationFailed {
        table: String,
        rule: String,
        batch_id: String,
        failed: u64,
        evaluated: u64,
        threshold: Option<f64>,
    },
    /// Two values cannot be brought to one type (e.g. a model changed a
    /// column's type).
    #[error("{table}: {reason}")]
    Schema { table: String, reason: String },
    /// Arrow failed on data gold built.
    #[error("{table}: arrow: {source}")]
    Arrow {
        table: String,
        #[source]
        source: Box<deltalake::arrow::error::ArrowError>,
    },
    /// Reading a models folder failed.
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// The warehouse failed.
    #[error(transparent)]
    Storage(#[from] storage::Error),
    /// The task writing a table stopped without finishing (it panicked).
    #[error("{table}: the write stopped: {reason}")]
    Write { table: String, reason: String },
}

impl Error {
    /// Whether the user can fix this (a model or a failed expectation), as
    /// opposed to a storage fault or a bug.
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::Model { .. }
            | Self::Sql { .. }
            | Self::ExpectationFailed { .. }
            | Self::Schema { .. }
            | Self::Io { .. } => true,
            Self::Storage(e) => e.is_user_error(),
            Self::Arrow { .. } | Self::Write { .. } => false,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
