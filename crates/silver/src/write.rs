//! Writing one planned table, in an order that survives a stop at any
//! point: the new quarantine rows and the `dq_results` rows first, then
//! the derived tables, the silver rows (whose txn marks the bronze
//! batches done), and last the release marks on quarantine. A write whose txn
//! shows it done (by a run that stopped halfway) is skipped, and release
//! marks are recomputed from silver's lineage, so a stop loses nothing.

use std::sync::Arc;

use deltalake::arrow::array::{Array, AsArray, RecordBatch, TimestampMicrosecondArray};
use deltalake::arrow::datatypes::TimestampMicrosecondType;
use storage::{Commit, RunContext, TableName, Warehouse};

use crate::cluster::{ParentDays, by_month};
use crate::dq::DQ_RESULTS_TABLE;
use crate::error::arrow_err;
use crate::keyed::replace_derived;
use crate::plan::{Planned, key_set};
use crate::quarantine::row_ids;
use crate::report::{SilverReport, TableReport};
use crate::schema::concat_plain;
use crate::{Error, Result};

/// A table's write, running on its own task.
pub(crate) struct Writing {
    pub(crate) table: String,
    pub(crate) task: tokio::task::JoinHandle<Result<(TableReport, Option<i64>)>>,
}

impl Writing {
    /// Waits for the write and adds its table to `report`.
    pub(crate) async fn finish(self, report: &mut SilverReport) -> Result<()> {
        let (table, dq_version) =
            self.task.await.map_err(|source| Error::Write { table: self.table.clone(), source })??;
        if let Some(v) = dq_version {
            report.dq_results_version = Some(v);
        }
        report.tables.push(table);
        Ok(())
    }
}

/// `c` with each txn of `txns`, its application id ending in `suffix`.
fn with_txns<'a>(mut c: Commit<'a>, txns: &[(String, i64)], suffix: &str) -> Commit<'a> {
    for (id, v) in txns {
        c = c.with_txn(&format!("{id}{suffix}"), *v);
    }
    c
}

/// Whether `table` still lacks one of `txns` (application ids ending in
/// `suffix`); with no txns, always.
async fn undone(warehouse: &Warehouse, table: &TableName, txns: &[(String, i64)], suffix: &str) -> Result<bool> {
    for (id, v) in txns {
        if warehouse.txn_version(table, &format!("{id}{suffix}")).await?.is_none_or(|done| done < *v) {
            return Ok(true);
        }
    }
    Ok(txns.is_empty())
}

/// Writes one planned table (see the module doc). Returns the
/// `dq_results` version written, if any.
pub(crate) async fn write_table(warehouse: &Warehouse, run: &RunContext, plan: &mut Planned) -> Result<Option<i64>> {
    let t = plan.model.table.clone();
    let name = TableName::new(&t)?;
    let q_name = TableName::new(&plan.model.quarantine_table())?;
    let dq_name = TableName::new(DQ_RESULTS_TABLE)?;
    if let Some(q) = plan.quarantine_new.take()
        && undone(warehouse, &q_name, &plan.txns, "").await?
    {
        let commit = with_txns(Commit::new(run, "silver quarantine"), &plan.txns, "");
        plan.report.quarantine_version = Some(warehouse.append(&q_name, vec![q], &commit).await?);
    }
    let mut dq_version = None;
    let dq = std::mem::take(&mut plan.dq);
    let suffix = format!(":{t}");
    if !dq.is_empty() && undone(warehouse, &dq_name, &plan.txns, &suffix).await? {
        let commit = with_txns(Commit::new(run, "silver dq_results"), &plan.txns, &suffix);
        dq_version = Some(warehouse.append(&dq_name, dq, &commit).await?);
    }
    if plan.state_changed
        && undone(warehouse, &name, &plan.txns, "").await?
        && let Some(state) = &plan.state
    {
        let commit = with_txns(Commit::new(run, "silver"), &plan.txns, "")
            .with_metadata("released", serde_json::json!(plan.report.released));
        let derived = std::mem::take(&mut plan.derived);
        let cluster = plan.model.cluster_by.as_deref();
        let parents = match (cluster, plan.model.key.as_slice(), derived.is_empty()) {
            (Some(c), [k], false) => Some(ParentDays::of(&t, state, k, c)?),
            _ => None,
        };
        let rows = match cluster {
            Some(c) => by_month(&t, state, c)?,
            None => state.clone(),
        };
        // The derived tables first: the silver commit's txns mark the
        // batches done, so a run stopped in between writes both again.
        match plan.touched.take() {
            // By key: the derived rows of the rewritten keys, then the
            // touched files.
            Some((key, touched)) => {
                let keys = key_set(&t, state, &key)?;
                for (table, batch) in derived {
                    let v = replace_derived(warehouse, run, &table, &key, &keys, batch, parents.as_ref()).await?;
                    plan.report.derived.push((table, v));
                }
                plan.report.version = Some(touched.replace(warehouse, rows, &commit).await?);
            }
            None => {
                for (table, batch) in derived {
                    let d = TableName::new(&table)?;
                    let batches = match &parents {
                        Some(p) => p.by_month(&table, &[batch])?,
                        None => vec![batch],
                    };
                    let v = warehouse.overwrite(&d, batches, &Commit::new(run, "silver derived")).await?;
                    plan.report.derived.push((table, v));
                }
                plan.report.version = Some(warehouse.overwrite(&name, rows, &commit).await?);
            }
        }
    }
    if !plan.released.is_empty() {
        mark_released(warehouse, run, plan, &q_name).await?;
    }
    Ok(dq_version)
}

/// Sets `_released_at` on the quarantine rows the plan released (those
/// not marked yet), rewriting the quarantine table.
async fn mark_released(warehouse: &Warehouse, run: &RunContext, plan: &mut Planned, q_name: &TableName) -> Result<()> {
    let t = plan.model.table.as_str();
    let Some(q) = concat_plain(t, &warehouse.scan(q_name, None).await?)? else { return Ok(()) };
    let ids = row_ids(&q);
    let at = q.schema().index_of("_released_at").map_err(arrow_err(t))?;
    let old = q.column(at).as_primitive::<TimestampMicrosecondType>().clone();
    let now = run.clock.now().timestamp_micros();
    let new: TimestampMicrosecondArray = (0..q.num_rows())
        .map(|r| {
            if old.is_null(r) && plan.released.contains(&ids[r]) {
                Some(now)
            } else {
                old.is_valid(r).then(|| old.value(r))
            }
        })
        .collect::<TimestampMicrosecondArray>()
        .with_timezone("UTC");
    let mut cols = q.columns().to_vec();
    cols[at] = Arc::new(new);
    let q = RecordBatch::try_new(q.schema(), cols).map_err(arrow_err(t))?;
    plan.report.quarantine_version =
        Some(warehouse.overwrite(q_name, vec![q], &Commit::new(run, "silver release")).await?);
    Ok(())
}
