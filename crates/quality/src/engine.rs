//! The silver stage: plan every table (read the new bronze batches, type
//! them, check the rules, de-duplicate against the current rows), and only
//! when every table has planned without a `fail`, write them all.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::NaiveDate;
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, ListArray, ListBuilder, RecordBatch, StringArray,
    StringBuilder, StructArray, TimestampMicrosecondArray, UInt32Array, new_null_array,
};
use deltalake::arrow::buffer::OffsetBuffer;
use deltalake::arrow::compute::{cast, concat_batches, take, take_record_batch};
use deltalake::arrow::datatypes::{DataType, Date32Type, Field, Fields, Schema, SchemaRef, TimeUnit};
use deltalake::arrow::error::ArrowError;
use deltalake::datafusion::common::{Column, ScalarValue};
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::logical_expr::{Expr, ExprSchemable, lit};
use deltalake::datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use serde::Serialize;
use storage::{Commit, RunContext, TableName, Warehouse};

use crate::dedup::{Fate, dedup};
use crate::model::{Action, OnMissing, TableModel};
use crate::udf::{self, DIAGNOSIS_REF_TABLE};
use crate::{Error, Result};

/// The table of per-batch, per-rule results.
pub const DQ_RESULTS_TABLE: &str = "dq_results";

/// How one bronze batch's rows were accounted for in one silver table:
/// `accepted + duplicates + quarantined + dropped = bronze_rows`.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct BatchAccount {
    pub bronze_table: String,
    pub batch_id: String,
    pub bronze_rows: u64,
    /// In silver: the current row or an older version in its `_lineage`.
    pub accepted: u64,
    /// Exact duplicates of a row already accepted (this run or before).
    pub duplicates: u64,
    pub quarantined: u64,
    pub dropped: u64,
}

impl BatchAccount {
    /// The counts of `accounts` added up (table and batch left empty).
    pub fn sum<'a>(accounts: impl IntoIterator<Item = &'a BatchAccount>) -> Self {
        let mut t = Self::default();
        for b in accounts {
            t.bronze_rows += b.bronze_rows;
            t.accepted += b.accepted;
            t.duplicates += b.duplicates;
            t.quarantined += b.quarantined;
            t.dropped += b.dropped;
        }
        t
    }
}

/// A rule's result over the batches of one run.
#[derive(Clone, Debug, Serialize)]
pub struct RuleCount {
    pub rule: String,
    pub action: String,
    pub rows_evaluated: u64,
    pub rows_failed: u64,
}

/// What the stage did to one silver table.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TableReport {
    pub table: String,
    pub batches: Vec<BatchAccount>,
    pub rules: Vec<RuleCount>,
    /// Quarantined orphans released into silver because their parent came.
    pub released: u64,
    /// Rows in the table after the run (0 when the run did not rewrite it).
    pub rows: u64,
    /// Keys marked deleted (missing from the newest full extract).
    pub deleted: u64,
    pub version: Option<i64>,
    pub quarantine_version: Option<i64>,
    pub derived: Vec<(String, i64)>,
}

/// What the stage did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SilverReport {
    pub tables: Vec<TableReport>,
    pub dq_results_version: Option<i64>,
}

impl SilverReport {
    /// `(table, version, rows written)` for every table written.
    pub fn table_versions(&self) -> Vec<(String, i64, i64)> {
        let mut out = Vec::new();
        for t in &self.tables {
            if let Some(v) = t.version {
                out.push((t.table.clone(), v, t.rows as i64));
            }
            if let Some(v) = t.quarantine_version {
                let q: u64 = t.batches.iter().map(|b| b.quarantined).sum();
                out.push((format!("quarantine_{}", t.table), v, q as i64));
            }
            for (name, v) in &t.derived {
                out.push((name.clone(), *v, -1));
            }
        }
        if let Some(v) = self.dq_results_version {
            out.push((DQ_RESULTS_TABLE.to_string(), v, -1));
        }
        out
    }

    /// Adds a later round's report to this one: its batches and rule
    /// counts, and the versions it wrote.
    pub fn absorb(&mut self, later: SilverReport) {
        for t in later.tables {
            let Some(mine) = self.tables.iter_mut().find(|m| m.table == t.table) else {
                self.tables.push(t);
                continue;
            };
            mine.batches.extend(t.batches);
            for r in t.rules {
                match mine.rules.iter_mut().find(|m| m.rule == r.rule) {
                    Some(m) => {
                        m.rows_evaluated += r.rows_evaluated;
                        m.rows_failed += r.rows_failed;
                    }
                    None => mine.rules.push(r),
                }
            }
            mine.released += t.released;
            mine.deleted += t.deleted;
            if t.version.is_some() {
                mine.version = t.version;
                mine.rows = t.rows;
            }
            mine.quarantine_version = t.quarantine_version.or(mine.quarantine_version);
            for (name, v) in t.derived {
                match mine.derived.iter_mut().find(|(n, _)| *n == name) {
                    Some(d) => d.1 = v,
                    None => mine.derived.push((name, v)),
                }
            }
        }
        self.dq_results_version = later.dq_results_version.or(self.dq_results_version);
    }

    /// Rows that reached silver, were quarantined, counted as duplicates
    /// or dropped, over every table and batch.
    pub fn totals(&self) -> BatchAccount {
        BatchAccount::sum(self.tables.iter().flat_map(|t| &t.batches))
    }
}

/// The rule kinds a table checks, in `_failed_rules` order.
#[derive(Clone, Debug)]
enum RuleKind {
    /// The bronze row parsed (`_error IS NULL`).
    Parsed,
    /// Every key column is set.
    KeyPresent,
    /// Found by de-duplication.
    Conflict,
    /// A declared expectation's SQL.
    Sql(String),
    /// A parent's key must exist.
    Parent { column: String, udf: String },
}

#[derive(Clone, Debug)]
struct Rule {
    name: String,
    action: Action,
    fail_above: Option<f64>,
    sources: Option<Vec<String>>,
    kind: RuleKind,
}

impl Rule {
    /// A rule that aborts the run when it fails (`fail`) or fails too often.
    fn can_abort(&self) -> bool {
        matches!(self.kind, RuleKind::Sql(_)) && (self.action == Action::Fail || self.fail_above.is_some())
    }

    fn applies_to(&self, bronze: &str) -> bool {
        self.sources.as_ref().is_none_or(|s| s.iter().any(|b| b == bronze))
    }
}

fn rules_of(model: &TableModel) -> Vec<Rule> {
    let builtin = |name: &str, kind| Rule {
        name: name.to_string(),
        action: Action::Quarantine,
        fail_above: None,
        sources: None,
        kind,
    };
    let mut rules = vec![
        builtin("parsed", RuleKind::Parsed),
        builtin("key_present", RuleKind::KeyPresent),
        builtin("conflicting_duplicate", RuleKind::Conflict),
    ];
    for e in &model.expectations {
        rules.push(Rule {
            name: e.name.clone(),
            action: e.action,
            fail_above: e.fail_above,
            sources: e.sources.clone(),
            kind: RuleKind::Sql(e.rule.clone()),
        });
    }
    for (i, p) in model.parents.iter().enumerate() {
        rules.push(Rule {
            name: p.name.clone(),
            action: match p.on_missing {
                OnMissing::Quarantine => Action::Quarantine,
                OnMissing::Flag => Action::Warn,
            },
            fail_above: None,
            sources: p.sources.clone(),
            kind: RuleKind::Parent { column: p.column.clone(), udf: format!("__parent_{i}") },
        });
    }
    rules
}

const CONFLICT: u16 = 2;

/// Rows per batch in the typing and rule queries.
const QUERY_BATCH_ROWS: usize = 64 * 1024;

fn sql_err(table: &str, what: impl Into<String>) -> impl FnOnce(DataFusionError) -> Error {
    let (table, what) = (table.to_string(), what.into());
    move |source| Error::Sql { table, what, source: Box::new(source) }
}

fn arrow_err(table: &str) -> impl FnOnce(ArrowError) -> Error + '_ {
    move |source| Error::Arrow { table: table.to_string(), source: Box::new(source) }
}

/// The application id recording, on a silver table, the last batch of
/// `bronze` it processed.
fn app_id(bronze: &str) -> String {
    format!("gold.silver:{bronze}")
}

/// The sequence number of batch `source-000042`.
fn batch_seq(batch_id: &str) -> Option<i64> {
    batch_id.rsplit_once('-').and_then(|(_, n)| n.parse().ok())
}

/// Threads for the typing and rule queries.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

fn session() -> SessionContext {
    let mut config = SessionConfig::new().with_target_partitions(cores());
    config.options_mut().sql_parser.enable_ident_normalization = false;
    config.options_mut().execution.parquet.schema_force_view_types = false;
    SessionContext::new_with_config(config)
}

fn plain_batch(table: &str, batch: &RecordBatch) -> Result<RecordBatch> {
    storage::plain_batch(batch).map_err(arrow_err(table))
}

fn concat_plain(table: &str, batches: &[RecordBatch]) -> Result<Option<RecordBatch>> {
    let plain: Vec<RecordBatch> = batches.iter().map(|b| plain_batch(table, b)).collect::<Result<_>>()?;
    let Some(first) = plain.first() else { return Ok(None) };
    concat_batches(&first.schema(), &plain).map(Some).map_err(arrow_err(table))
}

fn lineage_fields() -> Fields {
    Fields::from(vec![
        Field::new("batch_id", DataType::Utf8, true),
        Field::new("source_file", DataType::Utf8, true),
        Field::new("source_row", DataType::Int64, true),
        Field::new("warnings", list_of(DataType::Utf8), true),
    ])
}

fn list_of(t: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(t, true)))
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The silver table's schema: the model's columns, then the metadata.
fn state_schema(typed: &[Field]) -> SchemaRef {
    let mut fields = typed.to_vec();
    fields.extend([
        Field::new("_dq_warnings", list_of(DataType::Utf8), true),
        Field::new("_is_deleted", DataType::Boolean, true),
        Field::new("_batch_id", DataType::Utf8, true),
        Field::new("_source_file", DataType::Utf8, true),
        Field::new("_source_row", DataType::Int64, true),
        Field::new("_lineage", list_of(DataType::Struct(lineage_fields())), true),
        Field::new("_updated_at", timestamp_type(), true),
    ]);
    Arc::new(Schema::new(fields))
}

/// The quarantine table's schema.
fn quarantine_schema(typed: &[Field]) -> SchemaRef {
    let mut fields = typed.to_vec();
    fields.extend([
        Field::new("_failed_rules", list_of(DataType::Utf8), true),
        Field::new("_bronze_table", DataType::Utf8, true),
        Field::new("_batch_id", DataType::Utf8, true),
        Field::new("_source_file", DataType::Utf8, true),
        Field::new("_source_row", DataType::Int64, true),
        Field::new("_raw", DataType::Utf8, true),
        Field::new("_quarantined_at", timestamp_type(), true),
        Field::new("_released_at", timestamp_type(), true),
    ]);
    Arc::new(Schema::new(fields))
}

fn dq_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Int64, true),
        Field::new("logical_date", DataType::Date32, true),
        Field::new("table", DataType::Utf8, true),
        Field::new("bronze_table", DataType::Utf8, true),
        Field::new("batch_id", DataType::Utf8, true),
        Field::new("rule", DataType::Utf8, true),
        Field::new("action", DataType::Utf8, true),
        Field::new("rows_evaluated", DataType::Int64, true),
        Field::new("rows_failed", DataType::Int64, true),
        Field::new("fail_above", DataType::Float64, true),
        Field::new("recorded_at", timestamp_type(), true),
    ]))
}

/// A column of `batch` brought to `t`, or all NULL when absent.
fn column_as(table: &str, batch: &RecordBatch, name: &str, t: &DataType) -> Result<ArrayRef> {
    match batch.column_by_name(name) {
        Some(c) if c.data_type() == t => Ok(c.clone()),
        Some(c) => cast(c, t).map_err(|e| Error::Schema {
            table: table.to_string(),
            reason: format!("column {name}: cannot read {} as {t}: {e}", c.data_type()),
        }),
        None => Ok(new_null_array(t, batch.num_rows())),
    }
}

fn project(table: &str, batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns =
        schema.fields().iter().map(|f| column_as(table, batch, f.name(), f.data_type())).collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(arrow_err(table))
}

/// One bronze source's new rows, typed and checked.
struct SourceRows {
    bronze: String,
    /// The raw bronze row as JSON, for each row a rule quarantined.
    raw_json: HashMap<usize, String>,
    /// The typed columns plus `_batch_id`, `_source_file`, `_source_row`.
    typed: RecordBatch,
    /// Failed rule indices per row.
    failed: Vec<Vec<u16>>,
    snapshot: bool,
}

/// Everything to write for one table, computed before any write.
struct Planned {
    model: TableModel,
    report: TableReport,
    /// The new table, in parts (kept rows, then new and changed ones).
    state: Option<Vec<RecordBatch>>,
    quarantine_new: Option<RecordBatch>,
    /// Quarantine rows, by `(batch, file, row)`, now in silver.
    released: HashSet<(String, String, i64)>,
    dq: Vec<RecordBatch>,
    txns: Vec<(String, i64)>,
    derived: Vec<(String, RecordBatch)>,
    state_changed: bool,
}

/// Runs the silver stage: every table of `catalog`, parents first, over
/// every bronze batch not yet processed. Nothing is written unless every
/// table planned without a failed `fail` rule.
pub async fn build_silver(
    warehouse: &Warehouse,
    run: &RunContext,
    catalog: &crate::SilverCatalog,
) -> Result<SilverReport> {
    build_silver_round(warehouse, run, catalog, &Round::everything()).await
}

/// One landing day of a catch-up: the bronze batches read from that day's
/// folder (or, for a SQL source, ingested on that day), which silver
/// processes before the next day's, as the nightly runs would have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Round {
    /// The landing day; `None` for every pending batch at once.
    pub day: Option<NaiveDate>,
    /// The last batch to process, by (silver table, bronze table), when
    /// bounded; a pair missing from it has nothing in this round.
    upto: Option<HashMap<(String, String), i64>>,
}

impl Round {
    /// Every pending batch, in one pass.
    pub fn everything() -> Self {
        Self { day: None, upto: None }
    }

    /// How far to read `bronze` for `table`: `None` when this round has
    /// nothing of it, `Some(None)` for every pending batch, `Some(Some(b))`
    /// up to batch `b`.
    fn bound(&self, table: &str, bronze: &str) -> Option<Option<i64>> {
        match &self.upto {
            None => Some(None),
            Some(upto) => upto.get(&(table.to_string(), bronze.to_string())).map(|b| Some(*b)),
        }
    }
}

/// The rounds that process what bronze holds beyond what silver has
/// processed, oldest landing day first: one per landing day of the pending
/// batches. A batch's day is its files' day folder (the newest, for a
/// batch ingested before batches were cut per day), or its `_ingest_date`
/// for a SQL source. A source's batches are still processed in their
/// order: a round takes every batch up to its day's last one. The last
/// round is unbounded, so it also takes any batch that came after the
/// rounds were planned. Zero or one round means one pass over everything.
pub async fn silver_rounds(warehouse: &Warehouse, catalog: &crate::SilverCatalog) -> Result<Vec<Round>> {
    let mut pending: Vec<((String, String), i64, NaiveDate)> = Vec::new();
    for model in catalog.tables() {
        let t = model.table.as_str();
        let name = TableName::new(t)?;
        for source in &model.sources {
            let bronze = TableName::new(&source.bronze)?;
            let ctx = storage::Warehouse::session();
            if warehouse.register(&ctx, &bronze, None).await?.is_none() {
                continue;
            }
            let done = warehouse.txn_version(&name, &app_id(&source.bronze)).await?;
            let prefix = source.bronze.strip_prefix("bronze_").unwrap_or(&source.bronze);
            let filter = done.map_or_else(String::new, |seq| format!("WHERE _batch_id > '{prefix}-{seq:06}'"));
            let sql = format!(
                "SELECT _batch_id, MAX(CAST(_source_file AS VARCHAR)) AS f, MAX(_ingest_date) AS d \
                 FROM \"{bronze}\" {filter} GROUP BY _batch_id"
            );
            let what = format!("the pending batches of {bronze}");
            let frame = ctx.sql(&sql).await.map_err(sql_err(t, what.clone()))?;
            for b in frame.collect().await.map_err(sql_err(t, what))? {
                let as_type = |i: usize, to: &DataType| cast(b.column(i), to).map_err(arrow_err(t));
                let (ids, files, dates) =
                    (as_type(0, &DataType::Utf8)?, as_type(1, &DataType::Utf8)?, as_type(2, &DataType::Date32)?);
                let (ids, files) = (ids.as_string::<i32>(), files.as_string::<i32>());
                let dates = dates.as_primitive::<Date32Type>();
                for i in 0..b.num_rows() {
                    let Some(seq) = ids.is_valid(i).then(|| batch_seq(ids.value(i))).flatten() else { continue };
                    let folder = files
                        .is_valid(i)
                        .then(|| files.value(i).get(..10).and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()))
                        .flatten();
                    let Some(day) = folder.or_else(|| dates.is_valid(i).then(|| dates.value_as_date(i)).flatten())
                    else {
                        continue;
                    };
                    pending.push(((t.to_string(), source.bronze.clone()), seq, day));
                }
            }
        }
    }
    let days: std::collections::BTreeSet<NaiveDate> = pending.iter().map(|(_, _, d)| *d).collect();
    let last = days.last().copied();
    Ok(days
        .iter()
        .map(|&day| {
            let upto = (Some(day) != last).then(|| {
                let mut upto: HashMap<(String, String), i64> = HashMap::new();
                for (pair, seq, _) in pending.iter().filter(|(_, _, d)| *d <= day) {
                    let bound = upto.entry(pair.clone()).or_insert(*seq);
                    *bound = (*bound).max(*seq);
                }
                upto
            });
            Round { day: Some(day), upto }
        })
        .collect())
}

/// Runs the silver stage over the batches of `round` only (see
/// [`silver_rounds`]). Nothing is written unless every table planned
/// without a failed `fail` rule.
pub async fn build_silver_round(
    warehouse: &Warehouse,
    run: &RunContext,
    catalog: &crate::SilverCatalog,
    round: &Round,
) -> Result<SilverReport> {
    // First every rule that can abort the run (`fail`, or a threshold), over
    // every table's new rows, so that an abort commits nothing anywhere.
    let mut keys = KeySets::default();
    for model in catalog.tables() {
        if rules_of(model).iter().any(Rule::can_abort) {
            plan_table(warehouse, run, model, &keys, Mode::CheckAborts, round).await?;
        }
    }
    // Then table by table, parents first: plan, write, and keep only the
    // keys later tables check against, so memory holds at most the table
    // being written and the one being planned. A table is written on a task
    // of its own while the next one is planned (planning runs mostly on one
    // core, writing on the other); the next write starts only when it is
    // done, so two writes never meet in `dq_results`. No plan reads a table
    // an earlier one writes: parent keys come from the plans.
    let wanted: HashSet<(String, String)> = catalog
        .tables()
        .iter()
        .flat_map(|m| m.parents.iter().map(|p| (p.table.clone(), p.key.clone())))
        .chain([(DIAGNOSIS_REF_TABLE.to_string(), "code".to_string())])
        .collect();
    let mut report = SilverReport::default();
    let mut writing: Option<Writing> = None;
    for model in catalog.tables() {
        let started = std::time::Instant::now();
        let planned = plan_table(warehouse, run, model, &keys, Mode::Build, round).await;
        if let Ok(Some(_)) = &planned {
            tracing::debug!(table = %model.table, seconds = started.elapsed().as_secs_f64(), "planned");
        }
        // The write in flight ends, well or not, before anything else.
        let written = match writing.take() {
            Some(w) => Some(w.finish(&mut report).await),
            None => None,
        };
        let planned = planned?;
        written.transpose()?;
        let Some(mut plan) = planned else { continue };
        if let Some(state) = &plan.state {
            for (table, key) in wanted.iter().filter(|(t, _)| *t == model.table) {
                keys.0.insert((table.clone(), key.clone()), Arc::new(key_set(table, state, key)?));
            }
        }
        let (w, r) = (warehouse.clone(), run.clone());
        writing = Some(Writing {
            table: model.table.clone(),
            task: tokio::spawn(async move {
                let started = std::time::Instant::now();
                let version = write_table(&w, &r, &mut plan).await;
                tracing::debug!(table = %plan.model.table, seconds = started.elapsed().as_secs_f64(), "written");
                version.map(|v| (plan.report, v))
            }),
        });
    }
    if let Some(w) = writing.take() {
        w.finish(&mut report).await?;
    }
    Ok(report)
}

/// A table's write, running on its own task.
struct Writing {
    table: String,
    task: tokio::task::JoinHandle<Result<(TableReport, Option<i64>)>>,
}

impl Writing {
    /// Waits for the write and adds its table to `report`.
    async fn finish(self, report: &mut SilverReport) -> Result<()> {
        let (table, dq_version) =
            self.task.await.map_err(|e| Error::Write { table: self.table.clone(), reason: e.to_string() })??;
        if let Some(v) = dq_version {
            report.dq_results_version = Some(v);
        }
        report.tables.push(table);
        Ok(())
    }
}

/// Keys of parent tables rebuilt by this run, by `(table, key column)`.
#[derive(Default)]
struct KeySets(HashMap<(String, String), Arc<HashSet<String>>>);

/// Whether `plan_table` builds the table or only checks the rules that can
/// abort the run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    CheckAborts,
    Build,
}

fn key_set(table: &str, batches: &[RecordBatch], key: &str) -> Result<HashSet<String>> {
    let mut keys = HashSet::new();
    for b in batches {
        let Some(c) = b.column_by_name(key) else {
            return Err(Error::Schema {
                table: table.to_string(),
                reason: format!("has no column {key} for a parent check"),
            });
        };
        let c = cast(c, &DataType::Utf8).map_err(arrow_err(table))?;
        keys.extend(c.as_string::<i32>().iter().flatten().map(str::to_string));
    }
    Ok(keys)
}

/// The keys of `key` in silver table `table`: as this run rebuilt it, or
/// as the warehouse holds it (that one column read).
async fn parent_keys(warehouse: &Warehouse, keys: &KeySets, table: &str, key: &str) -> Result<Arc<HashSet<String>>> {
    if let Some(set) = keys.0.get(&(table.to_string(), key.to_string())) {
        return Ok(set.clone());
    }
    let name = TableName::new(table)?;
    if warehouse.load(&name).await?.is_none() {
        return Ok(Arc::new(HashSet::new()));
    }
    let batches = warehouse.scan_columns(&name, None, &[key]).await?;
    Ok(Arc::new(key_set(table, &batches, key)?))
}

/// The Delta sequence of the newest batch ingested into `bronze`, from its
/// commit info (no data read).
async fn newest_batch(warehouse: &Warehouse, bronze: &TableName) -> Result<Option<i64>> {
    let infos = warehouse.commit_metadata(bronze, 1).await?;
    Ok(infos.first().and_then(|m| m.get("gold.batch_seq")).and_then(serde_json::Value::as_i64))
}

async fn plan_table(
    warehouse: &Warehouse,
    run: &RunContext,
    model: &TableModel,
    keys: &KeySets,
    mode: Mode,
    round: &Round,
) -> Result<Option<Planned>> {
    let t = model.table.as_str();
    let name = TableName::new(t)?;
    let rules = rules_of(model);
    let ctx = session();
    let diagnosis_ref = if model.expectations.iter().any(|e| e.rule.contains("all_in_diagnosis_ref")) {
        parent_keys(warehouse, keys, DIAGNOSIS_REF_TABLE, "code").await?
    } else {
        Arc::new(HashSet::new())
    };
    udf::register(&ctx, run.clock.logical_date(), diagnosis_ref);
    let mut parent_sets = Vec::new();
    for p in &model.parents {
        let set =
            if mode == Mode::Build { parent_keys(warehouse, keys, &p.table, &p.key).await? } else { Arc::default() };
        ctx.register_udf(udf::exists_in(&format!("__parent_{}", parent_sets.len()), set.clone()));
        parent_sets.push((p.column.clone(), set));
    }

    // 1. The new bronze rows of every source, typed.
    let mut frames: Vec<(usize, RecordBatch, DataFrame, String)> = Vec::new();
    let mut txns = Vec::new();
    for (i, source) in model.sources.iter().enumerate() {
        let bronze = TableName::new(&source.bronze)?;
        if warehouse.load(&bronze).await?.is_none() {
            continue;
        }
        let Some(bound) = round.bound(t, &source.bronze) else { continue };
        let done = warehouse.txn_version(&name, &app_id(&source.bronze)).await?;
        let newest = match bound {
            Some(b) => Some(b),
            None => newest_batch(warehouse, &bronze).await?,
        };
        if let (Some(done), Some(newest)) = (done, newest)
            && done >= newest
        {
            continue;
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
        let Some(raw) = raw else { continue };
        if raw.num_rows() == 0 {
            continue;
        }
        let seqs =
            raw.column_by_name("_batch_id").map(|c| c.as_string::<i32>().iter().flatten().filter_map(batch_seq).max());
        if let Some(Some(seq)) = seqs {
            txns.push((app_id(&source.bronze), seq));
        }
        let mut with_row = raw.columns().to_vec();
        with_row.push(Arc::new(UInt32Array::from_iter_values(0..raw.num_rows() as u32)));
        let mut fields: Vec<Field> = raw.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("__row", DataType::UInt32, false));
        let input = RecordBatch::try_new(Arc::new(Schema::new(fields)), with_row).map_err(arrow_err(t))?;
        let view = format!("__bronze_{i}");
        // One partition per core, so the typing and the rules run on every
        // core; partitions are collected in order, so rows keep theirs.
        let n = input.num_rows();
        let chunk = n.div_ceil(cores()).max(1);
        let partitions: Vec<Vec<RecordBatch>> = (0..n)
            .step_by(chunk)
            .map(|o| {
                // Batches of bounded size, so intermediate results stay small.
                let part = input.slice(o, chunk.min(n - o));
                (0..part.num_rows())
                    .step_by(QUERY_BATCH_ROWS)
                    .map(|b| part.slice(b, QUERY_BATCH_ROWS.min(part.num_rows() - b)))
                    .collect()
            })
            .collect();
        let mem = MemTable::try_new(input.schema(), partitions).map_err(sql_err(t, "bronze rows"))?;
        ctx.register_table(view.as_str(), Arc::new(mem)).map_err(sql_err(t, "bronze rows"))?;
        let mut select: Vec<String> =
            source.select.iter().map(|(col, expr)| format!("({expr}) AS \"{col}\"")).collect();
        for f in input.schema().fields() {
            if !source.select.contains_key(f.name()) {
                select.push(format!("\"{}\"", f.name()));
            }
        }
        let sql = format!("SELECT {} FROM \"{view}\"", select.join(", "));
        let frame = ctx.sql(&sql).await.map_err(sql_err(t, format!("the select of {}", source.bronze)))?;
        frames.push((i, raw, frame, view));
    }

    // 2. Quarantined orphans whose parents have come.
    let quarantine_name = TableName::new(&model.quarantine_table())?;
    let quarantine = match (mode, warehouse.load(&quarantine_name).await?) {
        (Mode::Build, Some(_)) => concat_plain(t, &warehouse.scan(&quarantine_name, None).await?)?,
        _ => None,
    };
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
                names.iter().filter(|n| rule_action(&rules, n) == Some(Action::Quarantine)).collect();
            if blocking.is_empty() || !blocking.iter().all(|n| parent_rules.contains(n.as_str())) {
                continue;
            }
            let all_there = blocking.iter().all(|n| {
                let p = model.parents.iter().position(|p| &p.name == *n).map(|i| &parent_sets[i]);
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
    if frames.is_empty() && candidates.is_empty() {
        return Ok(None);
    }

    // 3. One type per column across sources, else as the table has it.
    let state = match (mode, warehouse.load(&name).await?) {
        (Mode::Build, Some(_)) => concat_plain(t, &warehouse.scan(&name, None).await?)?,
        _ => None,
    };
    let mut typed_fields = Vec::new();
    for c in &model.columns {
        let found = frames
            .iter()
            .find_map(|(_, _, f, _)| {
                f.schema()
                    .field_with_unqualified_name(&c.name)
                    .ok()
                    .map(|f| f.data_type().clone())
                    .filter(|t| *t != DataType::Null)
            })
            .or_else(|| {
                [&state, &quarantine]
                    .into_iter()
                    .flatten()
                    .find_map(|b| b.schema().field_with_name(&c.name).ok().map(|f| f.data_type().clone()))
            });
        typed_fields.push(Field::new(&c.name, storage::plain_type(&found.unwrap_or(DataType::Utf8)), true));
    }
    let typed_schema = {
        let mut f = typed_fields.clone();
        f.push(Field::new("_batch_id", DataType::Utf8, true));
        f.push(Field::new("_source_file", DataType::Utf8, true));
        f.push(Field::new("_source_row", DataType::Int64, true));
        Arc::new(Schema::new(f))
    };

    // 3. Rules, row by row.
    let mut sources: Vec<SourceRows> = Vec::new();
    let action_of = |r: u16| rules[r as usize].action;
    for (i, raw, frame, view) in frames {
        let source = &model.sources[i];
        let mut frame = frame;
        for f in &typed_fields {
            let expr = if frame.schema().field_with_unqualified_name(f.name()).is_ok() {
                Expr::Column(Column::new_unqualified(f.name()))
                    .cast_to(f.data_type(), frame.schema())
                    .map_err(sql_err(t, format!("column {}", f.name())))?
            } else {
                lit(ScalarValue::try_from(f.data_type()).map_err(sql_err(t, format!("column {}", f.name())))?)
            };
            frame = frame.with_column(f.name(), expr).map_err(sql_err(t, format!("column {}", f.name())))?;
        }
        let mut rule_columns = Vec::new();
        for (r, rule) in rules.iter().enumerate() {
            if !rule.applies_to(&source.bronze) || (mode == Mode::CheckAborts && !rule.can_abort()) {
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
        let out: Vec<RecordBatch> = frame
            .collect_partitioned()
            .await
            .map_err(sql_err(t, format!("typing and checking {}", source.bronze)))?
            .into_iter()
            .flatten()
            .collect();
        ctx.deregister_table(view.as_str()).map_err(sql_err(t, "bronze rows"))?;
        // Only what the next steps read: typed values, rule results, the
        // parse error and the bronze row number.
        let mut wanted: Vec<String> = typed_schema.fields().iter().map(|f| f.name().clone()).collect();
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
        let Some(out) = concat_plain(t, &out)? else { continue };
        let typed = project(t, &out, &typed_schema)?;
        let n = out.num_rows();
        let mut failed: Vec<Vec<u16>> = vec![Vec::new(); n];
        let error = out.column_by_name("_error").map(|c| c.as_string::<i32>().clone());
        for (row, f) in failed.iter_mut().enumerate() {
            if error.as_ref().is_some_and(|e| e.is_valid(row)) {
                f.push(0);
            }
            if model.key.iter().any(|k| typed.column_by_name(k).is_none_or(|c| c.is_null(row))) {
                f.push(1);
            }
        }
        for (r, col) in &rule_columns {
            let Some(values) = out.column_by_name(col).and_then(|c| c.as_boolean_opt().cloned()) else { continue };
            for (row, f) in failed.iter_mut().enumerate() {
                if !values.value(row) || values.is_null(row) {
                    f.push(*r);
                }
            }
        }
        // The raw rows of what a rule quarantines, as JSON, while they are
        // at hand; then the bronze rows are let go.
        let raw_row = out
            .column_by_name("__row")
            .and_then(|c| c.as_primitive_opt::<deltalake::arrow::datatypes::UInt32Type>().cloned())
            .map(|c| c.values().to_vec())
            .unwrap_or_default();
        let held: Vec<usize> =
            (0..n).filter(|&row| failed[row].iter().any(|&r| action_of(r) == Action::Quarantine)).collect();
        let idx = UInt32Array::from(held.iter().map(|&row| raw_row[row]).collect::<Vec<_>>());
        let lines = json_lines(t, &take_record_batch(&raw, &idx).map_err(arrow_err(t))?)?;
        let raw_json = held.into_iter().zip(lines).collect();
        drop(raw);
        sources.push(SourceRows { bronze: source.bronze.clone(), raw_json, typed, failed, snapshot: source.snapshot });
    }

    // 4. A candidate already in silver's lineage was released by a run
    // that stopped before marking it: only the mark is left to do.
    let state_schema = state_schema(&typed_fields);
    let state = state.map(|s| project(t, &s, &state_schema)).transpose()?;
    let mut held: Vec<usize> = Vec::new();
    let mut already_released: Vec<usize> = Vec::new();
    if let Some(q) = &quarantine
        && !candidates.is_empty()
    {
        let in_lineage = lineage_ids(state.as_ref());
        let ids = RowIds::of(q);
        for row in candidates {
            if in_lineage.contains(&ids.get(row)) {
                already_released.push(row);
            } else {
                held.push(row);
            }
        }
    }

    let mut report = TableReport { table: t.to_string(), ..TableReport::default() };

    // 5. Dispositions: quarantine beats drop beats keep. Rows are counted
    // by their (bronze table, batch): each batch gets a dense index once, so
    // the per-row counting allocates nothing.
    let mut accounts: Vec<BatchAccount> = Vec::new();
    // Per batch index and rule: rows evaluated, rows failed.
    let mut rule_stats: Vec<Vec<(u64, u64)>> = Vec::new();
    // Per source and row: its batch index, and whether it is kept.
    let mut batch_of: Vec<Vec<usize>> = Vec::new();
    let mut kept: Vec<Vec<bool>> = Vec::new();
    let mut quarantined: Vec<(usize, usize, Vec<u16>)> = Vec::new();
    let mut every_batch: HashMap<(String, String), usize> = HashMap::new();
    for (s, src) in sources.iter().enumerate() {
        let batch_ids = src.typed.column_by_name("_batch_id").map(|c| c.as_string::<i32>().clone());
        let active: Vec<usize> = (0..rules.len())
            .filter(|&r| {
                r != CONFLICT as usize
                    && rules[r].applies_to(&src.bronze)
                    && (mode != Mode::CheckAborts || rules[r].can_abort())
            })
            .collect();
        let mut index: HashMap<String, usize> = HashMap::new();
        let (mut batches, mut keep) = (Vec::with_capacity(src.failed.len()), vec![false; src.failed.len()]);
        for (row, failed) in src.failed.iter().enumerate() {
            let batch = batch_ids.as_ref().map_or("", |b| b.value(row));
            let b = match index.get(batch) {
                Some(&b) => b,
                None => {
                    // Two sources may read one bronze table: their batches are one.
                    let b = *every_batch.entry((src.bronze.clone(), batch.to_string())).or_insert_with(|| {
                        accounts.push(BatchAccount {
                            bronze_table: src.bronze.clone(),
                            batch_id: batch.to_string(),
                            ..BatchAccount::default()
                        });
                        rule_stats.push(vec![(0, 0); rules.len()]);
                        accounts.len() - 1
                    });
                    index.insert(batch.to_string(), b);
                    b
                }
            };
            batches.push(b);
            let acct = &mut accounts[b];
            acct.bronze_rows += 1;
            for &r in &active {
                let e = &mut rule_stats[b][r];
                e.0 += 1;
                if failed.contains(&(r as u16)) {
                    e.1 += 1;
                }
            }
            if failed.iter().any(|&r| action_of(r) == Action::Quarantine) {
                acct.quarantined += 1;
                quarantined.push((s, row, failed.clone()));
            } else if failed.iter().any(|&r| action_of(r) == Action::Drop) {
                acct.dropped += 1;
            } else {
                keep[row] = true;
            }
        }
        batch_of.push(batches);
        kept.push(keep);
    }
    // The batches in (bronze table, batch) order, as every report lists them.
    let mut by_batch: Vec<usize> = (0..accounts.len()).collect();
    by_batch.sort_by(|&a, &b| {
        (&accounts[a].bronze_table, &accounts[a].batch_id).cmp(&(&accounts[b].bronze_table, &accounts[b].batch_id))
    });
    for &b in &by_batch {
        for (r, &(evaluated, failed)) in rule_stats[b].iter().enumerate() {
            let rule = &rules[r];
            let over = match (rule.action, rule.fail_above) {
                (_, Some(limit)) => evaluated > 0 && (failed as f64) / (evaluated as f64) > limit,
                (Action::Fail, None) => failed > 0,
                _ => false,
            };
            if over {
                return Err(Error::ExpectationFailed {
                    table: t.to_string(),
                    rule: rule.name.clone(),
                    batch_id: accounts[b].batch_id.clone(),
                    failed,
                    evaluated,
                    threshold: rule.fail_above,
                });
            }
        }
    }
    if mode == Mode::CheckAborts {
        return Ok(None);
    }

    // 6. De-duplicate the kept rows (and the released ones) against the
    // current rows.
    let now = run.clock.now().timestamp_micros();
    let warn_names = |failed: &[u16]| -> Vec<String> {
        failed.iter().filter(|&&r| action_of(r) == Action::Warn).map(|&r| rules[r as usize].name.clone()).collect()
    };
    // Every new row goes into `combined` once, after the current rows; the
    // dedup looks only at the kept ones. The sources then read their rows
    // back as slices of it, so the typed values are held once.
    let n_state = state.as_ref().map_or(0, RecordBatch::num_rows);
    let mut parts: Vec<RecordBatch> = Vec::new();
    if let Some(state) = &state {
        parts.push(project(t, state, &typed_schema)?);
    }
    let mut incoming_warnings: Vec<Vec<String>> = Vec::new();
    let mut incoming_origin: Vec<(usize, usize)> = Vec::new();
    let mut is_kept: Vec<bool> = Vec::new();
    let mut offsets = Vec::new();
    for (s, (src, kept)) in sources.iter().zip(&kept).enumerate() {
        offsets.push(n_state + incoming_origin.len());
        parts.push(src.typed.clone());
        for (row, &keep) in kept.iter().enumerate() {
            is_kept.push(keep);
            incoming_warnings.push(if keep { warn_names(&src.failed[row]) } else { Vec::new() });
            incoming_origin.push((s, row));
        }
    }
    if let Some(q) = &quarantine
        && !held.is_empty()
    {
        let idx = UInt32Array::from(held.iter().map(|&h| h as u32).collect::<Vec<_>>());
        parts.push(take_record_batch(&project(t, q, &typed_schema)?, &idx).map_err(arrow_err(t))?);
        let failed = q.column_by_name("_failed_rules").map(|c| c.as_list::<i32>().clone());
        for &h in &held {
            let names: Vec<String> = failed.as_ref().map_or_else(Vec::new, |f| {
                f.value(h).as_string::<i32>().iter().flatten().map(str::to_string).collect()
            });
            incoming_warnings
                .push(names.into_iter().filter(|n| rule_action(&rules, n) == Some(Action::Warn)).collect());
            incoming_origin.push((usize::MAX, h));
            is_kept.push(true);
        }
    }
    let combined = concat_batches(&typed_schema, &parts).map_err(arrow_err(t))?;
    drop(parts);
    for (src, &offset) in sources.iter_mut().zip(&offsets) {
        src.typed = combined.slice(offset, src.typed.num_rows());
    }
    let index_of = |c: &str| typed_schema.index_of(c).map_err(arrow_err(t));
    let key: Vec<usize> = model.key.iter().map(|c| index_of(c)).collect::<Result<_>>()?;
    let content: Vec<usize> = (0..typed_fields.len()).collect();
    let order: Vec<usize> = model.order.iter().map(|c| index_of(c)).collect::<Result<_>>()?;
    let tie: Vec<usize> = model.tie_break.iter().map(|c| index_of(c)).collect::<Result<_>>()?;
    let d = dedup(&combined, n_state, &is_kept, &key, &content, &order, &tie).map_err(arrow_err(t))?;

    // Duplicates and conflicts, by the batch they came in: per batch index,
    // rows evaluated, duplicates and conflicts.
    let mut dup_stats: Vec<(u64, u64, u64)> = vec![(0, 0, 0); accounts.len()];
    let mut released_rows: Vec<usize> = already_released.clone();
    for (i, fate) in d.fate.iter().enumerate() {
        if !is_kept[i] {
            continue;
        }
        let (s, row) = incoming_origin[i];
        if s == usize::MAX {
            if *fate == Fate::Accepted {
                released_rows.push(row);
                report.released += 1;
            }
            continue;
        }
        let b = batch_of[s][row];
        let (acct, e) = (&mut accounts[b], &mut dup_stats[b]);
        e.0 += 1;
        match fate {
            Fate::Accepted => acct.accepted += 1,
            Fate::Duplicate => {
                acct.duplicates += 1;
                e.1 += 1;
            }
            Fate::Conflict => {
                acct.quarantined += 1;
                e.2 += 1;
                let mut failed = sources[s].failed[row].clone();
                failed.push(CONFLICT);
                failed.sort_unstable();
                quarantined.push((s, row, failed));
            }
        }
    }

    // 7. The new rows.
    let new_state = build_state(
        t,
        model,
        &state_schema,
        state.as_ref(),
        &combined,
        n_state,
        &d,
        &incoming_warnings,
        now,
        &typed_fields,
    )?;
    let (new_state, deleted) = mark_deleted(t, model, new_state, &sources, now)?;
    report.deleted = deleted;
    report.rows = new_state.iter().map(|b| b.num_rows() as u64).sum();
    let state_changed = !sources.is_empty() || d.groups.iter().any(|g| g.changed()) || deleted > 0;

    // 8. Quarantine rows, and released ones marked.
    let q_schema = quarantine_schema(&typed_fields);
    let quarantine_new = if quarantined.is_empty() {
        None
    } else {
        let fetched = fetch_raw(warehouse, t, &sources, &quarantined).await?;
        Some(quarantine_rows(t, &q_schema, &typed_schema, &sources, &quarantined, &fetched, &rules, now)?)
    };
    let released: HashSet<(String, String, i64)> = match &quarantine {
        Some(q) if !released_rows.is_empty() => {
            let ids = row_ids(q);
            released_rows.iter().map(|&r| ids[r].clone()).collect()
        }
        _ => HashSet::new(),
    };

    // 9. dq_results rows.
    let mut dq_rows: Vec<DqRow> = Vec::new();
    for &b in &by_batch {
        let (bronze, batch) = (&accounts[b].bronze_table, &accounts[b].batch_id);
        for (r, &(evaluated, failed)) in rule_stats[b].iter().enumerate() {
            if evaluated == 0 {
                continue;
            }
            let rule = &rules[r];
            dq_rows.push((
                bronze.clone(),
                batch.clone(),
                rule.name.clone(),
                rule.action.as_str().to_string(),
                evaluated,
                failed,
                rule.fail_above,
            ));
        }
        let (evaluated, dups, conflicts) = dup_stats[b];
        if evaluated > 0 {
            dq_rows.push((
                bronze.clone(),
                batch.clone(),
                "exact_duplicate".into(),
                "count".into(),
                evaluated,
                dups,
                None,
            ));
            dq_rows.push((
                bronze.clone(),
                batch.clone(),
                "conflicting_duplicate".into(),
                "quarantine".into(),
                evaluated,
                conflicts,
                None,
            ));
        }
        let acct = &accounts[b];
        dq_rows.push((
            bronze.clone(),
            batch.clone(),
            "dropped".into(),
            "drop".into(),
            acct.bronze_rows,
            acct.dropped,
            None,
        ));
    }
    dq_rows.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
    let dq = if dq_rows.is_empty() { Vec::new() } else { vec![dq_batch(t, run, &dq_rows, now)?] };

    // 10. Derived tables.
    let mut derived = Vec::new();
    if state_changed {
        for d in &model.derived {
            let ctx = session();
            let mem = MemTable::try_new(state_schema.clone(), vec![new_state.clone()])
                .map_err(sql_err(&d.table, "parent rows"))?;
            ctx.register_table("parent", Arc::new(mem)).map_err(sql_err(&d.table, "parent rows"))?;
            let frame = ctx.sql(&d.sql).await.map_err(sql_err(&d.table, "sql"))?;
            let empty = Schema::new(
                frame
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| Field::new(f.name(), storage::plain_type(f.data_type()), true))
                    .collect::<Vec<_>>(),
            );
            let out = frame.collect().await.map_err(sql_err(&d.table, "sql"))?;
            let batch = match concat_plain(&d.table, &out)? {
                Some(b) => b,
                None => RecordBatch::new_empty(Arc::new(empty)),
            };
            derived.push((d.table.clone(), batch));
        }
    }

    report.batches = by_batch.iter().map(|&b| accounts[b].clone()).collect();
    let mut totals: BTreeMap<String, RuleCount> = BTreeMap::new();
    for (_, _, rule, action, evaluated, failed, _) in &dq_rows {
        let e = totals.entry(rule.clone()).or_insert_with(|| RuleCount {
            rule: rule.clone(),
            action: action.clone(),
            rows_evaluated: 0,
            rows_failed: 0,
        });
        e.rows_evaluated += evaluated;
        e.rows_failed += failed;
    }
    report.rules = totals.into_values().collect();
    Ok(Some(Planned {
        model: model.clone(),
        report,
        state: Some(new_state),
        quarantine_new,
        released,
        dq,
        txns,
        derived,
        state_changed,
    }))
}

fn rule_action(rules: &[Rule], name: &str) -> Option<Action> {
    rules.iter().find(|r| r.name == name).map(|r| r.action)
}

/// `(batch, file, row)` of a batch's rows, read on demand.
struct RowIds {
    batch: Option<StringArray>,
    file: Option<StringArray>,
    row: Option<Int64Array>,
}

impl RowIds {
    fn of(batch: &RecordBatch) -> Self {
        let s = |n: &str| batch.column_by_name(n).and_then(|c| c.as_string_opt::<i32>().cloned());
        let row = batch
            .column_by_name("_source_row")
            .and_then(|c| c.as_primitive_opt::<deltalake::arrow::datatypes::Int64Type>().cloned());
        Self { batch: s("_batch_id"), file: s("_source_file"), row }
    }

    fn get(&self, i: usize) -> RowId {
        (
            self.batch.as_ref().map_or(String::new(), |c| c.value(i).to_string()),
            self.file.as_ref().map_or(String::new(), |c| c.value(i).to_string()),
            self.row.as_ref().map_or(0, |c| c.value(i)),
        )
    }
}

/// `(batch, file, row)` of each row.
fn row_ids(batch: &RecordBatch) -> Vec<RowId> {
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
                v.column(2).as_primitive::<deltalake::arrow::datatypes::Int64Type>(),
            );
            out.extend((0..v.len()).map(|i| (b.value(i).to_string(), f.value(i).to_string(), r.value(i))));
        }
    }
    out
}

type RowId = (String, String, i64);

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

/// The silver rows after the merge: untouched rows as they were, each
/// touched key's winner (with NULLs filled from older versions when the
/// model says `coalesce`) and the lineage of every accepted row.
#[allow(clippy::too_many_arguments)]
fn build_state(
    t: &str,
    model: &TableModel,
    schema: &SchemaRef,
    state: Option<&RecordBatch>,
    combined: &RecordBatch,
    n_state: usize,
    d: &crate::dedup::Dedup,
    incoming_warnings: &[Vec<String>],
    now: i64,
    typed_fields: &[Field],
) -> Result<Vec<RecordBatch>> {
    let mut parts = Vec::new();
    // Untouched rows, and touched keys whose row did not change.
    let mut keep: Vec<u32> = d.untouched.iter().map(|&i| i as u32).collect();
    keep.extend(d.groups.iter().filter(|g| !g.changed()).filter_map(|g| g.state.map(|s| s as u32)));
    keep.sort_unstable();
    if let Some(state) = state
        && !keep.is_empty()
    {
        // A mask, not a gather: the kept rows are most of the table, in
        // long runs that the filter copies whole (or none is dropped).
        let kept = if keep.len() == state.num_rows() {
            state.clone()
        } else {
            let mut mask = vec![false; state.num_rows()];
            for &k in &keep {
                mask[k as usize] = true;
            }
            deltalake::arrow::compute::filter_record_batch(state, &BooleanArray::from(mask)).map_err(arrow_err(t))?
        };
        parts.push(RecordBatch::try_new(schema.clone(), kept.columns().to_vec()).map_err(arrow_err(t))?);
    }
    let mut changed: Vec<&crate::dedup::Group> = d.groups.iter().filter(|g| g.changed()).collect();
    if !changed.is_empty() {
        // New and changed rows in key order, so the output is the same
        // whatever order the rows came in: the order is decided on the
        // winners' keys first, and the columns are built in it.
        let winners = UInt32Array::from(changed.iter().map(|g| g.accepted[0] as u32).collect::<Vec<_>>());
        let mut sort = Vec::new();
        for k in &model.key {
            let c = combined
                .column_by_name(k)
                .ok_or_else(|| Error::Schema { table: t.to_string(), reason: format!("no key column {k}") })?;
            sort.push(deltalake::arrow::compute::SortColumn {
                values: take(c, &winners, None).map_err(arrow_err(t))?,
                options: None,
            });
        }
        let order = deltalake::arrow::compute::lexsort_to_indices(&sort, None).map_err(arrow_err(t))?;
        changed = order.values().iter().map(|&i| changed[i as usize]).collect();
        let n_typed = typed_fields.len();
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for c in 0..n_typed {
            let column = combined.column(c);
            let idx: UInt32Array = changed
                .iter()
                .map(|g| {
                    let pick = if model.coalesce {
                        g.accepted.iter().find(|&&a| column.is_valid(a)).copied().unwrap_or(g.accepted[0])
                    } else {
                        g.accepted[0]
                    };
                    Some(pick as u32)
                })
                .collect();
            cols.push(take(column, &idx, None).map_err(arrow_err(t))?);
        }
        // _dq_warnings: the winner's.
        let state_warnings = state.and_then(|s| s.column_by_name("_dq_warnings")).map(|c| c.as_list::<i32>().clone());
        let mut warnings = ListBuilder::new(StringBuilder::new());
        for g in &changed {
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
                for v in &incoming_warnings[w - n_state] {
                    warnings.values().append_value(v);
                }
            }
            warnings.append(true);
        }
        cols.push(Arc::new(warnings.finish()));
        cols.push(Arc::new(BooleanArray::from(vec![false; changed.len()])));
        // The winner's batch, file and row.
        let winners = UInt32Array::from(changed.iter().map(|g| g.accepted[0] as u32).collect::<Vec<_>>());
        for c in n_typed..n_typed + 3 {
            cols.push(take(combined.column(c), &winners, None).map_err(arrow_err(t))?);
        }
        // Lineage: what the table held, then each newly accepted row.
        let state_lineage = state.and_then(|s| s.column_by_name("_lineage")).map(|c| c.as_list::<i32>().clone());
        let (cb, cf, cr) = (
            combined.column(n_typed).as_string::<i32>(),
            combined.column(n_typed + 1).as_string::<i32>(),
            combined.column(n_typed + 2).as_primitive::<deltalake::arrow::datatypes::Int64Type>(),
        );
        let mut offsets = vec![0i32];
        let (mut bs, mut fs, mut rs) =
            (StringBuilder::new(), StringBuilder::new(), deltalake::arrow::array::Int64Builder::new());
        let mut ws = ListBuilder::new(StringBuilder::new());
        let mut len = 0usize;
        for g in &changed {
            // What the table held, straight from its arrays.
            if let (Some(s), Some(sl)) = (g.state, &state_lineage)
                && sl.is_valid(s)
            {
                let v = sl.value(s);
                let v = v.as_struct();
                let (b, f, r, w) = (
                    v.column(0).as_string::<i32>(),
                    v.column(1).as_string::<i32>(),
                    v.column(2).as_primitive::<deltalake::arrow::datatypes::Int64Type>(),
                    v.column(3).as_list::<i32>(),
                );
                for i in 0..v.len() {
                    bs.append_value(b.value(i));
                    fs.append_value(f.value(i));
                    rs.append_value(r.value(i));
                    if w.is_valid(i) {
                        for x in w.value(i).as_string::<i32>().iter().flatten() {
                            ws.values().append_value(x);
                        }
                    }
                    ws.append(true);
                }
                len += v.len();
            }
            // Then the newly accepted rows, by batch, file and row.
            let mut new: Vec<usize> = g.accepted.iter().copied().filter(|&a| a >= n_state).collect();
            new.sort_by(|&a, &b| (cb.value(a), cf.value(a), cr.value(a)).cmp(&(cb.value(b), cf.value(b), cr.value(b))));
            for a in new {
                bs.append_value(cb.value(a));
                fs.append_value(cf.value(a));
                rs.append_value(cr.value(a));
                for x in &incoming_warnings[a - n_state] {
                    ws.values().append_value(x);
                }
                ws.append(true);
                len += 1;
            }
            offsets.push(
                i32::try_from(len)
                    .map_err(|_| Error::Schema { table: t.to_string(), reason: "lineage too long".into() })?,
            );
        }
        let entries = StructArray::try_new(
            lineage_fields(),
            vec![Arc::new(bs.finish()), Arc::new(fs.finish()), Arc::new(rs.finish()), Arc::new(ws.finish())],
            None,
        )
        .map_err(arrow_err(t))?;
        let lineage = ListArray::try_new(
            Arc::new(Field::new_list_field(DataType::Struct(lineage_fields()), true)),
            OffsetBuffer::new(offsets.into()),
            Arc::new(entries),
            None,
        )
        .map_err(arrow_err(t))?;
        cols.push(Arc::new(lineage));
        cols.push(Arc::new(TimestampMicrosecondArray::from(vec![now; changed.len()]).with_timezone("UTC")));
        parts.push(RecordBatch::try_new(schema.clone(), cols).map_err(arrow_err(t))?);
    }
    if parts.is_empty() {
        return Ok(vec![RecordBatch::new_empty(schema.clone())]);
    }
    // The parts are written as they are: one more copy of the whole table
    // would only join them.
    Ok(parts)
}

/// For a table fed by full extracts: keys missing from the newest extract
/// are marked `_is_deleted`, and keys back in it are revived. Returns the
/// rows and how many keys are newly deleted.
fn mark_deleted(
    t: &str,
    model: &TableModel,
    parts: Vec<RecordBatch>,
    sources: &[SourceRows],
    now: i64,
) -> Result<(Vec<RecordBatch>, u64)> {
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
        let old_upd =
            batch.column(upd_at).as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>().clone();
        let mut del = Vec::with_capacity(batch.num_rows());
        let mut upd = Vec::with_capacity(batch.num_rows());
        for (row, key) in keys.iter().enumerate() {
            let was = old_del.is_valid(row) && old_del.value(row);
            let is = key.as_ref().is_none_or(|k| !present.contains(k));
            if is && !was {
                deleted += 1;
            }
            del.push(Some(is));
            upd.push(if is != was { Some(now) } else { old_upd.is_valid(row).then(|| old_upd.value(row)) });
        }
        let mut cols = batch.columns().to_vec();
        cols[del_at] = Arc::new(BooleanArray::from(del));
        cols[upd_at] = Arc::new(TimestampMicrosecondArray::from(upd).with_timezone("UTC"));
        marked.push(RecordBatch::try_new(schema, cols).map_err(arrow_err(t))?);
    }
    Ok((marked, deleted))
}

/// Each row of `batch` as one JSON object (NULLs left out), without the
/// query's own `__row` column.
fn json_lines(t: &str, batch: &RecordBatch) -> Result<Vec<String>> {
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
            // The ranges hold other rows too (a range may span the whole
            // file): only the wanted ones are turned into JSON.
            let batch_ids = RowIds::of(&batch);
            let (Some(files), Some(rows)) = (&batch_ids.file, &batch_ids.row) else { continue };
            let mut hit = Vec::new();
            let mut at = Vec::new();
            for i in 0..batch.num_rows() {
                if let Some(&r) = by_file.get(files.value(i)).and_then(|m| m.get(&rows.value(i))) {
                    hit.push(i as u32);
                    at.push(r);
                }
            }
            if hit.is_empty() {
                continue;
            }
            let picked = take_record_batch(&batch, &UInt32Array::from(hit)).map_err(arrow_err(t))?;
            for (line, r) in json_lines(t, &picked)?.into_iter().zip(at) {
                out.insert((s, r), line);
            }
        }
    }
    Ok(out)
}

/// Quarantine rows: the typed values, every failed rule, the batch and the
/// raw bronze row as JSON.
#[allow(clippy::too_many_arguments)]
fn quarantine_rows(
    t: &str,
    schema: &SchemaRef,
    typed_schema: &SchemaRef,
    sources: &[SourceRows],
    rows: &[(usize, usize, Vec<u16>)],
    fetched: &HashMap<(usize, usize), String>,
    rules: &[Rule],
    now: i64,
) -> Result<RecordBatch> {
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
                failed.values().append_value(&rules[r as usize].name);
            }
            failed.append(true);
            bronze.push(src.bronze.clone());
        }
    }
    let typed = concat_batches(typed_schema, &parts).map_err(arrow_err(t))?;
    let n = typed.num_rows();
    let typed_n = typed_schema.fields().len() - 3;
    let mut cols: Vec<ArrayRef> = typed.columns()[..typed_n].to_vec();
    cols.push(Arc::new(failed.finish()));
    cols.push(Arc::new(StringArray::from(bronze)));
    cols.extend(typed.columns()[typed_n..].iter().cloned());
    cols.push(Arc::new(StringArray::from(raws)));
    cols.push(Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")));
    cols.push(Arc::new(TimestampMicrosecondArray::from(vec![None; n]).with_timezone("UTC")));
    let cols = cols
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| if c.data_type() == f.data_type() { Ok(c) } else { cast(&c, f.data_type()) })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(arrow_err(t))?;
    RecordBatch::try_new(schema.clone(), cols).map_err(arrow_err(t))
}

type DqRow = (String, String, String, String, u64, u64, Option<f64>);

fn dq_batch(t: &str, run: &RunContext, rows: &[DqRow], now: i64) -> Result<RecordBatch> {
    let n = rows.len();
    let date = Date32Type::from_naive_date(run.clock.logical_date());
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![run.id.0; n])),
        Arc::new(deltalake::arrow::array::Date32Array::from(vec![date; n])),
        Arc::new(StringArray::from(vec![t; n])),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.1))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.2))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.3))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.4 as i64))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.5 as i64))),
        Arc::new(deltalake::arrow::array::Float64Array::from(rows.iter().map(|r| r.6).collect::<Vec<_>>())),
        Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
    ];
    RecordBatch::try_new(dq_schema(), cols).map_err(arrow_err(t))
}

/// Writes one planned table: the new quarantine rows and the `dq_results`
/// rows first, then the silver rows (whose txn marks the batches done),
/// the derived tables, and last the release marks on quarantine. A write
/// whose txn shows it done (by a run that stopped halfway) is skipped, and
/// release marks are recomputed from silver's lineage, so a stop at any
/// point loses nothing. Returns the `dq_results` version written, if any.
async fn write_table(warehouse: &Warehouse, run: &RunContext, plan: &mut Planned) -> Result<Option<i64>> {
    let t = plan.model.table.clone();
    let name = TableName::new(&t)?;
    let q_name = TableName::new(&plan.model.quarantine_table())?;
    let dq_name = TableName::new(DQ_RESULTS_TABLE)?;
    fn with_txns<'a>(mut c: Commit<'a>, txns: &[(String, i64)], suffix: &str) -> Commit<'a> {
        for (id, v) in txns {
            c = c.with_txn(&format!("{id}{suffix}"), *v);
        }
        c
    }
    let undone = |table: &TableName, suffix: &str| {
        let table = table.clone();
        let suffix = suffix.to_string();
        let txns = plan.txns.clone();
        async move {
            for (id, v) in &txns {
                if warehouse.txn_version(&table, &format!("{id}{suffix}")).await?.is_none_or(|done| done < *v) {
                    return Ok::<bool, Error>(true);
                }
            }
            Ok(txns.is_empty())
        }
    };
    if let Some(q) = plan.quarantine_new.take()
        && undone(&q_name, "").await?
    {
        let commit = with_txns(Commit::new(run, "silver quarantine"), &plan.txns, "");
        plan.report.quarantine_version = Some(warehouse.append(&q_name, vec![q], &commit).await?);
    }
    let mut dq_version = None;
    let dq = std::mem::take(&mut plan.dq);
    let suffix = format!(":{t}");
    if !dq.is_empty() && undone(&dq_name, &suffix).await? {
        let commit = with_txns(Commit::new(run, "silver dq_results"), &plan.txns, &suffix);
        dq_version = Some(warehouse.append(&dq_name, dq, &commit).await?);
    }
    if plan.state_changed
        && undone(&name, "").await?
        && let Some(state) = &plan.state
    {
        let commit = with_txns(Commit::new(run, "silver"), &plan.txns, "")
            .with_metadata("released", serde_json::json!(plan.report.released));
        plan.report.version = Some(warehouse.overwrite(&name, state.clone(), &commit).await?);
        for (table, batch) in std::mem::take(&mut plan.derived) {
            let d = TableName::new(&table)?;
            let v = warehouse.overwrite(&d, vec![batch], &Commit::new(run, "silver derived")).await?;
            plan.report.derived.push((table, v));
        }
    }
    if !plan.released.is_empty() {
        let q = concat_plain(&t, &warehouse.scan(&q_name, None).await?)?;
        if let Some(q) = q {
            let ids = row_ids(&q);
            let at = q.schema().index_of("_released_at").map_err(arrow_err(&t))?;
            let old = q.column(at).as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>().clone();
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
            let q = RecordBatch::try_new(q.schema(), cols).map_err(arrow_err(&t))?;
            plan.report.quarantine_version =
                Some(warehouse.overwrite(&q_name, vec![q], &Commit::new(run, "silver release")).await?);
        }
    }
    Ok(dq_version)
}
