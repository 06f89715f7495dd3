//! The new silver rows (step 7 of a table's plan, see [`crate::plan`]):
//! untouched rows as they were, each touched key's winner with its
//! `_lineage`, and, for a table fed by full extracts, the keys missing
//! from the newest extract marked `_is_deleted`.
//!
//! The kept rows are most of the table, in long runs: they are taken with
//! a mask, which copies runs whole (or the batch is kept as it is when no
//! row is dropped), not gathered row by row. The new and changed rows are
//! a second part, and the parts are written as they are: one more copy of
//! the whole table would only join them. `_lineage` is built straight
//! from the arrays of the old lineage and of the new rows.

use std::collections::HashSet;
use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Builder, ListArray, ListBuilder, RecordBatch, StringBuilder,
    StructArray, TimestampMicrosecondArray, UInt32Array,
};
use deltalake::arrow::buffer::OffsetBuffer;
use deltalake::arrow::compute::{SortColumn, cast, filter_record_batch, lexsort_to_indices, take};
use deltalake::arrow::datatypes::{DataType, Field, Int64Type, SchemaRef, TimestampMicrosecondType};

use crate::accounts::Incoming;
use crate::bronze::SourceRows;
use crate::dedup::{Dedup, Group};
use crate::error::arrow_err;
use crate::plan::Plan;
use crate::schema::{Typed, lineage_fields};
use crate::{Error, Result};

/// The silver rows after the merge: untouched rows as they were, each
/// touched key's winner (with NULLs filled from older versions when the
/// model says `coalesce`) and the lineage of every accepted row.
pub(crate) fn build_state(
    plan: &Plan<'_>,
    schema: &SchemaRef,
    state: Option<&RecordBatch>,
    incoming: &Incoming,
    d: &Dedup,
    typed: &Typed,
) -> Result<Vec<RecordBatch>> {
    let mut parts = Vec::new();
    if let Some(kept) = kept_rows(plan.table(), schema, state, d)? {
        parts.push(kept);
    }
    let changed: Vec<&Group> = d.groups.iter().filter(|g| g.changed()).collect();
    if !changed.is_empty() {
        let changed = in_key_order(plan, &incoming.combined, changed)?;
        parts.push(changed_rows(plan, schema, state, incoming, &changed, typed.fields.len())?);
    }
    if parts.is_empty() {
        return Ok(vec![RecordBatch::new_empty(schema.clone())]);
    }
    // The parts are written as they are: one more copy of the whole table
    // would only join them.
    Ok(parts)
}

/// Untouched rows, and touched keys whose row did not change.
fn kept_rows(t: &str, schema: &SchemaRef, state: Option<&RecordBatch>, d: &Dedup) -> Result<Option<RecordBatch>> {
    let mut keep: Vec<u32> = d.untouched.iter().map(|&i| i as u32).collect();
    keep.extend(d.groups.iter().filter(|g| !g.changed()).filter_map(|g| g.state.map(|s| s as u32)));
    keep.sort_unstable();
    let Some(state) = state else { return Ok(None) };
    if keep.is_empty() {
        return Ok(None);
    }
    // A mask, not a gather: the kept rows are most of the table, in long
    // runs that the filter copies whole (or none is dropped).
    let kept = if keep.len() == state.num_rows() {
        state.clone()
    } else {
        let mut mask = vec![false; state.num_rows()];
        for &k in &keep {
            mask[k as usize] = true;
        }
        filter_record_batch(state, &BooleanArray::from(mask)).map_err(arrow_err(t))?
    };
    RecordBatch::try_new(schema.clone(), kept.columns().to_vec()).map(Some).map_err(arrow_err(t))
}

/// The changed keys in their winners' key order, so the output is the
/// same whatever order the rows came in.
fn in_key_order<'d>(plan: &Plan<'_>, combined: &RecordBatch, changed: Vec<&'d Group>) -> Result<Vec<&'d Group>> {
    let t = plan.table();
    let winners = UInt32Array::from(changed.iter().map(|g| g.accepted[0] as u32).collect::<Vec<_>>());
    let mut sort = Vec::new();
    for k in &plan.model.key {
        let c = combined
            .column_by_name(k)
            .ok_or_else(|| Error::Schema { table: t.to_string(), reason: format!("no key column {k}") })?;
        sort.push(SortColumn { values: take(c, &winners, None).map_err(arrow_err(t))?, options: None });
    }
    let order = lexsort_to_indices(&sort, None).map_err(arrow_err(t))?;
    Ok(order.values().iter().map(|&i| changed[i as usize]).collect())
}

/// The rows of the `changed` keys, in that order: the winner's values
/// (with NULLs filled from older versions when the model says
/// `coalesce`), warnings, batch, file and row, and the key's lineage.
fn changed_rows(
    plan: &Plan<'_>,
    schema: &SchemaRef,
    state: Option<&RecordBatch>,
    incoming: &Incoming,
    changed: &[&Group],
    n_typed: usize,
) -> Result<RecordBatch> {
    let (t, combined) = (plan.table(), &incoming.combined);
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for c in 0..n_typed {
        let column = combined.column(c);
        let idx: UInt32Array = changed
            .iter()
            .map(|g| {
                let pick = if plan.model.coalesce {
                    g.accepted.iter().find(|&&a| column.is_valid(a)).copied().unwrap_or(g.accepted[0])
                } else {
                    g.accepted[0]
                };
                Some(pick as u32)
            })
            .collect();
        cols.push(take(column, &idx, None).map_err(arrow_err(t))?);
    }
    cols.push(Arc::new(winner_warnings(state, incoming, changed)));
    cols.push(Arc::new(BooleanArray::from(vec![false; changed.len()])));
    // The winner's batch, file and row.
    let winners = UInt32Array::from(changed.iter().map(|g| g.accepted[0] as u32).collect::<Vec<_>>());
    for c in n_typed..n_typed + 3 {
        cols.push(take(combined.column(c), &winners, None).map_err(arrow_err(t))?);
    }
    cols.push(Arc::new(lineage(t, state, incoming, changed, n_typed)?));
    cols.push(Arc::new(TimestampMicrosecondArray::from(vec![plan.now; changed.len()]).with_timezone("UTC")));
    RecordBatch::try_new(schema.clone(), cols).map_err(arrow_err(t))
}

/// `_dq_warnings`: the winner's.
fn winner_warnings(state: Option<&RecordBatch>, incoming: &Incoming, changed: &[&Group]) -> ListArray {
    let n_state = incoming.n_state;
    let state_warnings = state.and_then(|s| s.column_by_name("_dq_warnings")).map(|c| c.as_list::<i32>().clone());
    let mut warnings = ListBuilder::new(StringBuilder::new());
    for g in changed {
        let w = g.accepted[0];
        if w < n_state {
            if let Some(sw) = &state_warnings
                && sw.is_valid(w)
            {
                for v in sw.value(w).as_string::<i32>().iter().flatten() {
                    warnings.values().append_value(v);
                }
            }
        } else {
            for v in &incoming.warnings[w - n_state] {
                warnings.values().append_value(v);
            }
        }
        warnings.append(true);
    }
    warnings.finish()
}

/// `_lineage` of each changed key: what the table held, then each newly
/// accepted row, by batch, file and row.
fn lineage(
    t: &str,
    state: Option<&RecordBatch>,
    incoming: &Incoming,
    changed: &[&Group],
    n_typed: usize,
) -> Result<ListArray> {
    let (combined, n_state) = (&incoming.combined, incoming.n_state);
    let state_lineage = state.and_then(|s| s.column_by_name("_lineage")).map(|c| c.as_list::<i32>().clone());
    let (cb, cf, cr) = (
        combined.column(n_typed).as_string::<i32>(),
        combined.column(n_typed + 1).as_string::<i32>(),
        combined.column(n_typed + 2).as_primitive::<Int64Type>(),
    );
    let mut entries = Entries::default();
    let mut offsets = vec![0i32];
    for g in changed {
        // What the table held, straight from its arrays.
        if let (Some(s), Some(sl)) = (g.state, &state_lineage)
            && sl.is_valid(s)
        {
            entries.extend_from(sl.value(s).as_struct());
        }
        // Then the newly accepted rows, by batch, file and row.
        let mut new: Vec<usize> = g.accepted.iter().copied().filter(|&a| a >= n_state).collect();
        new.sort_by(|&a, &b| (cb.value(a), cf.value(a), cr.value(a)).cmp(&(cb.value(b), cf.value(b), cr.value(b))));
        for a in new {
            entries.push(cb.value(a), cf.value(a), cr.value(a), &incoming.warnings[a - n_state]);
        }
        offsets.push(
            i32::try_from(entries.len)
                .map_err(|_| Error::Schema { table: t.to_string(), reason: "lineage too long".into() })?,
        );
    }
    let entries = entries.finish(t)?;
    ListArray::try_new(
        Arc::new(Field::new_list_field(DataType::Struct(lineage_fields()), true)),
        OffsetBuffer::new(offsets.into()),
        Arc::new(entries),
        None,
    )
    .map_err(arrow_err(t))
}

/// `_lineage` entries being built: batch, file, row and warnings.
#[derive(Default)]
struct Entries {
    batch: StringBuilder,
    file: StringBuilder,
    row: Int64Builder,
    warnings: ListBuilder<StringBuilder>,
    len: usize,
}

impl Entries {
    /// Appends one entry.
    fn push<'w>(&mut self, batch: &str, file: &str, row: i64, warnings: impl IntoIterator<Item = &'w String>) {
        self.batch.append_value(batch);
        self.file.append_value(file);
        self.row.append_value(row);
        for x in warnings {
            self.warnings.values().append_value(x);
        }
        self.warnings.append(true);
        self.len += 1;
    }

    /// Appends every entry of an old `_lineage` list.
    fn extend_from(&mut self, v: &StructArray) {
        let (b, f, r, w) = (
            v.column(0).as_string::<i32>(),
            v.column(1).as_string::<i32>(),
            v.column(2).as_primitive::<Int64Type>(),
            v.column(3).as_list::<i32>(),
        );
        for i in 0..v.len() {
            self.batch.append_value(b.value(i));
            self.file.append_value(f.value(i));
            self.row.append_value(r.value(i));
            if w.is_valid(i) {
                for x in w.value(i).as_string::<i32>().iter().flatten() {
                    self.warnings.values().append_value(x);
                }
            }
            self.warnings.append(true);
        }
        self.len += v.len();
    }

    /// The entries as one struct array.
    fn finish(mut self, t: &str) -> Result<StructArray> {
        StructArray::try_new(
            lineage_fields(),
            vec![
                Arc::new(self.batch.finish()),
                Arc::new(self.file.finish()),
                Arc::new(self.row.finish()),
                Arc::new(self.warnings.finish()),
            ],
            None,
        )
        .map_err(arrow_err(t))
    }
}

/// For a table fed by full extracts: keys missing from the newest extract
/// are marked `_is_deleted`, and keys back in it are revived. Returns the
/// rows and how many keys are newly deleted.
pub(crate) fn mark_deleted(
    plan: &Plan<'_>,
    parts: Vec<RecordBatch>,
    sources: &[SourceRows],
) -> Result<(Vec<RecordBatch>, u64)> {
    let (t, model) = (plan.table(), plan.model);
    // The newest extract: the greatest _source_file among snapshot rows.
    let mut newest: Option<(&SourceRows, String)> = None;
    for src in sources.iter().filter(|s| s.snapshot) {
        if let Some(files) = src.typed.column_by_name("_source_file")
            && let Some(max) = files.as_string::<i32>().iter().flatten().max()
            && newest.as_ref().is_none_or(|(_, m)| max > m.as_str())
        {
            newest = Some((src, max.to_string()));
        }
    }
    let Some((src, file)) = newest else { return Ok((parts, 0)) };
    let files = src.typed.column_by_name("_source_file").map(|c| c.as_string::<i32>().clone());
    let mut present = HashSet::new();
    for (row, k) in key_texts(t, &src.typed, &model.key)?.into_iter().enumerate() {
        if files.as_ref().is_some_and(|f| f.value(row) == file)
            && let Some(k) = k
        {
            present.insert(k);
        }
    }
    let mut deleted = 0;
    let mut marked = Vec::with_capacity(parts.len());
    for batch in parts {
        let keys = key_texts(t, &batch, &model.key)?;
        let schema = batch.schema();
        let del_at = schema.index_of("_is_deleted").map_err(arrow_err(t))?;
        let upd_at = schema.index_of("_updated_at").map_err(arrow_err(t))?;
        let old_del = batch.column(del_at).as_boolean().clone();
        let old_upd = batch.column(upd_at).as_primitive::<TimestampMicrosecondType>().clone();
        let mut del = Vec::with_capacity(batch.num_rows());
        let mut upd = Vec::with_capacity(batch.num_rows());
        for (row, key) in keys.iter().enumerate() {
            let was = old_del.is_valid(row) && old_del.value(row);
            let is = key.as_ref().is_none_or(|k| !present.contains(k));
            if is && !was {
                deleted += 1;
            }
            del.push(Some(is));
            upd.push(if is != was { Some(plan.now) } else { old_upd.is_valid(row).then(|| old_upd.value(row)) });
        }
        let mut cols = batch.columns().to_vec();
        cols[del_at] = Arc::new(BooleanArray::from(del));
        cols[upd_at] = Arc::new(TimestampMicrosecondArray::from(upd).with_timezone("UTC"));
        marked.push(RecordBatch::try_new(schema, cols).map_err(arrow_err(t))?);
    }
    Ok((marked, deleted))
}

/// Each row's key as one string (`None` when a key column is NULL).
fn key_texts(t: &str, batch: &RecordBatch, key: &[String]) -> Result<Vec<Option<String>>> {
    let mut columns = Vec::new();
    for k in key {
        let c = batch
            .column_by_name(k)
            .ok_or_else(|| Error::Schema { table: t.to_string(), reason: format!("no key column {k}") })?;
        columns.push(cast(c, &DataType::Utf8).map_err(arrow_err(t))?);
    }
    Ok((0..batch.num_rows())
        .map(|row| {
            let mut parts = Vec::with_capacity(columns.len());
            for c in &columns {
                let c = c.as_string::<i32>();
                if c.is_null(row) {
                    return None;
                }
                parts.push(c.value(row));
            }
            Some(parts.join("\u{1f}"))
        })
        .collect())
}
