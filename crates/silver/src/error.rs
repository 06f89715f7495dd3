//! The silver stage's one error type, whether the user can fix each kind
//! ([`Error::is_user_error`]), and the helpers that wrap an Arrow or
//! DataFusion error with the table it happened on.

use deltalake::arrow::datatypes::DataType;
use deltalake::arrow::error::ArrowError;
use deltalake::datafusion::error::DataFusionError;

/// Errors of the silver stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A model file is inconsistent.
    #[error("silver model {origin}: {reason}")]
    Model {
        /// The model file (or `embedded models/silver/<name>`).
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A model file is not TOML, or not a model's fields.
    #[error("silver model {origin}: {}", .source.to_string().trim_end())]
    ModelSyntax {
        /// The model file (or `embedded models/silver/<name>`).
        origin: String,
        /// The TOML parser's error.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A model's SQL (a column expression or a rule) does not plan or run.
    #[error("{table}: {what}: {source}")]
    Sql {
        /// The silver (or derived) table.
        table: String,
        /// The expression or query that failed.
        what: String,
        /// DataFusion's error.
        #[source]
        source: Box<DataFusionError>,
    },
    /// An expectation with action `fail`, or over its threshold, failed.
    #[error(
        "{table}: expectation {rule} failed for {failed} of {evaluated} rows of batch {batch_id}{}; nothing was committed",
        threshold.map(|t| format!(" (more than {:.2}% allowed)", t * 100.0)).unwrap_or_default()
    )]
    ExpectationFailed {
        /// The silver table.
        table: String,
        /// The expectation's name.
        rule: String,
        /// The bronze batch it failed on.
        batch_id: String,
        /// Rows of the batch that failed it.
        failed: u64,
        /// Rows of the batch it was checked on.
        evaluated: u64,
        /// The share of failing rows allowed (`fail_above`), if any.
        threshold: Option<f64>,
    },
    /// Two values cannot be brought to one type, or a table lacks a column
    /// or row silver needs.
    #[error("{table}: {reason}")]
    Schema {
        /// The silver table.
        table: String,
        /// What does not fit.
        reason: String,
    },
    /// A column's values cannot be read as the type silver holds it in
    /// (e.g. a model changed a column's type).
    #[error("{table}: column {column}: cannot read {from} as {to}: {source}")]
    Cast {
        /// The silver table.
        table: String,
        /// The column.
        column: String,
        /// The type the values have.
        from: DataType,
        /// The type silver holds the column in.
        to: DataType,
        /// Arrow's cast error.
        #[source]
        source: Box<ArrowError>,
    },
    /// Arrow failed on data gold built.
    #[error("{table}: arrow: {source}")]
    Arrow {
        /// The silver table.
        table: String,
        /// Arrow's error.
        #[source]
        source: Box<ArrowError>,
    },
    /// Reading a models folder failed.
    #[error("{path}: {source}")]
    Io {
        /// The folder or file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The warehouse failed.
    #[error(transparent)]
    Storage(#[from] storage::Error),
    /// The task writing a table stopped without finishing (it panicked or
    /// was cancelled).
    #[error("{table}: the write stopped: {source}")]
    Write {
        /// The silver table.
        table: String,
        /// Why the task stopped.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl Error {
    /// Whether the user can fix this (a model or a failed expectation), as
    /// opposed to a storage fault or a bug.
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::Model { .. }
            | Self::ModelSyntax { .. }
            | Self::Sql { .. }
            | Self::ExpectationFailed { .. }
            | Self::Schema { .. }
            | Self::Cast { .. }
            | Self::Io { .. } => true,
            Self::Storage(e) => e.is_user_error(),
            Self::Arrow { .. } | Self::Write { .. } => false,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps a DataFusion error of `table` while it ran `what`.
pub(crate) fn sql_err(table: &str, what: impl Into<String>) -> impl FnOnce(DataFusionError) -> Error {
    let (table, what) = (table.to_string(), what.into());
    move |source| Error::Sql { table, what, source: Box::new(source) }
}

/// Wraps an Arrow error of `table`.
pub(crate) fn arrow_err(table: &str) -> impl FnOnce(ArrowError) -> Error + '_ {
    move |source| Error::Arrow { table: table.to_string(), source: Box::new(source) }
}
