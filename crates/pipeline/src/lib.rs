//! The nightly build as a library: the stage runner with its retries and
//! per-day rounds, the run ledger's bookkeeping, and the operations that
//! record runs (rollback, maintain, train, score), `rebuild` and the demo.
//!
//! The `gold` binary parses flags and config into a [`Models`] and calls
//! in here; everything a run does to the warehouse is decided here, so it
//! can be tested without the command line.
//!
//! - [`build`] begins a run in the ledger, runs the requested [`Stage`]s
//!   ([`run_stages`]) and records the outcome ([`finish_run`]);
//! - every stage is retried after a transient error ([`with_retries`]);
//! - silver and the dimensions run once per landing day when a build
//!   catches up several days, as the nightly runs would have;
//! - [`rebuild()`] replays the ledger's runs into another warehouse and
//!   compares every table's content hash with the live one;
//! - [`rollback`], [`maintain`], [`train`] and [`score`] are the other
//!   commands that write, each recorded as a run of its own kind.
//!
//! ```no_run
//! # async fn demo(warehouse: &storage::Warehouse, landing: &std::path::Path) -> pipeline::Result<()> {
//! let models = pipeline::Models::defaults()?;
//! let request = pipeline::BuildRequest::nightly(landing, chrono::NaiveDate::from_ymd_opt(2025, 1, 2));
//! let done = pipeline::build(warehouse, &models, &request).await?;
//! println!("run {} wrote {} tables", done.run.id, done.stages.tables().len());
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod error;
mod models;
mod ops;
mod rebuild;
mod record;
mod retry;
mod rounds;
mod runner;
mod stages;

pub use error::{Error, Result, StageError};
pub use models::{DEFAULT_RETRIES, Models};
pub use ops::{
    MaintainDone, MaintainRequest, RollbackDone, RollbackTarget, ScoreDone, TrainDone, maintain, rollback, score, train,
};
pub use rebuild::{RebuildDone, RebuildRequest, TableMatch, rebuild};
pub use record::{CODE_VERSION, finish_run};
pub use retry::{is_transient, with_retries};
pub use runner::{BuildDone, BuildRequest, DemoDone, Stage, StagesDone, build, demo, ingest_only, run_stages};
pub use stages::{SilverRound, StageDone, StageReport, TableWritten};
