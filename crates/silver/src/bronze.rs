//! Reading the new bronze batches and typing them: steps 1 and 3 of a
//! table's plan (see [`crate::plan`]).
//!
//! A source's new rows are read once, after the last batch silver
//! processed (the batch sequence a silver table's txn records), and
//! registered in the plan's DataFusion session as one partition per
//! thread, each cut into batches of [`QUERY_BATCH_ROWS`]: the source's
//! `select`, the casts to the table's column types and every rule then run
//! in one query on every core, and the partitions come back in order, so
//! rows keep theirs. Only what the next steps read is kept of the result;
//! the raw bronze rows are let go once the rows a rule quarantines have
//! their raw row as JSON.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use deltalake::arrow::compute::take_record_batch;
use deltalake::arrow::datatypes::{DataType, Field, Schema, UInt32Type};
use deltalake::datafusion::common::{Column, ScalarValue};
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::logical_expr::{Expr, ExprSchemable, lit};
use deltalake::datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use storage::{TableName, Warehouse};

use crate::Result;
use crate::error::{arrow_err, sql_err};
use crate::model::{Action, SourceModel, TableModel};
use crate::plan::{Mode, Plan};
use crate::rounds::Round;
use crate::rules::RuleKind;
use crate::schema::{Typed, concat_plain, project};

/// Rows per batch in the typing and rule queries.
const QUERY_BATCH_ROWS: usize = 64 * 1024;

/// A DataFusion session for silver's queries: one partition per thread,
/// identifiers as written, and plain (not view) string types.
pub(crate) fn session() -> SessionContext {
    let mut config = SessionConfig::new().with_target_partitions(parallel::threads());
    config.options_mut().sql_parser.enable_ident_normalization = false;
    config.options_mut().execution.parquet.schema_force_view_types = false;
    SessionContext::new_with_config(config)
}

/// The application id recording, on a silver table, the last batch of
/// `bronze` it processed.
pub(crate) fn app_id(bronze: &str) -> String {
    format!("gold.silver:{bronze}")
}

/// The sequence number of batch `source-000042`.
pub(crate) fn batch_seq(batch_id: &str) -> Option<i64> {
    batch_id.rsplit_once('-').and_then(|(_, n)| n.parse().ok())
}

/// The Delta sequence of the newest batch ingested into `bronze`, from its
/// commit info (no data read).
async fn newest_batch(warehouse: &Warehouse, bronze: &TableName) -> Result<Option<i64>> {
    let infos = warehouse.commit_metadata(bronze, 1).await?;
    Ok(infos.first().and_then(|m| m.get("gold.batch_seq")).and_then(serde_json::Value::as_i64))
}

/// One source's new bronze rows and the query that types them.
pub(crate) struct Frame {
    /// The source's index in the model.
    source: usize,
    /// The bronze rows, for the raw JSON of those a rule quarantines.
    raw: RecordBatch,
    /// The source's `select` over `view`.
    frame: DataFrame,
    /// The view the bronze rows are registered as.
    view: String,
}

/// Step 1: the new bronze rows of every source, typed by its `select`;
/// with the txns that mark their batches processed.
pub(crate) async fn read_new(plan: &Plan<'_>, round: &Round) -> Result<(Vec<Frame>, Vec<(String, i64)>)> {
    let mut frames = Vec::new();
    let mut txns = Vec::new();
    for (i, source) in plan.model.sources.iter().enumerate() {
        let Some(raw) = new_rows(plan, source, round).await? else { continue };
        let seqs =
            raw.column_by_name("_batch_id").map(|c| c.as_string::<i32>().iter().flatten().filter_map(batch_seq).max());
        if let Some(Some(seq)) = seqs {
            txns.push((app_id(&source.bronze), seq));
        }
        let view = format!("__bronze_{i}");
        let frame = select(plan, source, &raw, &view).await?;
        frames.push(Frame { source: i, raw, frame, view });
    }
    Ok((frames, txns))
}

/// The rows of `source`'s bronze table after the last batch the table
/// processed, up to the round's bound; `None` when there are none.
async fn new_rows(plan: &Plan<'_>, source: &SourceModel, round: &Round) -> Result<Option<RecordBatch>> {
    let (warehouse, t) = (plan.warehouse, plan.table());
    let bronze = TableName::new(&source.bronze)?;
    if warehouse.load(&bronze).await?.is_none() {
        return Ok(None);
    }
    let Some(bound) = round.bound(t, &source.bronze) else { return Ok(None) };
    let done = warehouse.txn_version(&plan.name, &app_id(&source.bronze)).await?;
    let newest = match bound {
        Some(b) => Some(b),
        None => newest_batch(warehouse, &bronze).await?,
    };
    if let (Some(done), Some(newest)) = (done, newest)
        && done >= newest
    {
        return Ok(None);
    }
    let prefix = source.bronze.strip_prefix("bronze_").unwrap_or(&source.bronze);
    let after = done.map(|seq| format!("_batch_id > '{prefix}-{seq:06}'"));
    let upto = bound.map(|b| format!("_batch_id <= '{prefix}-{b:06}'"));
    let filter = match (after, upto) {
        (Some(a), Some(u)) => Some(format!("{a} AND {u}")),
        (a, u) => a.or(u),
    };
    let read = warehouse.scan_where(&bronze, None, filter.as_deref()).await?;
    let raw = concat_plain(t, &read)?;
    drop(read);
    Ok(raw.filter(|raw| raw.num_rows() > 0))
}

/// Registers `raw`, with each row's number as `__row`, as `view`, and
/// returns `source`'s `select` over it (every other bronze column kept).
async fn select(plan: &Plan<'_>, source: &SourceModel, raw: &RecordBatch, view: &str) -> Result<DataFrame> {
    let t = plan.table();
    let mut with_row = raw.columns().to_vec();
    with_row.push(Arc::new(UInt32Array::from_iter_values(0..raw.num_rows() as u32)));
    let mut fields: Vec<Field> = raw.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("__row", DataType::UInt32, false));
    let input = RecordBatch::try_new(Arc::new(Schema::new(fields)), with_row).map_err(arrow_err(t))?;
    // One partition per thread, so the typing and the rules run on every
    // core; partitions are collected in order, so rows keep theirs.
    let partitions: Vec<Vec<RecordBatch>> = parallel::runs(input.num_rows())
        .into_iter()
        .map(|run| {
            // Batches of bounded size, so intermediate results stay small.
            let part = input.slice(run.start, run.len());
            (0..part.num_rows())
                .step_by(QUERY_BATCH_ROWS)
                .map(|b| part.slice(b, QUERY_BATCH_ROWS.min(part.num_rows() - b)))
                .collect()
        })
        .collect();
    let mem = MemTable::try_new(input.schema(), partitions).map_err(sql_err(t, "bronze rows"))?;
    plan.ctx.register_table(view, Arc::new(mem)).map_err(sql_err(t, "bronze rows"))?;
    let mut select: Vec<String> = source.select.iter().map(|(col, expr)| format!("({expr}) AS \"{col}\"")).collect();
    for f in input.schema().fields() {
        if !source.select.contains_key(f.name()) {
            select.push(format!("\"{}\"", f.name()));
        }
    }
    let sql = format!("SELECT {} FROM \"{view}\"", select.join(", "));
    plan.ctx.sql(&sql).await.map_err(sql_err(t, format!("the select of {}", source.bronze)))
}

/// Step 3, types: one type per column across sources (the first source
/// whose `select` gives it one), else as the silver or quarantine table
/// has it, else text.
pub(crate) fn column_types(model: &TableModel, frames: &[Frame], held: [&Option<RecordBatch>; 2]) -> Vec<Field> {
    let mut typed_fields = Vec::new();
    for c in &model.columns {
        let found = frames
            .iter()
            .find_map(|f| {
                f.frame
                    .schema()
                    .field_with_unqualified_name(&c.name)
                    .ok()
                    .map(|f| f.data_type().clone())
                    .filter(|t| *t != DataType::Null)
            })
            .or_else(|| {
                held.into_iter()
                    .flatten()
                    .find_map(|b| b.schema().field_with_name(&c.name).ok().map(|f| f.data_type().clone()))
            });
        typed_fields.push(Field::new(&c.name, storage::plain_type(&found.unwrap_or(DataType::Utf8)), true));
    }
    typed_fields
}

/// One bronze source's new rows, typed and checked.
pub(crate) struct SourceRows {
    pub(crate) bronze: String,
    /// The raw bronze row as JSON, for each row a rule quarantined.
    pub(crate) raw_json: HashMap<usize, String>,
    /// The typed columns plus `_batch_id`, `_source_file`, `_source_row`.
    pub(crate) typed: RecordBatch,
    /// Failed rule indices per row.
    pub(crate) failed: Vec<Vec<u16>>,
    /// Whether the source is a full extract.
    pub(crate) snapshot: bool,
}

/// Step 3, rules: every source's rows typed, and checked row by row.
pub(crate) async fn check_rows(plan: &Plan<'_>, frames: Vec<Frame>, typed: &Typed) -> Result<Vec<SourceRows>> {
    let mut sources = Vec::new();
    for frame in frames {
        if let Some(rows) = check_source(plan, frame, typed).await? {
            sources.push(rows);
        }
    }
    Ok(sources)
}

/// One source's rows typed and checked; `None` when the query gave none.
async fn check_source(plan: &Plan<'_>, frame: Frame, typed: &Typed) -> Result<Option<SourceRows>> {
    let t = plan.table();
    let Frame { source, raw, frame, view } = frame;
    let source = &plan.model.sources[source];
    let frame = cast_columns(t, frame, &typed.fields)?;
    let (frame, rule_columns) = with_rules(plan, frame, &source.bronze)?;
    let out: Vec<RecordBatch> = frame
        .collect_partitioned()
        .await
        .map_err(sql_err(t, format!("typing and checking {}", source.bronze)))?
        .into_iter()
        .flatten()
        .collect();
    plan.ctx.deregister_table(view.as_str()).map_err(sql_err(t, "bronze rows"))?;
    // Only what the next steps read: typed values, rule results, the
    // parse error and the bronze row number.
    let mut wanted: Vec<String> = typed.schema.fields().iter().map(|f| f.name().clone()).collect();
    wanted.extend(["_error".to_string(), "__row".to_string()]);
    wanted.extend(rule_columns.iter().map(|(_, c)| c.clone()));
    let out = out
        .iter()
        .map(|b| {
            let idx: Vec<usize> = wanted.iter().filter_map(|c| b.schema().index_of(c).ok()).collect();
            b.project(&idx)
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(arrow_err(t))?;
    let Some(out) = concat_plain(t, &out)? else { return Ok(None) };
    let typed_rows = project(t, &out, &typed.schema)?;
    let failed = failed_rules(plan.model, &out, &typed_rows, &rule_columns);
    // The raw rows of what a rule quarantines, as JSON, while they are at
    // hand; then the bronze rows are let go.
    let raw_json = held_json(plan, &out, &failed, &raw)?;
    drop(raw);
    Ok(Some(SourceRows {
        bronze: source.bronze.clone(),
        raw_json,
        typed: typed_rows,
        failed,
        snapshot: source.snapshot,
    }))
}

/// `frame` with each of the table's columns cast to its type (NULL where
/// the source has none).
fn cast_columns(t: &str, mut frame: DataFrame, typed_fields: &[Field]) -> Result<DataFrame> {
    for f in typed_fields {
        let expr = if frame.schema().field_with_unqualified_name(f.name()).is_ok() {
            Expr::Column(Column::new_unqualified(f.name()))
                .cast_to(f.data_type(), frame.schema())
                .map_err(sql_err(t, format!("column {}", f.name())))?
        } else {
            lit(ScalarValue::try_from(f.data_type()).map_err(sql_err(t, format!("column {}", f.name())))?)
        };
        frame = frame.with_column(f.name(), expr).map_err(sql_err(t, format!("column {}", f.name())))?;
    }
    Ok(frame)
}

/// `frame` with a `__rule_<r>` column for each SQL and parent rule that
/// applies to `bronze` (only those that can abort the run, when checking
/// for aborts); returns the rules and their columns.
fn with_rules(plan: &Plan<'_>, mut frame: DataFrame, bronze: &str) -> Result<(DataFrame, Vec<(u16, String)>)> {
    let t = plan.table();
    let mut rule_columns = Vec::new();
    for (r, rule) in plan.rules.iter().enumerate() {
        if !rule.applies_to(bronze) || (plan.mode == Mode::CheckAborts && !rule.can_abort()) {
            continue;
        }
        let sql = match &rule.kind {
            RuleKind::Sql(sql) => format!("coalesce(({sql}), false)"),
            RuleKind::Parent { column, udf } => format!("coalesce({udf}(CAST(\"{column}\" AS VARCHAR)), false)"),
            _ => continue,
        };
        let what = format!("rule {}", rule.name);
        let expr = frame.parse_sql_expr(&sql).map_err(sql_err(t, &what))?;
        let col = format!("__rule_{r}");
        frame = frame.with_column(&col, expr).map_err(sql_err(t, &what))?;
        rule_columns.push((r as u16, col));
    }
    Ok((frame, rule_columns))
}

/// The rules each row of `out` failed: `parsed` (a bronze parse error),
/// `key_present` (a NULL key column of `typed`), then the rule columns.
fn failed_rules(
    model: &TableModel,
    out: &RecordBatch,
    typed: &RecordBatch,
    rule_columns: &[(u16, String)],
) -> Vec<Vec<u16>> {
    let mut failed: Vec<Vec<u16>> = vec![Vec::new(); out.num_rows()];
    let error = out.column_by_name("_error").map(|c| c.as_string::<i32>().clone());
    for (row, f) in failed.iter_mut().enumerate() {
        if error.as_ref().is_some_and(|e| e.is_valid(row)) {
            f.push(0);
        }
        if model.key.iter().any(|k| typed.column_by_name(k).is_none_or(|c| c.is_null(row))) {
            f.push(1);
        }
    }
    for (r, col) in rule_columns {
        let Some(values) = out.column_by_name(col).and_then(|c| c.as_boolean_opt().cloned()) else { continue };
        for (row, f) in failed.iter_mut().enumerate() {
            if !values.value(row) || values.is_null(row) {
                f.push(*r);
            }
        }
    }
    failed
}

/// The raw bronze row, as JSON, of each row of `out` a rule quarantines.
fn held_json(
    plan: &Plan<'_>,
    out: &RecordBatch,
    failed: &[Vec<u16>],
    raw: &RecordBatch,
) -> Result<HashMap<usize, String>> {
    let t = plan.table();
    let raw_row = out
        .column_by_name("__row")
        .and_then(|c| c.as_primitive_opt::<UInt32Type>().cloned())
        .map(|c| c.values().to_vec())
        .unwrap_or_default();
    let held: Vec<usize> = (0..out.num_rows())
        .filter(|&row| failed[row].iter().any(|&r| plan.action_of(r) == Action::Quarantine))
        .collect();
    let idx = UInt32Array::from(held.iter().map(|&row| raw_row[row]).collect::<Vec<_>>());
    let lines = json_lines(t, &take_record_batch(raw, &idx).map_err(arrow_err(t))?)?;
    Ok(held.into_iter().zip(lines).collect())
}

/// Each row of `batch` as one JSON object (NULLs left out), without the
/// query's own `__row` column.
pub(crate) fn json_lines(t: &str, batch: &RecordBatch) -> Result<Vec<String>> {
    let keep: Vec<usize> =
        batch.schema().fields().iter().enumerate().filter(|(_, f)| f.name() != "__row").map(|(i, _)| i).collect();
    let batch = batch.project(&keep).map_err(arrow_err(t))?;
    let mut buf = Vec::new();
    {
        let mut w = deltalake::arrow::json::LineDelimitedWriter::new(&mut buf);
        w.write(&batch).map_err(arrow_err(t))?;
        w.finish().map_err(arrow_err(t))?;
    }
    Ok(String::from_utf8_lossy(&buf).lines().map(str::to_string).collect())
}
