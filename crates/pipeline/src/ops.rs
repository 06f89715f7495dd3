//! The other commands that write, each recorded as a run of its own kind:
//! rollback, maintain, train and score.

use serde_json::json;
use storage::{
    Commit, LEDGER_TABLE, Ledger, RunClock, RunContext, RunId, RunKind, RunRecord, RunStatus, TableName, Warehouse,
};

use crate::stages::{StageDone, TableWritten};
use crate::{Error, finish_run};

async fn begin(warehouse: &Warehouse, kind: RunKind, clock: RunClock) -> Result<RunContext, Error> {
    Ledger::new(warehouse)
        .begin(kind, clock)
        .await
        .map_err(|source| Error::Ledger { what: "cannot start a run", source })
}

async fn runs(warehouse: &Warehouse) -> Result<Vec<RunRecord>, Error> {
    Ledger::new(warehouse).runs().await.map_err(|source| Error::Ledger { what: "cannot read the run ledger", source })
}

/// What a rollback goes back to.
#[derive(Clone, Debug)]
pub enum RollbackTarget {
    /// Every table as this run left it.
    Run(i64),
    /// One table, at this version.
    Table {
        /// The table.
        table: String,
        /// Its version to go back to.
        version: i64,
    },
}

/// A rollback that succeeded.
#[derive(Debug)]
pub struct RollbackDone {
    /// The rollback's own run.
    pub run: RunContext,
    /// What it rolled back to, as the run summary records it.
    pub what: serde_json::Value,
    /// The tables restored, with their new versions.
    pub restored: Vec<(String, i64)>,
}

/// A rollback target, checked.
enum Checked {
    Run(RunRecord),
    Table(TableName, i64),
}

/// Checks a rollback target before the warehouse is taken, so a typo
/// leaves no run: the run succeeded and recorded its state, or the table
/// and version exist.
async fn check_target(warehouse: &Warehouse, target: &RollbackTarget) -> Result<Checked, Error> {
    match target {
        RollbackTarget::Run(id) => {
            let run = Ledger::new(warehouse).succeeded_run(RunId(*id)).await?;
            if run.state.is_empty() {
                return Err(Error::Request(format!(
                    "run {id} was recorded before gold kept every table's version in the ledger; roll back \
                     single tables with --table and --to-version instead"
                )));
            }
            Ok(Checked::Run(run))
        }
        RollbackTarget::Table { table, version } => {
            if table == LEDGER_TABLE {
                return Err(Error::Request(format!("{LEDGER_TABLE} is the run ledger; it only grows")));
            }
            let name = TableName::new(table).map_err(|e| Error::Request(e.to_string()))?;
            warehouse.load_version(&name, *version).await?;
            Ok(Checked::Table(name, *version))
        }
    }
}

/// `gold rollback`: every table back to a run's versions, or one table to
/// a version, each as a new Delta version (nothing is deleted), recorded
/// as a run of kind rollback.
pub async fn rollback(warehouse: &Warehouse, target: &RollbackTarget) -> Result<RollbackDone, Error> {
    let checked = check_target(warehouse, target).await?;
    let run = begin(warehouse, RunKind::Rollback, RunClock::from_wall_clock()).await?;
    let (outcome, what) = match &checked {
        Checked::Run(to) => {
            let commit = Commit::new(&run, "rollback").with_metadata("to_run", json!(to.run_id.0));
            (warehouse.restore_state(&to.state, &[LEDGER_TABLE], &commit).await, json!({"to_run": to.run_id.0}))
        }
        Checked::Table(name, version) => {
            let commit = Commit::new(&run, "rollback").with_metadata("to_version", json!(version));
            let restored = warehouse
                .restore(name, *version, &commit)
                .await
                .map(|v| v.map(|v| (name.to_string(), v)).into_iter().collect());
            (restored, json!({"table": name.as_str(), "to_version": version}))
        }
    };
    let outcome = outcome.map_err(Error::Rollback);
    let summary = |restored: &Vec<(String, i64)>| json!({"run_id": run.id, "kind": "rollback", "logical_date": run.clock.logical_date(), "rollback": what, "restored": restored});
    let tables = |restored: &Vec<(String, i64)>| restored.iter().map(|(t, v)| TableWritten::new(t, *v, 0)).collect();
    let (restored, _) = finish_run(&Ledger::new(warehouse), &run, outcome, tables, summary).await?;
    Ok(RollbackDone { run, what, restored })
}

/// What `gold maintain` is asked to do.
#[derive(Clone, Debug, Default)]
pub struct MaintainRequest {
    /// Compact small files (Delta OPTIMIZE); dimensions are Z-ordered on
    /// their business key.
    pub optimize: bool,
    /// Delete the files no run of the retention window reads.
    pub vacuum: bool,
    /// The retention window of `vacuum`, in hours.
    pub retain_hours: u32,
    /// Only these tables; empty is every table.
    pub tables: Vec<String>,
}

/// A maintenance run that succeeded.
#[derive(Debug)]
pub struct MaintainDone {
    /// Its run.
    pub run: RunContext,
    /// One document per table: what optimize and vacuum did.
    pub tables: Vec<serde_json::Value>,
}

fn table_failed(doing: &'static str, table: &str) -> impl FnOnce(crate::StageError) -> Error + use<> {
    let table = table.to_string();
    move |source| Error::Table { doing, table, source: Box::new(source) }
}

/// Compacts `table`; a dimension's new version is recorded in
/// `_dim_changes` as changing no interval, or the next facts stage would
/// distrust it and rebuild every fact.
async fn optimize_table(
    warehouse: &Warehouse,
    run: &RunContext,
    dims: &dims::DimCatalog,
    table: &str,
    written: &mut Vec<TableWritten>,
) -> Result<serde_json::Value, Error> {
    let name = TableName::new(table)?;
    let zorder = dims.dims().iter().find(|d| d.table == table).map(|d| d.key.clone());
    let commit = Commit::new(run, "maintain optimize");
    let (version, removed, added) = warehouse
        .optimize(&name, zorder.as_deref(), &commit)
        .await
        .map_err(|e| table_failed("optimizing", table)(e.into()))?;
    if let Some(v) = version {
        written.push(TableWritten::new(table, v, 0));
        if zorder.is_some() {
            dims::record_changes(warehouse, run, table, v as u64, &[])
                .await
                .map_err(|e| table_failed("recording the unchanged intervals of", table)(e.into()))?;
        }
    }
    Ok(json!({"version": version, "files_removed": removed, "files_added": added, "zorder": zorder}))
}

/// `gold maintain`: compacts and vacuums the chosen tables, recorded as a
/// run of kind maintain. Vacuum keeps the versions of every run that ended
/// inside the retention window, and of the last successful run whatever
/// its age.
pub async fn maintain(
    warehouse: &Warehouse,
    dims: &dims::DimCatalog,
    request: &MaintainRequest,
) -> Result<MaintainDone, Error> {
    let all = warehouse.tables().await?;
    if let Some(t) = request.tables.iter().find(|t| !all.contains_key(*t)) {
        return Err(Error::Request(format!("no table {t} in {} (see gold history)", warehouse.root())));
    }
    let tables: Vec<String> =
        all.into_keys().filter(|t| request.tables.is_empty() || request.tables.contains(t)).collect();
    let runs = runs(warehouse).await?;
    let run = begin(warehouse, RunKind::Maintain, RunClock::from_wall_clock()).await?;
    let outcome = async {
        let (mut docs, mut written) = (Vec::new(), Vec::new());
        let retain = chrono::Duration::hours(i64::from(request.retain_hours));
        let since = run.clock.now() - retain;
        let last_good = runs.iter().filter(|r| r.status == RunStatus::Succeeded).max_by_key(|r| r.run_id);
        let keep_runs: Vec<&RunRecord> =
            runs.iter().filter(|r| r.status == RunStatus::Succeeded && r.ended_at >= since).chain(last_good).collect();
        for table in &tables {
            let mut doc = json!({"table": table});
            if request.optimize {
                doc["optimize"] = optimize_table(warehouse, &run, dims, table, &mut written).await?;
            }
            if request.vacuum {
                let keep: Vec<i64> = keep_runs.iter().filter_map(|r| r.state.get(table).copied()).collect();
                let deleted = warehouse
                    .vacuum(&TableName::new(table)?, retain, &keep)
                    .await
                    .map_err(|e| table_failed("vacuuming", table)(e.into()))?;
                doc["vacuum"] = json!({"files_deleted": deleted.len(), "versions_kept": keep});
            }
            docs.push(doc);
        }
        Ok::<_, Error>((docs, written))
    }
    .await;
    let summary = |(docs, _): &(Vec<serde_json::Value>, Vec<TableWritten>)| json!({"run_id": run.id, "kind": "maintain", "logical_date": run.clock.logical_date(), "tables": docs});
    let ((docs, _), _) = finish_run(&Ledger::new(warehouse), &run, outcome, |(_, w)| w.clone(), summary).await?;
    Ok(MaintainDone { run, tables: docs })
}

/// A training run that succeeded.
#[derive(Debug)]
pub struct TrainDone {
    /// Its run.
    pub run: RunContext,
    /// What it trained.
    pub report: scoring::TrainReport,
}

/// `gold train`: fits a fraud model on the facts of the training window
/// before `date` and stores it, recorded as a run of kind train.
pub async fn train(
    warehouse: &Warehouse,
    config: &scoring::ScoringConfig,
    date: Option<chrono::NaiveDate>,
) -> Result<TrainDone, Error> {
    let clock = date.map_or_else(RunClock::from_wall_clock, RunClock::for_date);
    let run = begin(warehouse, RunKind::Train, clock).await?;
    let outcome = scoring::train(warehouse, &run, config).await.map_err(Error::Train);
    let tables = |r: &scoring::TrainReport| {
        r.table_version.map(|v| TableWritten::new(scoring::MODELS, v, 1)).into_iter().collect()
    };
    let summary = |r: &scoring::TrainReport| json!({"run_id": run.id, "kind": "train", "logical_date": run.clock.logical_date(), "train": r});
    let (report, _) = finish_run(&Ledger::new(warehouse), &run, outcome, tables, summary).await?;
    Ok(TrainDone { run, report })
}

/// A scoring run that succeeded.
#[derive(Debug)]
pub struct ScoreDone {
    /// Its run.
    pub run: RunContext,
    /// The score stage.
    pub stage: StageDone,
}

/// `gold score`: the score stage alone with the model current at `date`
/// (never training one), recorded as a run of kind score.
pub async fn score(
    warehouse: &Warehouse,
    config: &scoring::ScoringConfig,
    date: Option<chrono::NaiveDate>,
) -> Result<ScoreDone, Error> {
    let clock = date.map_or_else(RunClock::from_wall_clock, RunClock::for_date);
    let run = begin(warehouse, RunKind::Score, clock).await?;
    let outcome = crate::stages::score(warehouse, &run, config, scoring::Training::Never).await;
    let summary = |s: &StageDone| json!({"run_id": run.id, "kind": "score", "logical_date": run.clock.logical_date(), "stages": [s.doc]});
    let (stage, _) = finish_run(&Ledger::new(warehouse), &run, outcome, |s| s.tables.clone(), summary).await?;
    Ok(ScoreDone { run, stage })
}
