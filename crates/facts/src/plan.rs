//! What a run rebuilds of a fact table.
//!
//! - **Watermarks.** Each fact table's commit records, as Delta `txn`
//!   entries `gold.facts:<input>`, the largest `_updated_at` of its silver
//!   source and the version of every dimension it resolved against. A fact
//!   whose silver row changed after that watermark (or has no
//!   `_updated_at`) is rebuilt.
//! - **Dimension intervals.** A dimension merge records in
//!   [`dims::DIM_CHANGES`] each (key, validity interval) it changed; a fact
//!   whose key and date fall in one changed after the recorded dimension
//!   version is rebuilt too (restated), with its new point-in-time key.
//! - **Full refresh.** Everything is rebuilt when asked, when the fact
//!   table does not exist yet, or when a dimension's changes are not all
//!   recorded.
//!
//! A key inferred in the run can add facts to the plan afterwards
//! ([`extend_rebuild`]): facts not rebuilt that pointed at the unknown row.

use std::collections::BTreeSet;

use deltalake::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use storage::{TableName, Warehouse};

use crate::dim::Dim;
use crate::read::micros_col;
use crate::{Error, Result};

/// The fact table's recorded watermark and dimension versions.
async fn txn(warehouse: &Warehouse, table: &str, app: &str) -> Result<Option<i64>> {
    Ok(warehouse.txn_version(&TableName::new(table)?, &format!("gold.facts:{app}")).await?)
}

/// Which rows to rebuild: changed in silver after the watermark, or
/// touched by a changed dimension interval. `full` rebuilds all.
pub(crate) struct Plan {
    /// Every fact is rebuilt, and the table written whole.
    pub(crate) full: bool,
    /// Per silver row: whether its fact is rebuilt.
    pub(crate) rebuild: Vec<bool>,
    /// Facts rebuilt only because a dimension interval they point into
    /// changed (or their key was just inferred).
    pub(crate) restated: u64,
    /// The largest `_updated_at` of the silver source, recorded with the
    /// write.
    pub(crate) watermark: i64,
}

/// Plans the facts of `rows` (silver `source`, each fact with its keys in
/// `keyed` and its date in `dates`) for `table`.
pub(crate) async fn plan(
    warehouse: &Warehouse,
    table: &str,
    source: &str,
    rows: &RecordBatch,
    keyed: &[(&Dim, &StringArray)],
    dates: &[Option<i64>],
    full_refresh: bool,
) -> Result<Plan> {
    let updated = micros_col(source, rows, "_updated_at")?;
    let watermark = updated.iter().flatten().copied().max().unwrap_or(i64::MIN);
    let exists = warehouse.load(&TableName::new(table)?).await?.is_some();
    let n = rows.num_rows();
    let mut full = full_refresh || !exists;
    let mut rebuild = vec![false; n];
    let mut restated = 0;
    if !full {
        let after = txn(warehouse, table, source).await?.unwrap_or(i64::MIN);
        for (i, u) in updated.iter().enumerate() {
            rebuild[i] = u.is_none_or(|u| u > after);
        }
        for (dim, keys) in keyed {
            let done = txn(warehouse, table, &dim.model.table).await?.unwrap_or(-1);
            let Some(changes) = dim_changes(warehouse, dim, done).await? else {
                full = true;
                break;
            };
            if let Some(index) = &dim.index {
                for (i, t) in index.touched_by(&changes, keys, dates).into_iter().enumerate() {
                    if t && !rebuild[i] {
                        rebuild[i] = true;
                        restated += 1;
                    }
                }
            }
        }
    }
    if full {
        rebuild = vec![true; n];
        restated = 0;
    }
    Ok(Plan { full, rebuild, restated, watermark })
}

/// The (key, interval) pairs of `dim` changed after version `after`, or
/// `None` when they are not all recorded (then the facts are rebuilt).
async fn dim_changes(warehouse: &Warehouse, dim: &Dim, after: i64) -> Result<Option<Vec<(u128, i64, i64)>>> {
    let Some(now) = dim.version() else { return Ok(Some(Vec::new())) };
    if now <= after {
        return Ok(Some(Vec::new()));
    }
    let changes = TableName::new(dims::DIM_CHANGES)?;
    let recorded = warehouse.txn_version(&changes, &dims::changes_app_id(&dim.model.table)).await?;
    if recorded.is_none_or(|r| r < now) {
        tracing::warn!("{}: changes up to v{now} are not all recorded; the facts are rebuilt", dim.model.table);
        return Ok(None);
    }
    let filter = format!("dim = '{}' AND dim_version > {after}", dim.model.table);
    let mut out = Vec::new();
    for b in warehouse.scan_where(&changes, None, Some(&filter)).await? {
        let t = dims::DIM_CHANGES;
        let hashes = b
            .column_by_name("key_hash")
            .and_then(|c| c.as_binary_opt::<i32>())
            .ok_or_else(|| Error::column(t, "key_hash", "is missing"))?;
        let from = micros_col(t, &b, "valid_from")?;
        let to = micros_col(t, &b, "valid_to")?;
        for i in 0..b.num_rows() {
            let h = merge::hash::from_stored(hashes.value(i));
            out.push((h, from[i].unwrap_or(i64::MIN), to[i].unwrap_or(merge::OPEN_END)));
        }
    }
    Ok(Some(out))
}

/// The elements of `values` whose `rebuild` flag is set.
pub(crate) fn select<T: Copy>(values: &[T], rebuild: &[bool]) -> Vec<T> {
    values.iter().zip(rebuild).filter(|(_, r)| **r).map(|(v, _)| *v).collect()
}

/// The strings of `values` whose `rebuild` flag is set.
pub(crate) fn select_strings(values: &StringArray, rebuild: &[bool]) -> StringArray {
    values.iter().zip(rebuild).filter(|(_, r)| **r).map(|(v, _)| v).collect()
}

/// Marks for rebuilding the facts not marked yet whose key is in
/// `inferred`; returns how many.
pub(crate) fn extend_rebuild(rebuild: &mut [bool], keys: &StringArray, inferred: &BTreeSet<String>) -> u64 {
    let mut added = 0;
    for (i, r) in rebuild.iter_mut().enumerate() {
        if !*r && keys.is_valid(i) && inferred.contains(keys.value(i)) {
            *r = true;
            added += 1;
        }
    }
    added
}
