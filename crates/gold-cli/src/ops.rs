//! The audit commands: history, rollback, rebuild and diff.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde_json::json;
use storage::{
    Commit, LEDGER_TABLE, Ledger, RowSet, RunClock, RunContext, RunId, RunKind, RunRecord, RunStatus, TableName,
    Warehouse, row_diff,
};

use crate::UserError;
use crate::cli::{DiffArgs, HistoryArgs, MaintainArgs, RebuildArgs, RollbackArgs, Stage};
use crate::commands::{CODE_VERSION, Models, finish_run, run_stages};
use crate::config::{WarehouseLocation, open_warehouse};
use crate::output::Printer;

/// Rows a commit added, from Delta's operation metrics (the names differ
/// by operation).
fn rows_added(metrics: &serde_json::Value) -> Option<i64> {
    ["num_added_rows", "numOutputRows", "num_copied_rows"].iter().find_map(|k| metrics.get(*k)?.as_i64())
}

fn ms_to_text(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

pub(crate) async fn history(
    args: HistoryArgs,
    location: &WarehouseLocation,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let warehouse = open_warehouse(location)?;
    let mut text = String::new();
    if let Some(table) = &args.table {
        let name = TableName::new(table).map_err(|e| UserError(e.to_string()))?;
        let entries = warehouse.history(&name, args.limit).await?;
        let _ = writeln!(
            text,
            "{:>7}  {:<19}  {:<12} {:>4}  {:<10} {:<28} {:>10}",
            "version", "committed (UTC)", "operation", "run", "run kind", "gold operation", "rows added"
        );
        for e in &entries {
            let gold = |k: &str| e.gold.get(&format!("gold.{k}")).cloned().unwrap_or(serde_json::Value::Null);
            let plain = |v: serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
            let _ = writeln!(
                text,
                "{:>7}  {:<19}  {:<12} {:>4}  {:<10} {:<28} {:>10}",
                e.version,
                ms_to_text(e.timestamp_ms),
                e.operation,
                plain(gold("run_id")).replace("null", "-"),
                plain(gold("run_kind")).replace("null", "-"),
                plain(gold("operation")).replace("null", "-"),
                rows_added(&e.metrics).map_or_else(|| "-".into(), |n| n.to_string()),
            );
        }
        printer.result(json!({"table": table, "versions": entries}), text);
        return Ok(());
    }
    // Every run, with the Delta versions it committed in every table
    // (including those of runs that died before the ledger heard back).
    let runs = Ledger::new(&warehouse).runs().await.context("cannot read the run ledger")?;
    let mut commits: BTreeMap<i64, Vec<serde_json::Value>> = BTreeMap::new();
    for table in warehouse.tables().await?.into_keys().filter(|t| t != LEDGER_TABLE) {
        let name = TableName::new(&table)?;
        for e in warehouse.history(&name, None).await? {
            let Some(run) = e.gold.get("gold.run_id").and_then(serde_json::Value::as_i64) else { continue };
            commits.entry(run).or_default().push(json!({
                "table": table, "version": e.version, "operation": e.operation,
                "gold_operation": e.gold.get("gold.operation"), "rows_added": rows_added(&e.metrics),
                "committed_ms": e.timestamp_ms,
            }));
        }
    }
    let mut docs = Vec::new();
    let mut shown: Vec<&RunRecord> = runs.iter().collect();
    if let Some(limit) = args.limit {
        shown = shown.split_off(shown.len().saturating_sub(limit));
    }
    for r in shown {
        let mut mine = commits.remove(&r.run_id.0).unwrap_or_default();
        mine.sort_by_key(|c| (c["table"].as_str().unwrap_or("").to_string(), c["version"].as_i64()));
        let _ = writeln!(
            text,
            "run {} {} for {} {} (started {} UTC){}",
            r.run_id,
            r.kind,
            r.logical_date,
            r.status,
            r.started_at.format("%Y-%m-%d %H:%M:%S"),
            r.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
        );
        for c in &mine {
            let _ = writeln!(
                text,
                "    {}@v{} {} ({}){}",
                c["table"].as_str().unwrap_or(""),
                c["version"],
                c["operation"].as_str().unwrap_or(""),
                c["gold_operation"].as_str().unwrap_or("-"),
                c["rows_added"].as_i64().map(|n| format!(", {n} rows added")).unwrap_or_default()
            );
        }
        docs.push(json!({
            "run_id": r.run_id, "kind": r.kind, "logical_date": r.logical_date, "status": r.status,
            "started_at": r.started_at, "ended_at": r.ended_at, "message": r.message, "commits": mine,
        }));
    }
    if runs.is_empty() {
        let _ = writeln!(text, "no runs recorded in {}", warehouse.root());
    }
    printer.result(json!({"warehouse": warehouse.root().as_str(), "runs": docs}), text);
    Ok(())
}

pub(crate) async fn rollback(
    args: RollbackArgs,
    location: &WarehouseLocation,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let warehouse = open_warehouse(location)?;
    let ledger = Ledger::new(&warehouse);
    // Check the target before taking the warehouse, so a typo leaves no run.
    let target = match (args.to_run, &args.table, args.to_version) {
        (Some(id), _, _) => {
            let run = ledger.succeeded_run(RunId(id)).await?;
            if run.state.is_empty() {
                return Err(UserError(format!(
                    "run {id} was recorded before gold kept every table's version in the ledger; roll back \
                     single tables with --table and --to-version instead"
                ))
                .into());
            }
            Ok(run)
        }
        (None, Some(table), Some(version)) => {
            if table == LEDGER_TABLE {
                return Err(UserError(format!("{LEDGER_TABLE} is the run ledger; it only grows")).into());
            }
            let name = TableName::new(table).map_err(|e| UserError(e.to_string()))?;
            warehouse.load_version(&name, version).await?;
            Err((name, version))
        }
        _ => return Err(UserError("give --to-run RUN, or --table T with --to-version N".into()).into()),
    };
    let run = ledger.begin(RunKind::Rollback, RunClock::from_wall_clock()).await.context("cannot start a run")?;
    let (outcome, what) = match &target {
        Ok(to) => {
            let commit = Commit::new(&run, "rollback").with_metadata("to_run", json!(to.run_id.0));
            let restored = warehouse.restore_state(&to.state, &[LEDGER_TABLE], &commit).await;
            (restored, json!({"to_run": to.run_id.0}))
        }
        Err((name, version)) => {
            let commit = Commit::new(&run, "rollback").with_metadata("to_version", json!(version));
            let restored = warehouse
                .restore(name, *version, &commit)
                .await
                .map(|v| v.map(|v| (name.to_string(), v)).into_iter().collect());
            (restored, json!({"table": name.as_str(), "to_version": version}))
        }
    };
    let outcome = outcome.context("rollback");
    let summary = |restored: &Vec<(String, i64)>| json!({"run_id": run.id, "kind": "rollback", "logical_date": run.clock.logical_date(), "rollback": what, "restored": restored});
    let tables = |restored: &Vec<(String, i64)>| restored.iter().map(|(t, v)| (t.clone(), *v, 0)).collect();
    let (restored, _) = finish_run(&ledger, &run, outcome, tables, summary).await?;
    let mut text = match &target {
        Ok(to) => format!("run {} (rollback): the warehouse is back as run {} left it\n", run.id, to.run_id),
        Err((name, version)) => format!("run {} (rollback): {name} is back at its version {version}\n", run.id),
    };
    for (t, v) in &restored {
        let _ = writeln!(text, "  restored {t} as v{v}");
    }
    if restored.is_empty() {
        let _ = writeln!(text, "  nothing to restore: every table already was at that state");
    }
    let _ = writeln!(text, "undo with: gold rollback --to-run <the run before this one> (see gold runs)");
    printer.result(json!({"status": "ok", "run_id": run.id, "rollback": what, "restored": restored}), text);
    Ok(())
}

pub(crate) async fn diff(args: DiffArgs, location: &WarehouseLocation, printer: &mut Printer) -> anyhow::Result<()> {
    let warehouse = open_warehouse(location)?;
    let name = TableName::new(&args.table).map_err(|e| UserError(e.to_string()))?;
    let latest = warehouse
        .load(&name)
        .await?
        .and_then(|t| t.version())
        .ok_or_else(|| storage::Error::NoSuchTable { table: args.table.clone() })? as i64;
    let to = args.to.unwrap_or(latest);
    let before_batches = warehouse.scan(&name, Some(args.from)).await?;
    let after_batches = warehouse.scan(&name, Some(to)).await?;
    let first_column = after_batches.first().or(before_batches.first()).map(|b| b.schema().field(0).name().clone());
    let key: Vec<String> = if args.key.is_empty() { first_column.into_iter().collect() } else { args.key.clone() };
    let before = RowSet::from_batches(&before_batches, &[])?;
    let after = RowSet::from_batches(&after_batches, &[])?;
    drop((before_batches, after_batches));
    for k in &key {
        if !after.columns.contains(k) && !before.columns.contains(k) {
            return Err(UserError(format!("{}: no key column {k}", args.table)).into());
        }
    }
    let (removed, added) = row_diff(&before, &after);
    let key_of = |set: &RowSet, i: usize| -> Vec<Option<String>> {
        key.iter().map(|k| set.columns.iter().position(|c| c == k).and_then(|p| set.rows[i][p].clone())).collect()
    };
    let mut removed_by_key: HashMap<Vec<Option<String>>, Vec<usize>> = HashMap::new();
    for &i in &removed {
        removed_by_key.entry(key_of(&before, i)).or_default().push(i);
    }
    let mut changed = Vec::new();
    let mut only_added = Vec::new();
    for &i in &added {
        match removed_by_key.get_mut(&key_of(&after, i)).and_then(Vec::pop) {
            Some(j) => changed.push((j, i)),
            None => only_added.push(i),
        }
    }
    let mut only_removed: Vec<usize> = removed_by_key.into_values().flatten().collect();
    only_removed.sort_unstable();
    let change_doc = |(j, i): (usize, usize)| {
        let old = before.row_json(j);
        let new = after.row_json(i);
        let columns: serde_json::Map<String, serde_json::Value> = new
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(c, v)| old.get(c.as_str()) != Some(v))
            .map(|(c, v)| (c.clone(), json!({"from": old.get(c.as_str()), "to": v})))
            .collect();
        json!({"key": key_of(&after, i), "columns": columns})
    };
    let doc = json!({
        "table": args.table, "from": args.from, "to": to, "key": key,
        "rows_before": before.rows.len(), "rows_after": after.rows.len(),
        "added": only_added.len(), "removed": only_removed.len(), "changed": changed.len(),
        "added_rows": only_added.iter().take(args.limit).map(|&i| after.row_json(i)).collect::<Vec<_>>(),
        "removed_rows": only_removed.iter().take(args.limit).map(|&i| before.row_json(i)).collect::<Vec<_>>(),
        "changed_rows": changed.iter().take(args.limit).map(|&p| change_doc(p)).collect::<Vec<_>>(),
    });
    let mut text = format!(
        "{} v{} → v{}: {} rows → {}; {} added, {} removed, {} changed (key {})\n",
        args.table,
        args.from,
        to,
        before.rows.len(),
        after.rows.len(),
        only_added.len(),
        only_removed.len(),
        changed.len(),
        key.join(", ")
    );
    for (label, rows) in
        [("added", &doc["added_rows"]), ("removed", &doc["removed_rows"]), ("changed", &doc["changed_rows"])]
    {
        for row in rows.as_array().into_iter().flatten() {
            let _ = writeln!(text, "  {label}: {row}");
        }
    }
    printer.result(doc, text);
    Ok(())
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

/// The content hash of `table` at `version` (the latest if `None`), and
/// its row count.
async fn content_hash(warehouse: &Warehouse, table: &str, version: Option<i64>) -> anyhow::Result<(String, usize)> {
    let name = TableName::new(table)?;
    let batches = warehouse.scan(&name, version).await?;
    let rows = RowSet::from_batches(&batches, &[]).with_context(|| format!("reading {table}"))?;
    Ok((rows.content_hash(), rows.rows.len()))
}

/// Brings into `out` what run `r` of the live warehouse read and did not
/// compute: the bronze batches ingested by the end of `r`, and the fraud
/// models stored by then.
async fn copy_inputs(live: &Warehouse, out: &Warehouse, r: &RunRecord, run: &RunContext) -> anyhow::Result<()> {
    for (table, &version) in r.state.iter().filter(|(t, _)| copied(t)) {
        let name = TableName::new(table)?;
        let commit = Commit::new(run, "rebuild copy");
        if table == scoring::MODELS {
            let rows = live.scan(&name, Some(version)).await?;
            let current = match out.load(&name).await? {
                Some(_) => content_hash(out, table, None).await?.0,
                None => String::new(),
            };
            if RowSet::from_batches(&rows, &[])?.content_hash() != current {
                out.overwrite(&name, rows, &commit).await?;
            }
            continue;
        }
        let done = match out.load(&name).await? {
            Some(_) => {
                let ids = RowSet::from_batches(&out.scan_columns(&name, None, &["_batch_id"]).await?, &[])?;
                ids.rows.into_iter().filter_map(|r| r.into_iter().next().flatten()).max()
            }
            None => None,
        };
        let filter = done.map(|d| format!("_batch_id > '{}'", d.replace('\'', "''")));
        let rows = live.scan_where(&name, Some(version), filter.as_deref()).await?;
        if rows.iter().any(|b| b.num_rows() > 0) {
            out.append(&name, rows, &commit.partitioned_by(&["_ingest_date"])).await?;
        }
    }
    Ok(())
}

/// The stages a past run ran, from its summary, without ingest.
fn replayed_stages(r: &RunRecord) -> Vec<Stage> {
    let summary = r.summary_json();
    let names: Vec<&str> =
        summary["stages"].as_array().into_iter().flatten().filter_map(|s| s["stage"].as_str()).collect();
    [
        ("silver", Stage::Silver),
        ("dims", Stage::Dims),
        ("facts", Stage::Facts),
        ("score", Stage::Score),
        ("aggregates", Stage::Aggregates),
    ]
    .into_iter()
    .filter(|(n, _)| names.contains(n))
    .map(|(_, s)| s)
    .collect()
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

pub(crate) async fn rebuild(
    args: RebuildArgs,
    location: &WarehouseLocation,
    catalog: &ingest::SourceCatalog,
    models: &Models,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let live = open_warehouse(location)?;
    let runs = Ledger::new(&live).runs().await.context("cannot read the run ledger")?;
    let builds = |r: &&RunRecord| {
        r.status == RunStatus::Succeeded && (r.kind == "build" || r.kind == "demo") && r.logical_date <= args.as_of
    };
    let target = runs.iter().filter(builds).max_by_key(|r| (r.logical_date, r.run_id)).ok_or_else(|| {
        UserError(format!("no build succeeded for {} or before it in {} (see gold runs)", args.as_of, live.root()))
    })?;
    if target.state.is_empty() {
        return Err(UserError(format!(
            "run {} was recorded before gold kept every table's version in the ledger, so it cannot be rebuilt",
            target.run_id
        ))
        .into());
    }
    let out_uri = args.out.clone().unwrap_or_else(|| format!("rebuild-{}", args.as_of));
    // The target is on the live warehouse's object store, or a local folder.
    let out = Warehouse::open_with(&out_uri, live.storage_options().clone())?;
    if out.root() == live.root() {
        return Err(UserError("--out is the live warehouse; rebuild never writes there".into()).into());
    }
    let local_files =
        out.root().to_file_path().is_ok_and(|dir| std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()));
    if local_files || !out.tables().await?.is_empty() {
        return Err(UserError(format!("{out_uri}: not empty; rebuild writes into an empty or new location")).into());
    }
    let out_ledger = Ledger::new(&out);
    // Replay every successful run up to the target, in order, with its own
    // id and clock: the dimension history then grows as it did.
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
            RunKind::Rollback => {
                let summary = r.summary_json();
                let to = summary["rollback"]["to_run"].as_i64().ok_or_else(|| {
                    UserError(format!(
                        "run {} rolled back a single table; a rebuild cannot replay that, so rebuild a date after it",
                        r.run_id
                    ))
                })?;
                let state = states.get(&RunId(to)).cloned().ok_or_else(|| {
                    UserError(format!(
                        "run {} rolled back to run {to}, which the rebuild did not replay; rebuild a date after it",
                        r.run_id
                    ))
                })?;
                let commit = Commit::new(&run, "rollback");
                out.restore_state(&state, &[LEDGER_TABLE], &commit).await?;
                "rollback".to_string()
            }
            _ => {
                copy_inputs(&live, &out, r, &run)
                    .await
                    .with_context(|| format!("copying run {}'s inputs", r.run_id))?;
                let stages = if kind == RunKind::Score { vec![Stage::Score] } else { replayed_stages(r) };
                if kind != RunKind::Train {
                    run_stages(
                        &out,
                        &run,
                        catalog,
                        models,
                        Path::new(""),
                        &stages,
                        facts::FactOptions::default(),
                        scoring::Training::Never,
                    )
                    .await
                    .with_context(|| format!("replaying run {} ({}, {})", r.run_id, r.kind, r.logical_date))?;
                }
                format!("{:?}", stages).to_lowercase()
            }
        };
        out_ledger.finish(&run, RunRecord::succeeded(&run, CODE_VERSION)).await?;
        states.insert(r.run_id, out.tables().await?);
        replayed.push(json!({"run_id": r.run_id, "kind": r.kind, "logical_date": r.logical_date, "replayed": step}));
    }
    // Compare every table the target run left with its rebuilt twin.
    let rebuilt = out.tables().await?;
    let mut tables = Vec::new();
    let mut text = format!(
        "rebuilt {} as run {} ({}, {}) left it, into {}, replaying {} run(s)\n",
        args.as_of,
        target.run_id,
        target.kind,
        target.logical_date,
        out.root(),
        replayed.len()
    );
    let _ = writeln!(text, "  {:<32} {:>9}  {:<16}  {:<16}  match", "table", "rows", "live hash", "rebuilt hash");
    let mut all_match = true;
    for (table, &version) in target.state.iter().filter(|(t, _)| !copied(t) && !bookkeeping(t)) {
        let (live_hash, live_rows) = content_hash(&live, table, Some(version)).await?;
        let (out_hash, out_rows) = match rebuilt.get(table) {
            Some(_) => content_hash(&out, table, None).await?,
            None => ("(missing)".to_string(), 0),
        };
        let matches = live_hash == out_hash;
        all_match &= matches;
        let _ = writeln!(
            text,
            "  {:<32} {:>9}  {:<16}  {:<16}  {}",
            table,
            out_rows,
            &live_hash[..live_hash.len().min(16)],
            &out_hash[..out_hash.len().min(16)],
            if matches { "yes" } else { "NO" }
        );
        tables.push(json!({
            "table": table, "live_version": version, "live_hash": live_hash, "live_rows": live_rows,
            "rebuilt_hash": out_hash, "rebuilt_rows": out_rows, "matches": matches,
        }));
    }
    let _ = writeln!(
        text,
        "{} ({:.1} s)",
        if all_match { "every table matches the run" } else { "SOME TABLES DIFFER from the run" },
        started.elapsed().as_secs_f64()
    );
    printer.result(
        json!({
            "status": if all_match { "ok" } else { "mismatch" }, "as_of": args.as_of, "run_id": target.run_id,
            "out": out.root().as_str(), "all_match": all_match, "tables": tables, "replayed": replayed,
            "seconds": started.elapsed().as_secs_f64(),
        }),
        text,
    );
    if !all_match {
        return Err(UserError(format!("the rebuild of {} differs from run {}", args.as_of, target.run_id)).into());
    }
    Ok(())
}

pub(crate) async fn maintain(
    args: MaintainArgs,
    location: &WarehouseLocation,
    dims: &dims::DimCatalog,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let warehouse = open_warehouse(location)?;
    let ledger = Ledger::new(&warehouse);
    let all = warehouse.tables().await?;
    for t in &args.table {
        if !all.contains_key(t) {
            return Err(UserError(format!("no table {t} in {} (see gold history)", warehouse.root())).into());
        }
    }
    let tables: Vec<String> = all.into_keys().filter(|t| args.table.is_empty() || args.table.contains(t)).collect();
    let runs = ledger.runs().await.context("cannot read the run ledger")?;
    let run = ledger.begin(RunKind::Maintain, RunClock::from_wall_clock()).await.context("cannot start a run")?;
    let outcome = async {
        let mut docs = Vec::new();
        let mut written = Vec::new();
        let retain = chrono::Duration::hours(i64::from(args.retain_hours));
        let since = chrono::Utc::now() - retain;
        // The versions vacuum keeps: every run inside the window, and the
        // last successful run whatever its age.
        let last_good = runs.iter().filter(|r| r.status == RunStatus::Succeeded).max_by_key(|r| r.run_id);
        let keep_runs: Vec<&RunRecord> =
            runs.iter().filter(|r| r.status == RunStatus::Succeeded && r.ended_at >= since).chain(last_good).collect();
        for table in &tables {
            let name = TableName::new(table)?;
            let mut doc = json!({"table": table});
            if args.optimize {
                let zorder = dims.dims().iter().find(|d| &d.table == table).map(|d| d.key.clone());
                let commit = Commit::new(&run, "maintain optimize");
                let (version, removed, added) = warehouse
                    .optimize(&name, zorder.as_deref(), &commit)
                    .await
                    .with_context(|| format!("optimizing {table}"))?;
                if let Some(v) = version {
                    written.push((table.clone(), v, 0));
                    // A dimension's new version changed no interval: say so in
                    // `_dim_changes`, or the next facts stage would distrust it
                    // and rebuild every fact.
                    if zorder.is_some() {
                        dims::record_changes(&warehouse, &run, table, v as u64, &[])
                            .await
                            .with_context(|| format!("recording {table}'s unchanged intervals"))?;
                    }
                }
                doc["optimize"] =
                    json!({"version": version, "files_removed": removed, "files_added": added, "zorder": zorder});
            }
            if args.vacuum {
                let keep: Vec<i64> = keep_runs.iter().filter_map(|r| r.state.get(table).copied()).collect();
                let deleted =
                    warehouse.vacuum(&name, retain, &keep).await.with_context(|| format!("vacuuming {table}"))?;
                doc["vacuum"] = json!({"files_deleted": deleted.len(), "versions_kept": keep});
            }
            docs.push(doc);
        }
        Ok::<_, anyhow::Error>((docs, written))
    }
    .await;
    let summary = |(docs, _): &(Vec<serde_json::Value>, Vec<(String, i64, i64)>)| json!({"run_id": run.id, "kind": "maintain", "logical_date": run.clock.logical_date(), "tables": docs});
    let ((docs, _), _) = finish_run(&ledger, &run, outcome, |(_, w)| w.clone(), summary).await?;
    let mut text = format!("run {} (maintain)\n", run.id);
    let (mut compacted, mut deleted) = (0, 0);
    for d in &docs {
        let mut parts = Vec::new();
        if let Some(o) = d.get("optimize") {
            let removed = o["files_removed"].as_u64().unwrap_or(0);
            compacted += removed;
            if removed > 0 {
                parts.push(format!(
                    "{} files compacted into {}{}",
                    removed,
                    o["files_added"],
                    if o["zorder"].is_array() { " (Z-ordered)" } else { "" }
                ));
            }
        }
        if let Some(v) = d.get("vacuum") {
            let n = v["files_deleted"].as_u64().unwrap_or(0);
            deleted += n;
            if n > 0 {
                parts.push(format!("{n} files deleted"));
            }
        }
        if !parts.is_empty() {
            let _ = writeln!(text, "  {:<32} {}", d["table"].as_str().unwrap_or(""), parts.join(", "));
        }
    }
    let _ = writeln!(text, "{} tables: {compacted} files compacted, {deleted} files deleted", docs.len());
    printer.result(json!({"status": "ok", "run_id": run.id, "tables": docs}), text);
    Ok(())
}
