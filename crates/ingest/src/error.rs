//! The errors of ingestion, each classified where it is raised: the user's
//! (a bad model, file or source), transient (a source's database did not
//! answer) or internal.

use deltalake::arrow::error::ArrowError;

/// Errors of ingestion.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `sources.toml` is invalid.
    #[error("{origin}: {reason}")]
    Model {
        /// Which catalog ("models/sources.toml", "source claims").
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A landing file cannot be ingested as declared.
    #[error("{file}: {reason}")]
    BadFile {
        /// The file, relative to the landing root.
        file: String,
        /// Why it cannot be ingested.
        reason: String,
    },
    /// A CSV landing file cannot be read as CSV.
    #[error("{file}: {at}: {source}")]
    Csv {
        /// The file, relative to the landing root.
        file: String,
        /// Where in the file ("cannot read the header", "row 7").
        at: String,
        /// What the CSV reader reported.
        #[source]
        source: csv::Error,
    },
    /// Files already ingested have different contents now.
    #[error("{} already ingested file(s) changed under the same name, so nothing was ingested: {}", files.len(), files.join(", "))]
    ChangedFiles {
        /// The changed files, relative to the landing root.
        files: Vec<String>,
    },
    /// A SQL source cannot be read. The location has no password.
    #[error("source {source_name} ({location}): {reason}")]
    Source {
        /// The source's name.
        source_name: String,
        /// Where it was looked for.
        location: String,
        /// Why it cannot be read.
        reason: String,
    },
    /// A SQL source's database refused the connection (not a transient
    /// failure: a refused login, an unknown database). The location has no
    /// password.
    #[error("source {source_name} ({location}): {source}")]
    Database {
        /// The source's name.
        source_name: String,
        /// The database URL, without its password.
        location: String,
        /// Why the connection failed.
        #[source]
        source: sqldb::Error,
    },
    /// A SQL source's table could not be read. The location has no
    /// password.
    #[error("source {source_name} ({location}): {what}: {source}")]
    SqlRead {
        /// The source's name.
        source_name: String,
        /// The database URL, without its password.
        location: String,
        /// What was being read ("reading members", "column member_id").
        what: String,
        /// What the database driver reported.
        #[source]
        source: Box<sqlx::Error>,
    },
    /// A landing path cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// What the operating system reported.
        source: std::io::Error,
    },
    /// A source's database did not answer (a transient failure: the build
    /// retries it).
    #[error("source {source_name} ({location}): {source}")]
    Unavailable {
        /// The source's name.
        source_name: String,
        /// The database URL, without its password.
        location: String,
        /// Why the connection failed.
        #[source]
        source: sqldb::Error,
    },
    /// The warehouse failed.
    #[error(transparent)]
    Storage(#[from] storage::Error),
    /// Arrow could not build or read a batch (a bug).
    #[error("internal error: {context}: {source}")]
    Arrow {
        /// What was being built or read.
        context: String,
        /// What Arrow reported.
        #[source]
        source: Box<ArrowError>,
    },
    /// A batch's file list could not be written as JSON (a bug).
    #[error("internal error: {context}: {source}")]
    Json {
        /// What was being written.
        context: &'static str,
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },
    /// A task reading a day's files failed (a bug).
    #[error("internal error: an ingest reader failed: {0}")]
    Reader(#[source] tokio::task::JoinError),
    /// A thread reading or hashing files panicked (a bug).
    #[error("internal error: an ingest worker panicked")]
    Panicked(#[source] parallel::Panicked),
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whether trying again later may succeed: a source's database did not
    /// answer.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// Whether the user can fix this (bad model, bad or changed file,
    /// unreachable source), as opposed to a storage fault or a bug.
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::Model { .. }
            | Self::BadFile { .. }
            | Self::Csv { .. }
            | Self::ChangedFiles { .. }
            | Self::Source { .. }
            | Self::Database { .. }
            | Self::SqlRead { .. }
            | Self::Unavailable { .. }
            | Self::Io { .. } => true,
            Self::Storage(e) => e.is_user_error(),
            Self::Arrow { .. } | Self::Json { .. } | Self::Reader(_) | Self::Panicked(_) | Self::Internal(_) => false,
        }
    }

    /// An Arrow error while building or reading `context`.
    pub(crate) fn arrow(context: impl Into<String>, source: ArrowError) -> Self {
        Self::Arrow { context: context.into(), source: Box::new(source) }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
