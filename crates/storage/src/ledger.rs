//! `_gold_runs`: one row per run.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Int64Array, ListArray, RecordBatch, StringArray, StructArray,
    TimestampMicrosecondArray,
};
use deltalake::arrow::buffer::OffsetBuffer;
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{
    DataType, Date32Type, Field, Fields, Int64Type, Schema, TimeUnit, TimestampMicrosecondType,
};
use serde::Serialize;

use crate::warehouse::{Commit, TableName, Warehouse, committed_version};
use crate::{Error, Result, RunClock, RunContext, RunId, RunKind, wall_clock};

/// The ledger table's name.
pub const LEDGER_TABLE: &str = "_gold_runs";

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Begun and not finished: still running, or abandoned by a process
    /// that died (the next run to begin records it as failed).
    Running,
    /// Finished, every stage done.
    Succeeded,
    /// Stopped by an error, or abandoned.
    Failed,
}

impl RunStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that `{:<9}` in a table lines up.
        f.pad(self.as_str())
    }
}

/// The Delta version a run left a table at, and the rows it wrote there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TableVersion {
    /// The table.
    pub table: String,
    /// Its Delta version after the run.
    pub version: i64,
    /// The rows the run wrote to it.
    pub rows_written: i64,
}

/// One ledger row.
#[derive(Clone, Debug, Serialize)]
pub struct RunRecord {
    /// The run's number.
    pub run_id: RunId,
    /// What the run did ([`RunKind::as_str`]).
    pub kind: String,
    /// The date the run was for.
    pub logical_date: NaiveDate,
    /// When the run really started (wall clock).
    pub started_at: DateTime<Utc>,
    /// When the run really ended (wall clock).
    pub ended_at: DateTime<Utc>,
    /// How the run ended.
    pub status: RunStatus,
    /// The version of every table the run wrote.
    pub tables: Vec<TableVersion>,
    /// The fraud model the run scored with, if any.
    pub model_version: Option<String>,
    /// The gold version that ran.
    pub code_version: String,
    /// Why the run failed.
    pub message: Option<String>,
    /// The run's JSON summary (stages, row counts), as text.
    pub summary: Option<String>,
    /// Every table of the warehouse and its version when the run ended:
    /// the state a rollback to this run restores.
    pub state: BTreeMap<String, i64>,
}

impl RunRecord {
    /// A successful run that wrote nothing yet; add tables with [`Self::with_table`].
    pub fn succeeded(run: &RunContext, code_version: &str) -> Self {
        Self {
            run_id: run.id,
            kind: run.kind.as_str().to_string(),
            logical_date: run.clock.logical_date(),
            started_at: run.clock.started_at(),
            ended_at: run.clock.ended_at(),
            status: RunStatus::Succeeded,
            tables: Vec::new(),
            model_version: None,
            code_version: code_version.to_string(),
            message: None,
            summary: None,
            state: BTreeMap::new(),
        }
    }

    /// A failed run and the reason.
    pub fn failed(run: &RunContext, code_version: &str, message: &str) -> Self {
        Self { status: RunStatus::Failed, message: Some(message.to_string()), ..Self::succeeded(run, code_version) }
    }

    /// This record, with `table` left at `version` after `rows_written` rows.
    pub fn with_table(mut self, table: &str, version: i64, rows_written: i64) -> Self {
        self.tables.push(TableVersion { table: table.to_string(), version, rows_written });
        self
    }

    /// This record, with the run's JSON summary.
    pub fn with_summary(mut self, summary: &serde_json::Value) -> Self {
        self.summary = Some(summary.to_string());
        self
    }
}

fn table_version_fields() -> Fields {
    Fields::from(vec![
        Field::new("table", DataType::Utf8, false),
        Field::new("version", DataType::Int64, false),
        Field::new("rows_written", DataType::Int64, false),
    ])
}

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn ledger_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Int64, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("logical_date", DataType::Date32, false),
        Field::new("started_at", utc_micros(), false),
        Field::new("ended_at", utc_micros(), false),
        Field::new("status", DataType::Utf8, false),
        Field::new(
            "tables",
            DataType::List(Arc::new(Field::new("element", DataType::Struct(table_version_fields()), false))),
            false,
        ),
        Field::new("model_version", DataType::Utf8, true),
        Field::new("code_version", DataType::Utf8, false),
        Field::new("message", DataType::Utf8, true),
        Field::new("summary", DataType::Utf8, true),
        Field::new(
            "state",
            DataType::List(Arc::new(Field::new("element", DataType::Struct(state_fields()), false))),
            true,
        ),
    ]))
}

fn state_fields() -> Fields {
    Fields::from(vec![Field::new("table", DataType::Utf8, false), Field::new("version", DataType::Int64, false)])
}

/// The run ledger of one warehouse.
pub struct Ledger<'w> {
    warehouse: &'w Warehouse,
    name: TableName,
}

/// The application transaction every run's begin commits: two runs that
/// begin at the same time both write it, and Delta's conflict check lets
/// only one of them commit.
const LEASE_APP: &str = "gold.lease";

/// How long a run begun on another host holds the warehouse when gold
/// cannot see whether its process is alive.
const FOREIGN_LEASE_HOURS: i64 = 12;

/// Who holds a run: the host and process that began it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
struct Lease {
    host: String,
    pid: u32,
}

impl Lease {
    fn mine() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".into());
        Self { host, pid: std::process::id() }
    }

    /// Whether the run holding this lease may still be running: its process
    /// is alive on this host, or, begun elsewhere, it is recent.
    fn alive(&self, started_at: DateTime<Utc>) -> bool {
        let me = Self::mine();
        let proc_fs = std::path::Path::new("/proc/self").exists();
        if self.host == me.host && proc_fs {
            self.pid == me.pid || std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
        } else {
            wall_clock() - started_at < chrono::Duration::hours(FOREIGN_LEASE_HOURS)
        }
    }
}

impl RunRecord {
    /// The run's summary as JSON (`Null` when there is none).
    pub fn summary_json(&self) -> serde_json::Value {
        self.summary.as_deref().and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default()
    }

    fn lease(&self) -> Option<Lease> {
        serde_json::from_value(self.summary_json().get("lease")?.clone()).ok()
    }
}

impl<'w> Ledger<'w> {
    /// The ledger of `warehouse` (created by the first run that begins).
    pub fn new(warehouse: &'w Warehouse) -> Self {
        Self { warehouse, name: TableName::new(LEDGER_TABLE).expect("valid ledger name") }
    }

    /// Starts a run: gives it the next run id and records it as running,
    /// which holds the warehouse for it. Refuses with [`Error::Busy`] while
    /// another run holds it: a run whose process is alive on this host, or
    /// one begun on another host less than 12 hours ago. A running run whose
    /// process has died (killed, crashed) is recorded as failed in the same
    /// commit; its partial writes are redone by the runs after it, which
    /// write exactly once. Two runs beginning at the same moment both write
    /// the `gold.lease` transaction, so Delta lets only one commit.
    pub async fn begin(&self, kind: RunKind, clock: RunClock) -> Result<RunContext> {
        let mut table = self.warehouse.load(&self.name).await?;
        if table.is_none() {
            // A new warehouse: create the empty ledger first. Delta checks a
            // commit against concurrent ones only when it was read from a
            // version, so two runs creating the ledger with their lease rows
            // could both commit. Two creators may both land here; each
            // commit holds no row, so either outcome is the same empty
            // ledger, and the lease commit below is then checked.
            let creating = RunContext { id: RunId(0), kind, clock: clock.clone() };
            let empty = to_batch(&[]).map_err(arrow_err)?;
            match self.warehouse.append(&self.name, vec![empty], &Commit::new(&creating, "ledger.create")).await {
                Ok(_) => {}
                Err(e) if e.is_commit_conflict() => {}
                Err(e) => return Err(e),
            }
            table = self.warehouse.load(&self.name).await?;
        }
        let runs = match &table {
            Some(t) => self.read(committed_version(&self.name, t)?).await?,
            None => Vec::new(),
        };
        let id = RunId(runs.iter().map(|r| r.run_id.0).max().unwrap_or(0) + 1);
        let mut rows = abandoned(&runs, id)?;
        let run = RunContext { id, kind, clock };
        let mut running = RunRecord::succeeded(&run, "");
        running.status = RunStatus::Running;
        running.ended_at = running.started_at;
        running.summary = Some(serde_json::json!({"lease": Lease::mine()}).to_string());
        rows.push(running);
        let batch = to_batch(&rows).map_err(arrow_err)?;
        let commit = Commit::new(&run, "ledger.begin").with_txn(LEASE_APP, id.0);
        match self.warehouse.append_to(table, &self.name, vec![batch], &commit).await {
            Ok(_) => Ok(run),
            Err(e) if e.is_commit_conflict() => Err(Error::Busy(
                "another run began on this warehouse at the same moment; one run at a time writes a \
                 warehouse, so wait for it to finish and try again"
                    .into(),
            )),
            Err(e) => Err(e),
        }
    }

    /// Records a finished run (one commit) with the version of every table
    /// of the warehouse, and returns the ledger version.
    pub async fn finish(&self, run: &RunContext, mut record: RunRecord) -> Result<i64> {
        record.state = self.warehouse.tables().await?;
        record.state.remove(LEDGER_TABLE);
        let batch = to_batch(&[record]).map_err(arrow_err)?;
        self.warehouse.append(&self.name, vec![batch], &Commit::new(run, "ledger.record")).await
    }

    /// Every run, oldest first, as it stands: a run that finished shows how
    /// it ended, one that did not shows as running. An empty list if no run
    /// was recorded yet.
    pub async fn runs(&self) -> Result<Vec<RunRecord>> {
        match self.warehouse.load(&self.name).await? {
            Some(t) => self.read(committed_version(&self.name, &t)?).await,
            None => Ok(Vec::new()),
        }
    }

    /// The runs as of ledger version `version`.
    async fn read(&self, version: i64) -> Result<Vec<RunRecord>> {
        let mut rows = Vec::new();
        for batch in self.warehouse.scan(&self.name, Some(version)).await? {
            rows.extend(from_batch(&batch)?);
        }
        // A run has a running row from its begin and a final row from its
        // end (or from the run that found it abandoned); the final one wins.
        let mut by_id: BTreeMap<RunId, RunRecord> = BTreeMap::new();
        for row in rows {
            match by_id.get(&row.run_id) {
                Some(seen) if seen.status != RunStatus::Running && row.status == RunStatus::Running => {}
                _ => {
                    by_id.insert(row.run_id, row);
                }
            }
        }
        Ok(by_id.into_values().collect())
    }

    /// The run `id`, which must have succeeded: the state it left is what
    /// a rollback or a rebuild goes back to.
    pub async fn succeeded_run(&self, id: RunId) -> Result<RunRecord> {
        let runs = self.runs().await?;
        let run = runs.into_iter().find(|r| r.run_id == id).ok_or_else(|| Error::NoSuchRun(id.0))?;
        if run.status != RunStatus::Succeeded {
            return Err(Error::RunNotUsable { run: id.0, status: run.status.to_string() });
        }
        Ok(run)
    }
}

/// The running runs of `runs` whose process has died, recorded as failed
/// (found by run `id`), or [`Error::Busy`] when one is still alive.
fn abandoned(runs: &[RunRecord], id: RunId) -> Result<Vec<RunRecord>> {
    let mut rows = Vec::new();
    for r in runs.iter().filter(|r| r.status == RunStatus::Running) {
        match r.lease() {
            Some(lease) if lease.alive(r.started_at) => {
                return Err(Error::Busy(format!(
                    "run {} ({}, for {}) began at {} in process {} on {} and is still running; \
                     one run at a time writes a warehouse, so wait for it to finish and try again",
                    r.run_id,
                    r.kind,
                    r.logical_date,
                    r.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    lease.pid,
                    lease.host
                )));
            }
            lease => {
                let who = lease.map_or("its process".to_string(), |l| format!("process {} on {}", l.pid, l.host));
                let mut failed = r.clone();
                failed.status = RunStatus::Failed;
                failed.ended_at = wall_clock();
                failed.message = Some(format!(
                    "abandoned: {who} ended without finishing the run (killed or crashed); \
                     run {id} found it and redoes its work"
                ));
                failed.summary = None;
                rows.push(failed);
            }
        }
    }
    Ok(rows)
}

fn to_batch(records: &[RunRecord]) -> Result<RecordBatch, deltalake::arrow::error::ArrowError> {
    let micros = |t: DateTime<Utc>| t.timestamp_micros();
    let days = |d: NaiveDate| Date32Type::from_naive_date(d);
    let mut names = Vec::new();
    let mut versions = Vec::new();
    let mut rows = Vec::new();
    let mut lengths = Vec::new();
    for r in records {
        lengths.push(r.tables.len());
        for t in &r.tables {
            names.push(t.table.clone());
            versions.push(t.version);
            rows.push(t.rows_written);
        }
    }
    let entries = StructArray::try_new(
        table_version_fields(),
        vec![
            Arc::new(StringArray::from(names)) as ArrayRef,
            Arc::new(Int64Array::from(versions)),
            Arc::new(Int64Array::from(rows)),
        ],
        None,
    )?;
    let schema = ledger_schema();
    let DataType::List(item) = schema.field(6).data_type().clone() else { unreachable!("tables is a list") };
    let tables = ListArray::try_new(item, OffsetBuffer::from_lengths(lengths), Arc::new(entries), None)?;
    let (mut names, mut versions, mut lengths) = (Vec::new(), Vec::new(), Vec::new());
    for r in records {
        lengths.push(r.state.len());
        for (table, version) in &r.state {
            names.push(table.clone());
            versions.push(*version);
        }
    }
    let entries = StructArray::try_new(
        state_fields(),
        vec![Arc::new(StringArray::from(names)) as ArrayRef, Arc::new(Int64Array::from(versions))],
        None,
    )?;
    let DataType::List(item) = schema.field(11).data_type().clone() else { unreachable!("state is a list") };
    let state = ListArray::try_new(item, OffsetBuffer::from_lengths(lengths), Arc::new(entries), None)?;
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(records.iter().map(|r| r.run_id.0))),
            Arc::new(StringArray::from_iter_values(records.iter().map(|r| r.kind.as_str()))),
            Arc::new(Date32Array::from_iter_values(records.iter().map(|r| days(r.logical_date)))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(records.iter().map(|r| micros(r.started_at)))
                    .with_timezone("UTC"),
            ),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(records.iter().map(|r| micros(r.ended_at)))
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter_values(records.iter().map(|r| r.status.as_str()))),
            Arc::new(tables),
            Arc::new(StringArray::from_iter(records.iter().map(|r| r.model_version.as_deref()))),
            Arc::new(StringArray::from_iter_values(records.iter().map(|r| r.code_version.as_str()))),
            Arc::new(StringArray::from_iter(records.iter().map(|r| r.message.as_deref()))),
            Arc::new(StringArray::from_iter(records.iter().map(|r| r.summary.as_deref()))),
            Arc::new(state),
        ],
    )
}

fn arrow_err(source: deltalake::arrow::error::ArrowError) -> Error {
    Error::Arrow { table: LEDGER_TABLE.into(), source: Box::new(source) }
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| Error::Ledger(format!("column {name} is missing")))
}

/// A string column as plain `Utf8`, whatever string type the reader chose.
fn strings(batch: &RecordBatch, name: &str) -> Result<StringArray> {
    let col = column(batch, name)?;
    let utf8 = cast(col, &DataType::Utf8).map_err(arrow_err)?;
    Ok(utf8.as_string::<i32>().clone())
}

fn opt(a: &StringArray, i: usize) -> Option<String> {
    a.is_valid(i).then(|| a.value(i).to_string())
}

fn from_batch(batch: &RecordBatch) -> Result<Vec<RunRecord>> {
    let bad = |what: &str| Error::Ledger(format!("column {what} has an unexpected type"));
    let run_id = column(batch, "run_id")?.as_primitive_opt::<Int64Type>().ok_or_else(|| bad("run_id"))?;
    let logical = column(batch, "logical_date")?.as_primitive_opt::<Date32Type>().ok_or_else(|| bad("logical_date"))?;
    let started =
        column(batch, "started_at")?.as_primitive_opt::<TimestampMicrosecondType>().ok_or_else(|| bad("started_at"))?;
    let ended =
        column(batch, "ended_at")?.as_primitive_opt::<TimestampMicrosecondType>().ok_or_else(|| bad("ended_at"))?;
    let (kind, status, model, code, message, summary) = (
        strings(batch, "kind")?,
        strings(batch, "status")?,
        strings(batch, "model_version")?,
        strings(batch, "code_version")?,
        strings(batch, "message")?,
        strings(batch, "summary")?,
    );
    let tables = column(batch, "tables")?.as_list_opt::<i32>().ok_or_else(|| bad("tables"))?;
    let ts = |m: i64| DateTime::<Utc>::from_timestamp_micros(m).ok_or_else(|| bad("timestamp"));
    // Ledgers written before the state column have none.
    let states = match batch.column_by_name("state") {
        Some(c) => Some(c.as_list_opt::<i32>().ok_or_else(|| bad("state"))?),
        None => None,
    };
    let state_of = |i: usize| -> Result<BTreeMap<String, i64>> {
        let Some(states) = states.filter(|s| s.is_valid(i)) else { return Ok(BTreeMap::new()) };
        let entries = states.value(i);
        let batch = RecordBatch::from(entries.as_struct_opt().ok_or_else(|| bad("state"))?.clone());
        let names = strings(&batch, "table")?;
        let versions =
            column(&batch, "version")?.as_primitive_opt::<Int64Type>().ok_or_else(|| bad("state.version"))?;
        Ok((0..names.len()).map(|j| (names.value(j).to_string(), versions.value(j))).collect())
    };
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let entries = tables.value(i);
        let entries = entries.as_struct_opt().ok_or_else(|| bad("tables"))?;
        let batch = RecordBatch::from(entries.clone());
        let names = strings(&batch, "table")?;
        let versions =
            column(&batch, "version")?.as_primitive_opt::<Int64Type>().ok_or_else(|| bad("tables.version"))?;
        let rows = column(&batch, "rows_written")?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| bad("tables.rows_written"))?;
        out.push(RunRecord {
            run_id: RunId(run_id.value(i)),
            kind: kind.value(i).to_string(),
            logical_date: Date32Type::to_naive_date_opt(logical.value(i)).ok_or_else(|| bad("logical_date"))?,
            started_at: ts(started.value(i))?,
            ended_at: ts(ended.value(i))?,
            status: match status.value(i) {
                "succeeded" => RunStatus::Succeeded,
                "running" => RunStatus::Running,
                _ => RunStatus::Failed,
            },
            tables: (0..names.len())
                .map(|j| TableVersion {
                    table: names.value(j).to_string(),
                    version: versions.value(j),
                    rows_written: rows.value(j),
                })
                .collect(),
            model_version: opt(&model, i),
            code_version: code.value(i).to_string(),
            message: opt(&message, i),
            summary: opt(&summary, i),
            state: state_of(i)?,
        });
    }
    Ok(out)
}
