//! The pipeline's errors: a stage's own error under the stage's name, the
//! ledger's, and the user errors of the operations.

use chrono::NaiveDate;

use crate::Stage;

/// `Result` with the pipeline's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A stage crate's own error, kept whole so the chain stays walkable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StageError {
    /// From the ingest stage.
    #[error(transparent)]
    Ingest(#[from] ingest::Error),
    /// From the silver stage.
    #[error(transparent)]
    Silver(#[from] silver::Error),
    /// From the dims stage.
    #[error(transparent)]
    Dims(#[from] dims::Error),
    /// From the facts stage.
    #[error(transparent)]
    Facts(#[from] facts::Error),
    /// From the score stage.
    #[error(transparent)]
    Scoring(#[from] scoring::Error),
    /// From the aggregates stage.
    #[error(transparent)]
    Aggregates(#[from] aggregates::Error),
    /// From the warehouse, between stages.
    #[error(transparent)]
    Storage(#[from] storage::Error),
}

impl StageError {
    /// Whether the user can fix it (bad input, model or flag).
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::Ingest(e) => e.is_user_error(),
            Self::Silver(e) => e.is_user_error(),
            Self::Dims(e) => e.is_user_error(),
            Self::Facts(e) => e.is_user_error(),
            Self::Scoring(e) => e.is_user_error(),
            Self::Aggregates(e) => e.is_user_error(),
            Self::Storage(e) => e.is_user_error(),
        }
    }

    /// Whether it may go away on its own (a source database that did not
    /// answer).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Ingest(e) => e.is_transient(),
            Self::Silver(_)
            | Self::Dims(_)
            | Self::Facts(_)
            | Self::Scoring(_)
            | Self::Aggregates(_)
            | Self::Storage(_) => false,
        }
    }
}

/// Errors of the pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A stage failed.
    #[error("stage {stage}")]
    Stage {
        /// The stage.
        stage: Stage,
        /// Its error.
        #[source]
        source: Box<StageError>,
    },
    /// The run ledger could not be read or written.
    #[error("{what}")]
    Ledger {
        /// What was being done: "cannot start a run", …
        what: &'static str,
        /// The warehouse's error.
        #[source]
        source: storage::Error,
    },
    /// An operation on one table failed.
    #[error("{doing} {table}")]
    Table {
        /// What was being done: "optimizing", "vacuuming", …
        doing: &'static str,
        /// The table.
        table: String,
        /// The error.
        #[source]
        source: Box<StageError>,
    },
    /// A model built into gold does not parse: a fault of the build.
    #[error("the built-in models")]
    BuiltInModels(#[source] Box<StageError>),
    /// A rollback failed.
    #[error("rollback")]
    Rollback(#[source] storage::Error),
    /// Training a fraud model failed.
    #[error("train")]
    Train(#[source] scoring::Error),
    /// Generating the demo's insurer failed.
    #[error("cannot generate into {out}")]
    Generate {
        /// The landing folder.
        out: String,
        /// The generator's error.
        #[source]
        source: synth::Error,
    },
    /// A rebuild could not replay one of the live runs.
    #[error("replaying run {run} ({kind}, {date})")]
    Replay {
        /// The run.
        run: i64,
        /// Its kind.
        kind: String,
        /// Its logical date.
        date: NaiveDate,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// The warehouse failed.
    #[error(transparent)]
    Storage(#[from] storage::Error),
    /// A table's rows could not be read as content to compare.
    #[error("reading {table}")]
    Read {
        /// The table.
        table: String,
        /// The Arrow error.
        #[source]
        source: deltalake::arrow::error::ArrowError,
    },
    /// A request the user can correct: a flag, a run or a table that does
    /// not fit (the message says which and what to do).
    #[error("{0}")]
    Request(String),
    /// A rebuild's tables differ from the run it rebuilt.
    #[error("the rebuild of {as_of} differs from run {run}")]
    RebuildDiffers {
        /// The date rebuilt.
        as_of: NaiveDate,
        /// The run compared with.
        run: i64,
    },
}

impl Error {
    /// Whether the user can fix it (a bad flag, input, model or data),
    /// which the command line exits 1 for, rather than 2.
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::Stage { source, .. } | Self::Table { source, .. } => source.is_user_error(),
            Self::BuiltInModels(_) => false,
            Self::Ledger { source, .. } | Self::Rollback(source) | Self::Storage(source) => source.is_user_error(),
            Self::Train(e) => e.is_user_error(),
            Self::Generate { source, .. } => source.is_user_error(),
            Self::Replay { source, .. } => source.is_user_error(),
            Self::Request(_) | Self::RebuildDiffers { .. } => true,
            Self::Read { .. } => false,
        }
    }

    /// Whether it may go away on its own: a transient stage error, or a
    /// connection refused, reset, aborted or timed out anywhere in its chain.
    pub fn is_transient(&self) -> bool {
        if let Self::Stage { source, .. } = self
            && source.is_transient()
        {
            return true;
        }
        crate::retry::io_transient(self)
    }
}

/// `err` and its sources, joined with ": ", as the ledger records a
/// failed run's message.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        text.push_str(": ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}
