//! `gold rebuild --as-of D`: the warehouse as the build of D left it,
//! recomputed into another location, and compared table by table.
//!
//! Every successful run up to the target is replayed in order, with its
//! own id and clock, so the dimension history grows as it did: bronze
//! batches and fraud models are copied from the live warehouse as each
//! run had them, the other stages are recomputed, and rollbacks are
//! replayed as restores of the rebuilt state. Then every table the target
//! run left (but the copied inputs and gold's bookkeeping) is compared
//! with its rebuilt twin by content hash.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::NaiveDate;
use serde::Serialize;
use serde_json::json;
use storage::{
    Commit, LEDGER_TABLE, Ledger, RowSet, RunClock, RunContext, RunId, RunKind, RunRecord, RunStatus, TableName,
    Warehouse,
};

use crate::{CODE_VERSION, Error, Models, Stage, run_stages};

/// What a rebuild is asked to do.
#[derive(Clone, Debug)]
pub struct RebuildRequest {
    /// Rebuild as the last successful build for this date (or the last one
    /// before it) left the warehouse.
    pub as_of: NaiveDate,
    /// Where the rebuilt warehouse goes (empty or absent); `None` is
    /// `./rebuild-YYYY-MM-DD`.
    pub out: Option<String>,
}

/// One table compared.
#[derive(Clone, Debug, Serialize)]
pub struct TableMatch {
    /// The table.
    pub table: String,
    /// Its version in the live warehouse, as the run left it.
    pub live_version: i64,
    /// The content hash of that version.
    pub live_hash: String,
    /// Its rows.
    pub live_rows: usize,
    /// The rebuilt table's content hash (`(missing)` if not rebuilt).
    pub rebuilt_hash: String,
    /// The rebuilt table's rows.
    pub rebuilt_rows: usize,
    /// Whether the two hashes are equal.
    pub matches: bool,
}

/// A rebuild that ran (its tables may differ: see [`RebuildDone::all_match`]).
#[derive(Debug)]
pub struct RebuildDone {
    /// The run rebuilt.
    pub target: RunRecord,
    /// Where the rebuild went.
    pub out: String,
    /// Every run replayed: id, kind, date and what was replayed.
    pub replayed: Vec<serde_json::Value>,
    /// Every table compared.
    pub tables: Vec<TableMatch>,
    /// Seconds the rebuild took.
    pub seconds: f64,
}

impl RebuildDone {
    /// Whether every table matches the run.
    pub fn all_match(&self) -> bool {
        self.tables.iter().all(|t| t.matches)
    }
}

/// Tables a rebuild copies from the live warehouse rather than recomputes.
fn copied(table: &str) -> bool {
    table.starts_with("bronze_") || table == scoring::MODELS
}

/// Tables a rebuild does not compare: gold's own bookkeeping (`_` names:
/// the ledger, the ingest checkpoint, `_dim_changes`), which records Delta
/// version numbers that differ between a warehouse and its rebuild (a
/// `gold maintain` in the live history adds versions, for one).
fn bookkeeping(table: &str) -> bool {
    table.starts_with('_')
}

fn read_err(table: &str) -> impl FnOnce(deltalake::arrow::error::ArrowError) -> Error + use<> {
    let table = table.to_string();
    move |source| Error::Read { table, source }
}

/// The content hash of `table` at `version` (the latest if `None`), and
/// its row count.
async fn content_hash(warehouse: &Warehouse, table: &str, version: Option<i64>) -> Result<(String, usize), Error> {
    let name = TableName::new(table)?;
    let batches = warehouse.scan(&name, version).await?;
    let rows = RowSet::from_batches(&batches, &[]).map_err(read_err(table))?;
    Ok((rows.content_hash(), rows.rows.len()))
}

/// Brings into `out` what run `r` of the live warehouse read and did not
/// compute: the bronze batches ingested by the end of `r`, and the fraud
/// models stored by then.
async fn copy_inputs(live: &Warehouse, out: &Warehouse, r: &RunRecord, run: &RunContext) -> Result<(), Error> {
    for (table, &version) in r.state.iter().filter(|(t, _)| copied(t)) {
        let name = TableName::new(table)?;
        let commit = Commit::new(run, "rebuild copy");
        if table == scoring::MODELS {
            let rows = live.scan(&name, Some(version)).await?;
            let current = match out.load(&name).await? {
                Some(_) => content_hash(out, table, None).await?.0,
                None => String::new(),
            };
            if RowSet::from_batches(&rows, &[]).map_err(read_err(table))?.content_hash() != current {
                out.overwrite(&name, rows, &commit).await?;
            }
            continue;
        }
        let done = match out.load(&name).await? {
            Some(_) => {
                let ids = out.scan_columns(&name, None, &["_batch_id"]).await?;
                let ids = RowSet::from_batches(&ids, &[]).map_err(read_err(table))?;
                ids.rows.into_iter().filter_map(|r| r.into_iter().next().flatten()).max()
            }
            None => None,
        };
        let filter = done.map(|d| format!("_batch_id > '{}'", d.replace('\'', "''")));
        let rows = live.scan_where(&name, Some(version), filter.as_deref()).await?;
        if rows.iter().any(|b| b.num_rows() > 0) {
            // The live table's layout: partitioned as it was created.
            let parts = live.partition_columns(&name).await?.unwrap_or_default();
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            out.append(&name, rows, &commit.partitioned_by(&parts)).await?;
        }
    }
    Ok(())
}

/// The stages a past run ran, from its summary, without ingest.
fn replayed_stages(r: &RunRecord) -> Vec<Stage> {
    let summary = r.summary_json();
    let names: Vec<&str> =
        summary["stages"].as_array().into_iter().flatten().filter_map(|s| s["stage"].as_str()).collect();
    Stage::ALL.into_iter().filter(|s| *s != Stage::Ingest && names.contains(&s.name())).collect()
}

/// What the run's clock read: recorded in its summary; midnight of its
/// date for runs recorded before that.
fn clock_of(r: &RunRecord) -> RunClock {
    let summary = r.summary_json();
    let now = summary["clock_now"]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|| r.logical_date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    RunClock::replaying(r.logical_date, now)
}

fn kind_of(r: &RunRecord) -> Option<RunKind> {
    Some(match r.kind.as_str() {
        "build" => RunKind::Build,
        "demo" => RunKind::Demo,
        "score" => RunKind::Score,
        "train" => RunKind::Train,
        "rollback" => RunKind::Rollback,
        _ => return None,
    })
}

/// The live run the rebuild reproduces: the last successful build of
/// `as_of` or before it.
fn target_run<'a>(runs: &'a [RunRecord], as_of: NaiveDate, live: &Warehouse) -> Result<&'a RunRecord, Error> {
    let builds = |r: &&RunRecord| {
        r.status == RunStatus::Succeeded && (r.kind == "build" || r.kind == "demo") && r.logical_date <= as_of
    };
    let target = runs.iter().filter(builds).max_by_key(|r| (r.logical_date, r.run_id)).ok_or_else(|| {
        Error::Request(format!("no build succeeded for {as_of} or before it in {} (see gold runs)", live.root()))
    })?;
    if target.state.is_empty() {
        return Err(Error::Request(format!(
            "run {} was recorded before gold kept every table's version in the ledger, so it cannot be rebuilt",
            target.run_id
        )));
    }
    Ok(target)
}

/// The rebuild's location: on the live warehouse's object store, or a
/// local folder; never the live warehouse, and empty.
async fn open_out(live: &Warehouse, uri: &str) -> Result<Warehouse, Error> {
    let out = Warehouse::open_with(uri, live.storage_options().clone())?;
    if out.root() == live.root() {
        return Err(Error::Request("--out is the live warehouse; rebuild never writes there".into()));
    }
    let local_files =
        out.root().to_file_path().is_ok_and(|dir| std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()));
    if local_files || !out.tables().await?.is_empty() {
        return Err(Error::Request(format!("{uri}: not empty; rebuild writes into an empty or new location")));
    }
    Ok(out)
}

/// Replays rollback run `r` into `out`: the state of the run it rolled
/// back to, as the rebuild left it.
async fn replay_rollback(
    out: &Warehouse,
    r: &RunRecord,
    run: &RunContext,
    states: &HashMap<RunId, BTreeMap<String, i64>>,
) -> Result<(), Error> {
    let to = r.summary_json()["rollback"]["to_run"].as_i64().ok_or_else(|| {
        Error::Request(format!(
            "run {} rolled back a single table; a rebuild cannot replay that, so rebuild a date after it",
            r.run_id
        ))
    })?;
    let state = states.get(&RunId(to)).ok_or_else(|| {
        Error::Request(format!(
            "run {} rolled back to run {to}, which the rebuild did not replay; rebuild a date after it",
            r.run_id
        ))
    })?;
    out.restore_state(state, &[LEDGER_TABLE], &Commit::new(run, "rollback")).await?;
    Ok(())
}

/// Replays run `r` of kind `kind` into `out`; returns what it replayed.
async fn replay(
    live: &Warehouse,
    out: &Warehouse,
    models: &Models,
    r: &RunRecord,
    run: &RunContext,
) -> Result<String, Error> {
    copy_inputs(live, out, r, run).await?;
    let stages = if run.kind == RunKind::Score { vec![Stage::Score] } else { replayed_stages(r) };
    if run.kind != RunKind::Train {
        let options = facts::FactOptions::default();
        run_stages(out, run, models, Path::new(""), &stages, options, scoring::Training::Never).await?;
    }
    Ok(format!("{stages:?}").to_lowercase())
}

/// `gold rebuild`: see the module's documentation. A rebuild whose tables
/// differ from the run is returned, not an error: the caller shows it.
pub async fn rebuild(live: &Warehouse, models: &Models, request: &RebuildRequest) -> Result<RebuildDone, Error> {
    let started = std::time::Instant::now();
    let runs = Ledger::new(live)
        .runs()
        .await
        .map_err(|source| Error::Ledger { what: "cannot read the run ledger", source })?;
    let target = target_run(&runs, request.as_of, live)?;
    let out_uri = request.out.clone().unwrap_or_else(|| format!("rebuild-{}", request.as_of));
    let out = open_out(live, &out_uri).await?;
    let out_ledger = Ledger::new(&out);
    let mut states: HashMap<RunId, BTreeMap<String, i64>> = HashMap::new();
    let mut replayed = Vec::new();
    for r in runs.iter().filter(|r| r.run_id <= target.run_id && r.status == RunStatus::Succeeded) {
        let Some(kind) = kind_of(r) else {
            // A run that changed no content (maintain): its state is the
            // rebuilt warehouse as it stands, for a later rollback to it.
            states.insert(r.run_id, out.tables().await?);
            continue;
        };
        let run = RunContext { id: r.run_id, kind, clock: clock_of(r) };
        let step = match kind {
            RunKind::Rollback => replay_rollback(&out, r, &run, &states).await.map(|()| "rollback".to_string()),
            _ => replay(live, &out, models, r, &run).await,
        }
        .map_err(|e| Error::Replay {
            run: r.run_id.0,
            kind: r.kind.clone(),
            date: r.logical_date,
            source: Box::new(e),
        })?;
        out_ledger.finish(&run, storage::RunRecord::succeeded(&run, CODE_VERSION)).await?;
        states.insert(r.run_id, out.tables().await?);
        replayed.push(json!({"run_id": r.run_id, "kind": r.kind, "logical_date": r.logical_date, "replayed": step}));
    }
    let tables = compare(live, &out, target).await?;
    Ok(RebuildDone {
        target: target.clone(),
        out: out.root().to_string(),
        replayed,
        tables,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Every table the target run left, but the copied inputs and the
/// bookkeeping, against its rebuilt twin.
async fn compare(live: &Warehouse, out: &Warehouse, target: &RunRecord) -> Result<Vec<TableMatch>, Error> {
    let rebuilt = out.tables().await?;
    let mut tables = Vec::new();
    for (table, &version) in target.state.iter().filter(|(t, _)| !copied(t) && !bookkeeping(t)) {
        let (live_hash, live_rows) = content_hash(live, table, Some(version)).await?;
        let (rebuilt_hash, rebuilt_rows) = match rebuilt.get(table) {
            Some(_) => content_hash(out, table, None).await?,
            None => ("(missing)".to_string(), 0),
        };
        let matches = live_hash == rebuilt_hash;
        tables.push(TableMatch {
            table: table.clone(),
            live_version: version,
            live_hash,
            live_rows,
            rebuilt_hash,
            rebuilt_rows,
            matches,
        });
    }
    Ok(tables)
}
