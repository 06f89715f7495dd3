//! The merge engine's one error type. Errors of the libraries underneath
//! (Arrow, Parquet, the object store, the Delta kernel, DataFusion, tokio)
//! are kept whole as the `source`, so that a caller walking the chain
//! (the pipeline's retries look for a dropped connection) finds them.
//! Arrow's and Parquet's errors are kept as they are, so the chain holds
//! them by their own type; the large ones (object store, kernel,
//! DataFusion, Delta) are boxed, which keeps [`Error`] at 64 bytes. A boxed
//! source is the `Box` in the chain, whose own source is its error's.

use deltalake::arrow::error::ArrowError;
use deltalake::datafusion::error::DataFusionError;
use deltalake::parquet::errors::ParquetError;

/// Errors of the merge engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A column named by the spec is not in the batch or the table.
    #[error("column {column:?} {reason}")]
    Column {
        /// The column.
        column: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A column type the canonical encoding does not cover.
    #[error("column {column:?} has type {data_type}, which SCD2 hashing does not support")]
    UnsupportedType {
        /// The column.
        column: String,
        /// Its Arrow type.
        data_type: String,
    },
    /// A row the engine cannot place.
    #[error("row {row}: {reason}")]
    Row {
        /// The row, counted from 1 in the batch.
        row: usize,
        /// Why it cannot be placed.
        reason: String,
    },
    /// The table was built with a different spec.
    #[error("table {table}: {reason}")]
    SpecMismatch {
        /// The table's URL.
        table: String,
        /// How the table differs from the spec.
        reason: String,
    },
    /// Two versions would share a surrogate key.
    #[error(
        "surrogate key collision: {surrogate_key} for key hash {key_hash} starting {valid_from} is already taken; \
         nothing was committed"
    )]
    SurrogateKeyCollision {
        /// The surrogate key.
        surrogate_key: i64,
        /// The key hash of the version that would take it, in hex.
        key_hash: String,
        /// The start of that version (RFC 3339).
        valid_from: String,
    },
    /// The merge result breaks an SCD2 invariant; nothing was committed.
    #[error("SCD2 invariant broken for key hash {key_hash}: {reason}; nothing was committed")]
    Invariant {
        /// The key hash, in hex.
        key_hash: String,
        /// The invariant broken.
        reason: String,
    },
    /// The same batch sequence was applied before with other content.
    #[error("table {table}: {reason}")]
    Conflict {
        /// The table's URL.
        table: String,
        /// What conflicts.
        reason: String,
    },
    /// Delta Lake reported an error.
    #[error("table {table}: {source}")]
    Delta {
        /// The table's URL.
        table: String,
        /// Delta Lake's error.
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
    /// A source file that cannot be used.
    #[error("{path}: {reason}")]
    Source {
        /// The file.
        path: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// Arrow data could not be built, cast or compared.
    #[error("{context}: {source}")]
    Arrow {
        /// What was being done, or the column.
        context: String,
        /// Arrow's error.
        #[source]
        source: ArrowError,
    },
    /// A table file could not be decoded.
    #[error("{context}: {source}")]
    Parquet {
        /// What was being read.
        context: String,
        /// Parquet's error.
        #[source]
        source: ParquetError,
    },
    /// The table's storage could not be read or written.
    #[error("{context}: {source}")]
    Store {
        /// What was being read or written.
        context: String,
        /// The object store's error.
        #[source]
        source: Box<deltalake::ObjectStoreError>,
    },
    /// The Delta kernel could not read or write a deletion vector.
    #[error("{context}: {source}")]
    Kernel {
        /// The deletion vector's file.
        context: String,
        /// The kernel's error.
        #[source]
        source: Box<delta_kernel::Error>,
    },
    /// DataFusion could not read a snapshot file.
    #[error("{context}: {source}")]
    DataFusion {
        /// The file.
        context: String,
        /// DataFusion's error.
        #[source]
        source: Box<DataFusionError>,
    },
    /// A local folder could not be made.
    #[error("{path}: {source}")]
    Io {
        /// The folder.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A task reading or writing table files failed.
    #[error("{context}: {source}")]
    Task {
        /// What the task did.
        context: String,
        /// tokio's error (the task panicked or was cancelled).
        #[source]
        source: tokio::task::JoinError,
    },
    /// A worker thread sharing the merge's CPU work panicked.
    #[error("merge: {0}")]
    Panicked(#[from] parallel::Panicked),
    /// An internal invariant of the engine does not hold: a bug.
    #[error("{context}: {reason}")]
    Internal {
        /// Where.
        context: String,
        /// What does not hold.
        reason: String,
    },
}

impl Error {
    /// Whether the user can fix this (bad spec or input) rather than a
    /// storage fault or a bug.
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::Column { .. }
            | Self::UnsupportedType { .. }
            | Self::Row { .. }
            | Self::SpecMismatch { .. }
            | Self::Conflict { .. }
            | Self::Source { .. } => true,
            Self::SurrogateKeyCollision { .. }
            | Self::Invariant { .. }
            | Self::Delta { .. }
            | Self::Arrow { .. }
            | Self::Parquet { .. }
            | Self::Store { .. }
            | Self::Kernel { .. }
            | Self::DataFusion { .. }
            | Self::Io { .. }
            | Self::Task { .. }
            | Self::Panicked(_)
            | Self::Internal { .. } => false,
        }
    }

    /// An Arrow error while doing `context`.
    pub(crate) fn arrow(context: &str, source: ArrowError) -> Self {
        Self::Arrow { context: context.to_string(), source }
    }

    /// A Parquet error while reading `context`.
    pub(crate) fn parquet(context: &str, source: ParquetError) -> Self {
        Self::Parquet { context: context.to_string(), source }
    }

    /// An object store error while reading or writing `context`.
    pub(crate) fn store(context: &str, source: deltalake::ObjectStoreError) -> Self {
        Self::Store { context: context.to_string(), source: Box::new(source) }
    }

    /// A Delta kernel error on the deletion vector `context`.
    pub(crate) fn kernel(context: &str, source: delta_kernel::Error) -> Self {
        Self::Kernel { context: context.to_string(), source: Box::new(source) }
    }

    /// A task doing `context` that failed.
    pub(crate) fn task(context: &str, source: tokio::task::JoinError) -> Self {
        Self::Task { context: context.to_string(), source }
    }

    /// An internal invariant that does not hold.
    pub(crate) fn internal(context: &str, reason: impl Into<String>) -> Self {
        Self::Internal { context: context.to_string(), reason: reason.into() }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_library_error_stays_in_the_chain_under_the_same_message() {
        let arrow = Error::arrow("column \"plan\"", ArrowError::CastError("no".into()));
        assert_eq!(arrow.to_string(), "column \"plan\": Cast error: no");
        let source = std::error::Error::source(&arrow).expect("a source");
        assert!(source.downcast_ref::<ArrowError>().is_some());
        let panicked = Error::from(parallel::Panicked);
        assert_eq!(panicked.to_string(), "merge: a worker thread panicked");
        assert!(std::error::Error::source(&panicked).is_some_and(|e| e.is::<parallel::Panicked>()));
        assert!(!arrow.is_user_error() && !panicked.is_user_error());
        assert!(Error::Row { row: 1, reason: "x".into() }.is_user_error());
        // An I/O error under a boxed source is found by walking the chain.
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let store = Error::store(
            "reading part-0.parquet",
            deltalake::ObjectStoreError::Generic { store: "S3", source: Box::new(reset) },
        );
        let mut next = std::error::Error::source(&store);
        let mut found = false;
        while let Some(e) = next {
            found |= e.downcast_ref::<std::io::Error>().is_some();
            next = e.source();
        }
        assert!(found, "the connection reset is in the chain of {store}");
    }

    #[test]
    fn an_error_stays_as_small_as_the_results_passed_per_row_need() {
        // Sources larger than Arrow's are boxed.
        assert!(std::mem::size_of::<Error>() <= 64, "{} bytes", std::mem::size_of::<Error>());
    }
}
