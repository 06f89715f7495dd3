//! Writing a fact table: whole on a full refresh, else only the month
//! partitions that hold a rebuilt fact, before or after. A table's write
//! can be prepared (read and built) ahead of its commit ([`prepare`]), so
//! that `fact_claims` commits after its bridges; the commit of a fact
//! table carries its watermarks ([`write_with_watermarks`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use deltalake::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use deltalake::arrow::compute::{cast, concat_batches, filter_record_batch};
use deltalake::arrow::datatypes::{DataType, Int32Type, SchemaRef};
use storage::{Commit, TableName, Warehouse};

use crate::plan::Plan;
use crate::{Error, Result, TableReport};

/// A fact table: its name, the fact's id column and the month partition.
pub(crate) struct FactTable {
    pub(crate) name: &'static str,
    pub(crate) id: &'static str,
    pub(crate) month: &'static str,
}

/// What writing one fact table did.
pub(crate) struct Written {
    pub(crate) version: Option<i64>,
    pub(crate) months_rewritten: usize,
}

fn column_as<'a>(table: &str, b: &'a RecordBatch, name: &str) -> Result<&'a Arc<dyn Array>> {
    b.column_by_name(name).ok_or_else(|| Error::column(table, name, "is missing"))
}

/// `batch` with `schema`'s columns, by name, cast to its types.
fn conform(table: &str, batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let cols = schema
        .fields()
        .iter()
        .map(|f| cast(column_as(table, batch, f.name())?, f.data_type()).map_err(|e| Error::arrow(table, e)))
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(Arc::clone(schema), cols).map_err(|e| Error::arrow(table, e))
}

fn months_of(table: &str, b: &RecordBatch, month: &str, mask: Option<&BooleanArray>) -> Result<BTreeSet<i32>> {
    let m = cast(column_as(table, b, month)?, &DataType::Int32).map_err(|e| Error::arrow(table, e))?;
    let m = m.as_primitive::<Int32Type>();
    Ok((0..m.len()).filter(|&i| mask.is_none_or(|k| k.value(i)) && m.is_valid(i)).map(|i| m.value(i)).collect())
}

/// The ids of the rebuilt facts, each with its month partition.
pub(crate) type Rebuilt = HashMap<String, i32>;

fn ids_in(table: &str, b: &RecordBatch, id: &str, ids: &Rebuilt) -> Result<BooleanArray> {
    let col = cast(column_as(table, b, id)?, &DataType::Utf8).map_err(|e| Error::arrow(table, e))?;
    let col = col.as_string::<i32>();
    Ok((0..col.len()).map(|i| Some(col.is_valid(i) && ids.contains_key(col.value(i)))).collect())
}

/// Writes `rows`, the rebuilt facts of `rebuilt` ids. A full refresh
/// replaces the table. Otherwise the months that held a rebuilt fact or
/// will hold one are rewritten in one commit: their other facts are
/// copied, the rebuilt ones replaced. Returns the version written, if any.
pub(crate) async fn write_facts(
    warehouse: &Warehouse,
    commit: &Commit<'_>,
    t: &FactTable,
    rows: RecordBatch,
    rebuilt: &Rebuilt,
    full: bool,
) -> Result<Written> {
    prepare(warehouse, t, rows, rebuilt, full).await?.write(warehouse, commit).await
}

/// A fact table's write, read and built but not committed yet.
pub(crate) struct Prepared {
    pub(crate) table: &'static str,
    /// The month partition column.
    month: &'static str,
    change: Change,
    months_rewritten: usize,
    /// The rebuilt facts written.
    pub(crate) rebuilt: u64,
}

enum Change {
    /// The table is written whole.
    Overwrite(RecordBatch),
    /// The months of the predicate are replaced by these rows.
    Replace(RecordBatch, String),
    Nothing,
}

/// Reads what [`write_facts`] keeps of `t` (the other facts of the months
/// it rewrites) and builds what it writes, without writing: the commit
/// ([`Prepared::write`]) can wait for another table's. The table must not
/// change in between.
pub(crate) async fn prepare(
    warehouse: &Warehouse,
    t: &FactTable,
    rows: RecordBatch,
    rebuilt: &Rebuilt,
    full: bool,
) -> Result<Prepared> {
    let name = TableName::new(t.name)?;
    let schema = rows.schema();
    let prepared = |change, months_rewritten| Prepared {
        table: t.name,
        month: t.month,
        change,
        months_rewritten,
        rebuilt: rows.num_rows() as u64,
    };
    if full || warehouse.load(&name).await?.is_none() {
        let months_rewritten = months_of(t.name, &rows, t.month, None)?.len();
        return Ok(prepared(Change::Overwrite(rows.clone()), months_rewritten));
    }
    if rebuilt.is_empty() {
        return Ok(prepared(Change::Nothing, 0));
    }
    let existing = warehouse.scan_columns(&name, None, &[t.id, t.month]).await?;
    let mut months = months_of(t.name, &rows, t.month, None)?;
    for b in &existing {
        let hit = ids_in(t.name, b, t.id, rebuilt)?;
        months.extend(months_of(t.name, b, t.month, Some(&hit))?);
    }
    if months.is_empty() {
        return Ok(prepared(Change::Nothing, 0));
    }
    let list = months.iter().map(i32::to_string).collect::<Vec<_>>().join(", ");
    let predicate = format!("{} IN ({list})", t.month);
    let mut parts = Vec::new();
    for b in warehouse.scan_where(&name, None, Some(&predicate)).await? {
        let hit = ids_in(t.name, &b, t.id, rebuilt)?;
        let keep: BooleanArray = hit.iter().map(|h| Some(!h.unwrap_or(false))).collect();
        let kept = filter_record_batch(&b, &keep).map_err(|e| Error::arrow(t.name, e))?;
        if kept.num_rows() > 0 {
            parts.push(conform(t.name, &kept, &schema)?);
        }
    }
    parts.push(rows.clone());
    let out = concat_batches(&schema, &parts).map_err(|e| Error::arrow(t.name, e))?;
    Ok(prepared(Change::Replace(out, predicate), months.len()))
}

impl Prepared {
    /// Commits the write, partitioned by the table's month.
    pub(crate) async fn write(self, warehouse: &Warehouse, commit: &Commit<'_>) -> Result<Written> {
        let Self { table, month, change, months_rewritten, .. } = self;
        let name = TableName::new(table)?;
        let commit = commit.clone().partitioned_by(&[month]);
        let version = match change {
            Change::Nothing => return Ok(Written { version: None, months_rewritten: 0 }),
            Change::Overwrite(rows) => warehouse.overwrite(&name, vec![rows], &commit).await?,
            Change::Replace(rows, predicate) => warehouse.replace_where(&name, vec![rows], &predicate, &commit).await?,
        };
        Ok(Written { version: Some(version), months_rewritten })
    }
}

/// Commits a fact table's prepared write with, in the same commit, the
/// watermark of its silver source and the dimension versions it resolved
/// against (`txn gold.facts:<input>`).
pub(crate) async fn write_with_watermarks(
    warehouse: &Warehouse,
    commit: Commit<'_>,
    source: &str,
    plan: &Plan,
    dims: &[(String, i64)],
    prepared: Prepared,
) -> Result<TableReport> {
    let mut commit = commit.with_txn(&format!("gold.facts:{source}"), plan.watermark);
    for (table, version) in dims {
        commit = commit.with_txn(&format!("gold.facts:{table}"), *version);
    }
    let (table, rows) = (prepared.table, prepared.rebuilt);
    let w = prepared.write(warehouse, &commit).await?;
    storage::failpoint("facts-written");
    Ok(TableReport {
        table: table.to_string(),
        version: w.version,
        rebuilt: rows,
        restated: plan.restated,
        months_rewritten: w.months_rewritten,
        full_refresh: plan.full,
    })
}
