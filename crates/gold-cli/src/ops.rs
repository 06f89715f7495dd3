//! The audit commands: history, rollback, rebuild and diff.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use anyhow::Context;
use serde_json::json;
use storage::{LEDGER_TABLE, Ledger, RowSet, RunRecord, TableName, row_diff};

use crate::UserError;
use crate::cli::{DiffArgs, HistoryArgs, MaintainArgs, RebuildArgs, RollbackArgs};
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
    let target = match (args.to_run, args.table, args.to_version) {
        (Some(id), _, _) => pipeline::RollbackTarget::Run(id),
        (None, Some(table), Some(version)) => pipeline::RollbackTarget::Table { table, version },
        _ => return Err(UserError("give --to-run RUN, or --table T with --to-version N".into()).into()),
    };
    let done = pipeline::rollback(&warehouse, &target).await?;
    let mut text = match &target {
        pipeline::RollbackTarget::Run(to) => {
            format!("run {} (rollback): the warehouse is back as run {to} left it\n", done.run.id)
        }
        pipeline::RollbackTarget::Table { table, version } => {
            format!("run {} (rollback): {table} is back at its version {version}\n", done.run.id)
        }
    };
    for (t, v) in &done.restored {
        let _ = writeln!(text, "  restored {t} as v{v}");
    }
    if done.restored.is_empty() {
        let _ = writeln!(text, "  nothing to restore: every table already was at that state");
    }
    let _ = writeln!(text, "undo with: gold rollback --to-run <the run before this one> (see gold runs)");
    printer
        .result(json!({"status": "ok", "run_id": done.run.id, "rollback": done.what, "restored": done.restored}), text);
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

pub(crate) async fn rebuild(
    args: RebuildArgs,
    location: &WarehouseLocation,
    models: &pipeline::Models,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let live = open_warehouse(location)?;
    let request = pipeline::RebuildRequest { as_of: args.as_of, out: args.out };
    let done = pipeline::rebuild(&live, models, &request).await?;
    let target = &done.target;
    let mut text = format!(
        "rebuilt {} as run {} ({}, {}) left it, into {}, replaying {} run(s)\n",
        args.as_of,
        target.run_id,
        target.kind,
        target.logical_date,
        done.out,
        done.replayed.len()
    );
    let _ = writeln!(text, "  {:<32} {:>9}  {:<16}  {:<16}  match", "table", "rows", "live hash", "rebuilt hash");
    for t in &done.tables {
        let _ = writeln!(
            text,
            "  {:<32} {:>9}  {:<16}  {:<16}  {}",
            t.table,
            t.rebuilt_rows,
            &t.live_hash[..t.live_hash.len().min(16)],
            &t.rebuilt_hash[..t.rebuilt_hash.len().min(16)],
            if t.matches { "yes" } else { "NO" }
        );
    }
    let all_match = done.all_match();
    let _ = writeln!(
        text,
        "{} ({:.1} s)",
        if all_match { "every table matches the run" } else { "SOME TABLES DIFFER from the run" },
        done.seconds
    );
    printer.result(
        json!({
            "status": if all_match { "ok" } else { "mismatch" }, "as_of": args.as_of, "run_id": target.run_id,
            "out": done.out, "all_match": all_match, "tables": done.tables, "replayed": done.replayed,
            "seconds": done.seconds,
        }),
        text,
    );
    if !all_match {
        return Err(pipeline::Error::RebuildDiffers { as_of: args.as_of, run: target.run_id.0 }.into());
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
    let request = pipeline::MaintainRequest {
        optimize: args.optimize,
        vacuum: args.vacuum,
        retain_hours: args.retain_hours,
        tables: args.table,
    };
    let done = pipeline::maintain(&warehouse, dims, &request).await?;
    let docs = &done.tables;
    let mut text = format!("run {} (maintain)\n", done.run.id);
    let (mut compacted, mut deleted) = (0, 0);
    for d in docs {
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
    printer.result(json!({"status": "ok", "run_id": done.run.id, "tables": docs}), text);
    Ok(())
}
