//! The quarantine table: orphans whose parents have come (steps 2 and 4
//! of a table's plan, see [`crate::plan`]), and the new quarantine rows
//! with every rule they failed and their raw bronze row (step 8).
//!
//! A row is identified by its `(batch, file, row)`. The raw row of a
//! conflicting duplicate is found only after the bronze rows were let go:
//! it is read again, with one range of rows per file as the predicate, so
//! the predicate stays short whatever the count.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray, UInt32Array,
};
use deltalake::arrow::compute::{cast, concat_batches, take_record_batch};
use deltalake::arrow::datatypes::{DataType, Int64Type};
use storage::{TableName, Warehouse};

use crate::bronze::{SourceRows, json_lines};
use crate::error::arrow_err;
use crate::model::Action;
use crate::plan::Plan;
use crate::rules::{RuleKind, rule_action};
use crate::schema::{Typed, quarantine_schema};
use crate::{Error, Result};

/// `(batch, file, row)`: a bronze row.
pub(crate) type RowId = (String, String, i64);

/// `(batch, file, row)` of a batch's rows, read on demand.
pub(crate) struct RowIds {
    batch: Option<StringArray>,
    pub(crate) file: Option<StringArray>,
    pub(crate) row: Option<Int64Array>,
}

impl RowIds {
    /// The `_batch_id`, `_source_file` and `_source_row` of `batch`.
    pub(crate) fn of(batch: &RecordBatch) -> Self {
        let s = |n: &str| batch.column_by_name(n).and_then(|c| c.as_string_opt::<i32>().cloned());
        let row = batch.column_by_name("_source_row").and_then(|c| c.as_primitive_opt::<Int64Type>().cloned());
        Self { batch: s("_batch_id"), file: s("_source_file"), row }
    }

    /// Row `i`'s id.
    pub(crate) fn get(&self, i: usize) -> RowId {
        (
            self.batch.as_ref().map_or(String::new(), |c| c.value(i).to_string()),
            self.file.as_ref().map_or(String::new(), |c| c.value(i).to_string()),
            self.row.as_ref().map_or(0, |c| c.value(i)),
        )
    }
}

/// `(batch, file, row)` of each row.
pub(crate) fn row_ids(batch: &RecordBatch) -> Vec<RowId> {
    let ids = RowIds::of(batch);
    (0..batch.num_rows()).map(|i| ids.get(i)).collect()
}

/// Every `(batch, file, row)` in the table's `_lineage`.
fn lineage_ids(state: Option<&RecordBatch>) -> HashSet<RowId> {
    let mut out = HashSet::new();
    let Some(state) = state else { return out };
    let Some(lineage) = state.column_by_name("_lineage").and_then(|c| c.as_list_opt::<i32>().cloned()) else {
        return out;
    };
    for row in 0..lineage.len() {
        if lineage.is_valid(row) {
            let v = lineage.value(row);
            let v = v.as_struct();
            let (b, f, r) = (
                v.column(0).as_string::<i32>(),
                v.column(1).as_string::<i32>(),
                v.column(2).as_primitive::<Int64Type>(),
            );
            out.extend((0..v.len()).map(|i| (b.value(i).to_string(), f.value(i).to_string(), r.value(i))));
        }
    }
    out
}

/// The quarantine table and its orphans whose parents have come.
pub(crate) struct Orphans {
    /// The quarantine table's rows (none when only checking for aborts).
    pub(crate) quarantine: Option<RecordBatch>,
    /// Unreleased rows held only by parent rules, whose parents all exist.
    pub(crate) candidates: Vec<usize>,
    /// The candidates to release: into the de-duplication.
    pub(crate) held: Vec<usize>,
    /// The candidates silver's lineage already has: only the mark is left.
    pub(crate) already_released: Vec<usize>,
}

/// Step 2: quarantined orphans whose parents have come.
pub(crate) async fn orphans(plan: &Plan<'_>) -> Result<Orphans> {
    let quarantine_name = TableName::new(&plan.model.quarantine_table())?;
    let quarantine = plan.read_whole(&quarantine_name).await?;
    let rules = &plan.rules;
    let parent_rules: HashSet<&str> = rules
        .iter()
        .filter(|r| matches!(r.kind, RuleKind::Parent { .. }) && r.action == Action::Quarantine)
        .map(|r| r.name.as_str())
        .collect();
    let mut candidates: Vec<usize> = Vec::new();
    if let (Some(q), false) = (&quarantine, parent_rules.is_empty()) {
        let failed = q.column_by_name("_failed_rules").map(|c| c.as_list::<i32>().clone());
        let released = q.column_by_name("_released_at");
        for row in 0..q.num_rows() {
            if released.is_some_and(|c| c.is_valid(row)) {
                continue;
            }
            let Some(failed) = &failed else { break };
            let names: Vec<String> =
                failed.value(row).as_string::<i32>().iter().flatten().map(str::to_string).collect();
            let blocking: Vec<&String> =
                names.iter().filter(|n| rule_action(rules, n) == Some(Action::Quarantine)).collect();
            if blocking.is_empty() || !blocking.iter().all(|n| parent_rules.contains(n.as_str())) {
                continue;
            }
            let all_there = blocking.iter().all(|n| {
                let p = plan.model.parents.iter().position(|p| &p.name == *n).map(|i| &plan.parents[i]);
                p.is_some_and(|(column, keys)| {
                    q.column_by_name(column).and_then(|c| cast(c, &DataType::Utf8).ok()).is_some_and(|c| {
                        c.as_string::<i32>().is_valid(row) && keys.contains(c.as_string::<i32>().value(row))
                    })
                })
            });
            if all_there {
                candidates.push(row);
            }
        }
    }
    Ok(Orphans { quarantine, candidates, held: Vec::new(), already_released: Vec::new() })
}

impl Orphans {
    /// Step 4: a candidate already in silver's lineage was released by a
    /// run that stopped before marking it: only the mark is left to do.
    /// The others are held for the de-duplication.
    pub(crate) fn split(&mut self, state: Option<&RecordBatch>) {
        if let Some(q) = &self.quarantine
            && !self.candidates.is_empty()
        {
            let in_lineage = lineage_ids(state);
            let ids = RowIds::of(q);
            for &row in &self.candidates {
                if in_lineage.contains(&ids.get(row)) {
                    self.already_released.push(row);
                } else {
                    self.held.push(row);
                }
            }
        }
    }

    /// The ids of quarantine rows `rows`, released.
    pub(crate) fn released(&self, rows: &[usize]) -> HashSet<RowId> {
        match &self.quarantine {
            Some(q) if !rows.is_empty() => {
                let ids = row_ids(q);
                rows.iter().map(|&r| ids[r].clone()).collect()
            }
            _ => HashSet::new(),
        }
    }
}

/// Step 8: the quarantine rows of `quarantined` (source, row, failed
/// rules); `None` when there are none.
pub(crate) async fn new_rows(
    plan: &Plan<'_>,
    typed: &Typed,
    sources: &[SourceRows],
    quarantined: &[(usize, usize, Vec<u16>)],
) -> Result<Option<RecordBatch>> {
    if quarantined.is_empty() {
        return Ok(None);
    }
    let fetched = fetch_raw(plan.warehouse, plan.table(), sources, quarantined).await?;
    quarantine_rows(plan, typed, sources, quarantined, &fetched).map(Some)
}

/// The raw bronze rows (as JSON) of quarantined rows whose JSON was not
/// kept: the conflicting duplicates, found after the bronze rows were let
/// go. They are read again by file and row, which identify a bronze row.
async fn fetch_raw(
    warehouse: &Warehouse,
    t: &str,
    sources: &[SourceRows],
    rows: &[(usize, usize, Vec<u16>)],
) -> Result<HashMap<(usize, usize), String>> {
    let mut missing: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (s, row, _) in rows {
        if !sources[*s].raw_json.contains_key(row) {
            missing.entry(*s).or_default().push(*row);
        }
    }
    let mut out = HashMap::new();
    for (s, list) in missing {
        let src = &sources[s];
        let ids = RowIds::of(&src.typed);
        let wanted: HashMap<(String, i64), usize> = list
            .iter()
            .map(|&r| {
                let (_, file, n) = ids.get(r);
                ((file, n), r)
            })
            .collect();
        // One range of rows per file: a short predicate, whatever the count.
        let mut ranges: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        let mut by_file: HashMap<&str, HashMap<i64, usize>> = HashMap::new();
        for ((file, n), &r) in &wanted {
            let range = ranges.entry(file.as_str()).or_insert((*n, *n));
            *range = (range.0.min(*n), range.1.max(*n));
            by_file.entry(file.as_str()).or_default().insert(*n, r);
        }
        let filter = ranges
            .iter()
            .map(|(file, (lo, hi))| {
                format!("(_source_file = '{}' AND _source_row BETWEEN {lo} AND {hi})", file.replace('\'', "''"))
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        let bronze = TableName::new(&src.bronze)?;
        let read = warehouse.scan_where(&bronze, None, Some(&filter)).await?;
        for batch in read {
            for (r, line) in wanted_json(t, &batch, &by_file)? {
                out.insert((s, r), line);
            }
        }
    }
    Ok(out)
}

/// The JSON of the rows of `batch` that `by_file` (file, then row) wants,
/// with the quarantined row each is for. The ranges read hold other rows
/// too (a range may span the whole file): only the wanted ones are turned
/// into JSON.
fn wanted_json(
    t: &str,
    batch: &RecordBatch,
    by_file: &HashMap<&str, HashMap<i64, usize>>,
) -> Result<Vec<(usize, String)>> {
    let batch_ids = RowIds::of(batch);
    let (Some(files), Some(rows)) = (&batch_ids.file, &batch_ids.row) else { return Ok(Vec::new()) };
    let mut hit = Vec::new();
    let mut at = Vec::new();
    for i in 0..batch.num_rows() {
        if let Some(&r) = by_file.get(files.value(i)).and_then(|m| m.get(&rows.value(i))) {
            hit.push(i as u32);
            at.push(r);
        }
    }
    if hit.is_empty() {
        return Ok(Vec::new());
    }
    let picked = take_record_batch(batch, &UInt32Array::from(hit)).map_err(arrow_err(t))?;
    Ok(at.into_iter().zip(json_lines(t, &picked)?).collect())
}

/// Quarantine rows: the typed values, every failed rule, the batch and the
/// raw bronze row as JSON.
fn quarantine_rows(
    plan: &Plan<'_>,
    typed: &Typed,
    sources: &[SourceRows],
    rows: &[(usize, usize, Vec<u16>)],
    fetched: &HashMap<(usize, usize), String>,
) -> Result<RecordBatch> {
    let t = plan.table();
    let schema = quarantine_schema(&typed.fields);
    let mut parts = Vec::new();
    let mut raws: Vec<String> = Vec::new();
    let mut failed = ListBuilder::new(StringBuilder::new());
    let mut bronze = Vec::new();
    let mut by_source: BTreeMap<usize, Vec<(usize, &Vec<u16>)>> = BTreeMap::new();
    for (s, row, f) in rows {
        by_source.entry(*s).or_default().push((*row, f));
    }
    for (s, mut list) in by_source {
        list.sort_by_key(|(row, _)| *row);
        let src = &sources[s];
        let idx = UInt32Array::from(list.iter().map(|(r, _)| *r as u32).collect::<Vec<_>>());
        // `typed` has the typed schema (it is projected onto it).
        parts.push(take_record_batch(&src.typed, &idx).map_err(arrow_err(t))?);
        for (row, _) in &list {
            let json = src.raw_json.get(row).or_else(|| fetched.get(&(s, *row)));
            raws.push(json.cloned().ok_or_else(|| Error::Schema {
                table: t.to_string(),
                reason: format!("the bronze row of quarantined row {row} of {} was not found", src.bronze),
            })?);
        }
        for (_, f) in &list {
            for &r in f.iter() {
                failed.values().append_value(&plan.rules[r as usize].name);
            }
            failed.append(true);
            bronze.push(src.bronze.clone());
        }
    }
    let typed_rows = concat_batches(&typed.schema, &parts).map_err(arrow_err(t))?;
    let n = typed_rows.num_rows();
    let typed_n = typed.schema.fields().len() - 3;
    let mut cols: Vec<ArrayRef> = typed_rows.columns()[..typed_n].to_vec();
    cols.push(Arc::new(failed.finish()));
    cols.push(Arc::new(StringArray::from(bronze)));
    cols.extend(typed_rows.columns()[typed_n..].iter().cloned());
    cols.push(Arc::new(StringArray::from(raws)));
    cols.push(Arc::new(TimestampMicrosecondArray::from(vec![plan.now; n]).with_timezone("UTC")));
    cols.push(Arc::new(TimestampMicrosecondArray::from(vec![None; n]).with_timezone("UTC")));
    let cols = cols
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| if c.data_type() == f.data_type() { Ok(c) } else { cast(&c, f.data_type()) })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(arrow_err(t))?;
    RecordBatch::try_new(schema, cols).map_err(arrow_err(t))
}
