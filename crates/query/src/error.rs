//! The errors of `gold sql`, each with the error that caused it as its
//! `source`.

use deltalake::arrow::error::ArrowError;
use deltalake::datafusion::common::DataFusionError;

/// Errors of `gold sql`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The query is not a read-only query.
    #[error("gold sql is read-only: {0}")]
    NotReadOnly(String),
    /// The query does not parse, plan or run. The message is DataFusion's
    /// own (it already says what failed), and the causes DataFusion keeps
    /// follow it in the `source` chain.
    #[error(transparent)]
    Sql(Box<DataFusionError>),
    /// `--as-of-version` pins one table's version, and the query reads
    /// another number of tables.
    #[error("--as-of-version pins one table's version, and this query reads {tables} tables; use --as-of-run")]
    OneVersion {
        /// How many tables the query reads.
        tables: usize,
    },
    /// A table the query names is not in the chosen run's state.
    #[error("table {table} {reason}")]
    NoTable {
        /// The name the query gave.
        table: String,
        /// Why it is not there ("does not exist as of run 3 (…)").
        reason: String,
    },
    /// A table could not be made readable by the query.
    #[error("table {table}: {source}")]
    Delta {
        /// The table.
        table: String,
        /// What delta-rs reported.
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
    /// A table could not be registered with the query engine.
    #[error("table {table}: {source}")]
    Register {
        /// The table.
        table: String,
        /// What DataFusion reported.
        #[source]
        source: Box<DataFusionError>,
    },
    /// The result could not be converted or written out.
    #[error("{what}: {source}")]
    Arrow {
        /// What was being done ("writing the result as CSV").
        what: &'static str,
        /// What Arrow reported.
        #[source]
        source: Box<ArrowError>,
    },
    /// The result's JSON could not be read back.
    #[error("the result as JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// The result's CSV is not UTF-8.
    #[error("the result as CSV: {0}")]
    Utf8(#[source] std::string::FromUtf8Error),
    /// The warehouse failed.
    #[error(transparent)]
    Storage(#[from] storage::Error),
}

impl Error {
    /// Whether the user can fix this (the query, a name, a setting), as
    /// opposed to a storage fault or a bug.
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::Storage(e) => e.is_user_error(),
            Self::NotReadOnly(_) | Self::Sql(_) | Self::OneVersion { .. } | Self::NoTable { .. } => true,
            Self::Delta { .. } | Self::Register { .. } | Self::Arrow { .. } | Self::Json(_) | Self::Utf8(_) => false,
        }
    }

    /// A DataFusion error of the query itself.
    pub(crate) fn sql(source: DataFusionError) -> Self {
        Self::Sql(Box::new(source))
    }

    /// An Arrow error while doing `what`.
    pub(crate) fn arrow(what: &'static str) -> impl FnOnce(ArrowError) -> Self {
        move |source| Self::Arrow { what, source: Box::new(source) }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
