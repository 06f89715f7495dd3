//! A run's outcome in the ledger.

use serde_json::json;
use storage::{Ledger, RunContext, RunRecord};

use crate::{Error, TableWritten};

/// The version of gold recorded with every run.
pub const CODE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Records a run's outcome in the ledger: its tables and summary if it
/// succeeded (with the instant its clock read, so a rebuild can replay
/// it, and the fraud model it scored or trained with), its error if not,
/// and then returns that error. On success, also the ledger's version.
pub async fn finish_run<T>(
    ledger: &Ledger<'_>,
    run: &RunContext,
    outcome: Result<T, Error>,
    tables: impl FnOnce(&T) -> Vec<TableWritten>,
    summary: impl FnOnce(&T) -> serde_json::Value,
) -> Result<(T, i64), Error> {
    match outcome {
        Ok(value) => {
            let mut summary = summary(&value);
            summary["clock_now"] = json!(run.clock.now());
            let mut record = RunRecord::succeeded(run, CODE_VERSION).with_summary(&summary);
            record.model_version = summary["stages"]
                .as_array()
                .and_then(|stages| stages.iter().find_map(|s| s["score"]["model_version"].as_str()))
                .or_else(|| summary["train"]["model_version"].as_str())
                .map(str::to_string);
            for t in tables(&value) {
                record = record.with_table(&t.table, t.version, t.rows);
            }
            let version = ledger
                .finish(run, record)
                .await
                .map_err(|source| Error::Ledger { what: "cannot record the run", source })?;
            Ok((value, version))
        }
        Err(err) => {
            let message = crate::error::chain(&err);
            if let Err(e) = ledger.finish(run, RunRecord::failed(run, CODE_VERSION, &message)).await {
                tracing::warn!("cannot record the failed run {}: {}", run.id, crate::error::chain(&e));
            }
            Err(err)
        }
    }
}
