//! Updating a table by key: a night reads and rewrites only the files
//! that hold the keys its new rows touch, not the whole table, so its cost
//! follows the night's rows and not the table's history.
//!
//! A table is updated by key when it has one key column, no source is a
//! full extract (finding the keys missing from an extract needs every
//! key), no other table checks its keys as a parent, it exists, and so do
//! its derived tables. The touched keys are every new row's and every
//! quarantined orphan's being considered for release. The files holding
//! any of them are read whole: their other rows are untouched rows of the
//! plan, kept as they were. Those files are then replaced, in one commit,
//! by the plan's rows ([`storage::Touched::replace`]).
//!
//! A derived table is replaced the same way, by its rows for the keys of
//! the rewritten rows: a derived table's SQL must map each parent row to
//! rows of its own that carry the parent's key column (`models/README.md`).
//! Any other night, such as one whose rows change the table's column
//! types, rewrites the whole table.

use std::collections::HashSet;

use deltalake::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use deltalake::arrow::compute::{cast, filter_record_batch};
use deltalake::arrow::datatypes::{DataType, SchemaRef};
use storage::{Commit, RunContext, TableName, Touched, Warehouse};

use crate::bronze::SourceRows;
use crate::cluster::ParentDays;
use crate::error::arrow_err;
use crate::plan::{Mode, Plan};
use crate::quarantine::Orphans;
use crate::schema::{concat_plain, project};
use crate::{Error, Result};

/// A table that existed when the night was planned, and is gone.
fn vanished(table: &str) -> Error {
    Error::Storage(storage::Error::NoSuchTable { table: table.to_string() })
}

/// A table updated by key: its key column and its schema as it is.
pub(crate) struct Keyed {
    pub(crate) key: String,
    schema: SchemaRef,
}

/// The table's update by key, when it can be (see the module doc);
/// `may` is false for a table another table checks its keys against.
pub(crate) async fn keyed(plan: &Plan<'_>, may: bool) -> Result<Option<Keyed>> {
    let model = plan.model;
    if !may || plan.mode != Mode::Build || model.key.len() != 1 || model.sources.iter().any(|s| s.snapshot) {
        return Ok(None);
    }
    let Some(schema) = plan.warehouse.arrow_schema(&plan.name).await? else { return Ok(None) };
    for d in &model.derived {
        if plan.warehouse.load(&TableName::new(&d.table)?).await?.is_none() {
            return Ok(None);
        }
    }
    Ok(Some(Keyed { key: model.key[0].clone(), schema }))
}

/// The values of column `key` of `batch` at `rows` (every row if `None`),
/// as text.
fn keys_of(t: &str, batch: &RecordBatch, key: &str, rows: Option<&[usize]>) -> Result<Option<Vec<String>>> {
    let Some(c) = batch.column_by_name(key) else { return Ok(None) };
    let c = cast(c, &DataType::Utf8).map_err(arrow_err(t))?;
    let c = c.as_string::<i32>();
    let text = |i: usize| c.is_valid(i).then(|| c.value(i).to_string());
    Ok(Some(match rows {
        Some(rows) => rows.iter().filter_map(|&i| text(i)).collect(),
        None => (0..c.len()).filter_map(text).collect(),
    }))
}

impl Keyed {
    /// An empty batch of the table's schema: the types it holds.
    pub(crate) fn types(&self) -> RecordBatch {
        RecordBatch::new_empty(self.schema.clone())
    }

    /// Whether rows of `state_schema` fit the table as it is: the same
    /// columns, in order, of the same types.
    pub(crate) fn fits(&self, state_schema: &SchemaRef) -> bool {
        let (a, b) = (self.schema.fields(), state_schema.fields());
        a.len() == b.len()
            && a.iter().zip(b.iter()).all(|(a, b)| a.name() == b.name() && a.data_type().equals_datatype(b.data_type()))
    }

    /// The keys the night touches, as text: every new row's, and every
    /// orphan candidate's; `None` when a candidate's key cannot be read.
    pub(crate) fn touched_keys(
        &self,
        t: &str,
        sources: &[SourceRows],
        orphans: &Orphans,
    ) -> Result<Option<HashSet<String>>> {
        let mut keys = HashSet::new();
        for s in sources {
            let Some(k) = keys_of(t, &s.typed, &self.key, None)? else { return Ok(None) };
            keys.extend(k);
        }
        if let (Some(q), false) = (&orphans.quarantine, orphans.candidates.is_empty()) {
            // As the table types its key, so that both read the same text.
            let Some(c) = q.column_by_name(&self.key) else { return Ok(None) };
            let Ok(typed) = self.schema.field_with_name(&self.key) else { return Ok(None) };
            let c = cast(c, typed.data_type()).map_err(arrow_err(t))?;
            let q = RecordBatch::try_from_iter([(self.key.as_str(), c)]).map_err(arrow_err(t))?;
            let Some(k) = keys_of(t, &q, &self.key, Some(&orphans.candidates))? else { return Ok(None) };
            keys.extend(k);
        }
        Ok(Some(keys))
    }

    /// The rows of the files holding `keys`, brought to `state_schema`
    /// (`None` when no file does), and those files.
    pub(crate) async fn read(
        &self,
        plan: &Plan<'_>,
        keys: &HashSet<String>,
        state_schema: &SchemaRef,
    ) -> Result<(Option<RecordBatch>, Touched)> {
        let t = plan.table();
        let touched = plan.warehouse.files_with_keys(&plan.name, &self.key, keys).await?;
        let touched = touched.ok_or_else(|| vanished(t))?;
        let rows = concat_plain(t, &touched.rows().await?)?;
        let rows = rows.map(|r| project(t, &r, state_schema)).transpose()?;
        Ok((rows, touched))
    }
}

/// Replaces the rows of derived table `table` whose parent key `key` is
/// one of `keys` by `rows` (brought to the table's types), rewriting only
/// the files that hold those keys, grouped by their parents' months when
/// `parents` is given. Returns the new version.
pub(crate) async fn replace_derived(
    warehouse: &Warehouse,
    run: &RunContext,
    table: &str,
    key: &str,
    keys: &HashSet<String>,
    rows: RecordBatch,
    parents: Option<&ParentDays>,
) -> Result<i64> {
    let name = TableName::new(table)?;
    let no_key = || Error::Schema {
        table: table.to_string(),
        reason: format!("a derived table must keep its parent's key column {key}"),
    };
    if rows.column_by_name(key).is_none() {
        return Err(no_key());
    }
    let touched = warehouse.files_with_keys(&name, key, keys).await?;
    let touched = touched.ok_or_else(|| vanished(table))?;
    let schema = warehouse.arrow_schema(&name).await?.ok_or_else(|| vanished(table))?;
    let mut parts = Vec::new();
    if let Some(old) = concat_plain(table, &touched.rows().await?)? {
        let old_keys = old.column_by_name(key).ok_or_else(no_key)?;
        let old_keys = cast(old_keys, &DataType::Utf8).map_err(arrow_err(table))?;
        let old_keys = old_keys.as_string::<i32>();
        let keep: BooleanArray =
            (0..old.num_rows()).map(|i| Some(old_keys.is_null(i) || !keys.contains(old_keys.value(i)))).collect();
        parts.push(project(table, &filter_record_batch(&old, &keep).map_err(arrow_err(table))?, &schema)?);
    }
    parts.push(project(table, &rows, &schema)?);
    if let Some(p) = parents {
        parts = p.by_month(table, &parts)?;
    }
    Ok(touched.replace(warehouse, parts, &Commit::new(run, "silver derived")).await?)
}
