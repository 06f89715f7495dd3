//! One function per command. Each sets its result on the [`Printer`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use storage::{Ledger, RunClock, RunContext, RunKind, RunRecord, Warehouse};

use crate::UserError;
use crate::cli::{BuildArgs, DemoArgs, GenerateArgs, HardDeletes, IngestArgs, InitArgs, SnapshotArgs, Stage};
use crate::config::{WarehouseLocation, open_warehouse};
use crate::output::Printer;

pub(crate) const CODE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The files `gold init` writes, relative to its folder.
const INIT_FILES: &[(&str, &str)] = &[
    ("gold.toml", include_str!("../templates/gold.toml")),
    ("models/README.md", include_str!("../../../models/README.md")),
    ("models/sources.toml", ingest::DEFAULT_SOURCES),
];

fn progress_bar(total: u64, hidden: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(total),
        if hidden { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() },
    );
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} members ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

async fn run_generator(config: &synth::Config, quiet: bool) -> anyhow::Result<(synth::Summary, f64)> {
    let bar = progress_bar(config.members, quiet);
    bar.set_message("generating");
    let started = std::time::Instant::now();
    let summary = synth::generate(config, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .await
    .with_context(|| format!("cannot generate into {}", config.out.display()))?;
    bar.finish_and_clear();
    Ok((summary, started.elapsed().as_secs_f64()))
}

fn generate_text(s: &synth::Summary, seconds: f64) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "generated {} days ({} .. {}) into {}", s.days, s.first_day, s.last_day, s.out.display());
    let _ = writeln!(
        t,
        "  {} members, {} providers, {} rows in {:.2} s ({} rows/s)",
        thousands(s.members),
        thousands(s.providers),
        thousands(s.rows),
        seconds,
        thousands((s.rows as f64 / seconds.max(1e-9)) as u64)
    );
    for (name, rows) in &s.by_source {
        let _ = writeln!(t, "  {name:<20} {:>12} rows", thousands(*rows));
    }
    let _ = writeln!(t, "  member table: {} rows in legacy.db", thousands(s.member_table_rows));
    let _ = writeln!(
        t,
        "  injected: {} defects (_truth/defects.csv), {} fraud labels (_truth/fraud_labels.csv)",
        thousands(s.defects),
        thousands(s.fraud_labels)
    );
    t
}

pub(crate) async fn generate(args: GenerateArgs, quiet: bool, printer: &mut Printer) -> anyhow::Result<()> {
    let config = synth::Config {
        out: args.out,
        members: args.members,
        days: args.days,
        start_date: args.start_date,
        seed: args.seed,
        defect_rate: args.defect_rate,
        fraud_rate: args.fraud_rate,
        members_db: args.members_db,
        members_table: args.members_table,
        force: args.force,
    };
    let (summary, seconds) = run_generator(&config, quiet).await?;
    let text = generate_text(&summary, seconds);
    printer.result(json!({"status": "ok", "seconds": seconds, "rows_per_second": summary.rows as f64 / seconds.max(1e-9), "summary": summary}), text);
    Ok(())
}

pub(crate) fn init(args: InitArgs, printer: &mut Printer) -> anyhow::Result<()> {
    let mut targets: Vec<(PathBuf, &str)> = INIT_FILES.iter().map(|(rel, body)| (args.dir.join(rel), *body)).collect();
    targets.push((args.dir.join("models/dims.toml"), dims::DEFAULT_DIMS));
    targets.push((args.dir.join("models/scoring.toml"), scoring::config::DEFAULT_SCORING));
    targets
        .extend(quality::DEFAULT_MODELS.iter().map(|(file, body)| (args.dir.join("models/silver").join(file), *body)));
    targets
        .extend(aggregates::DEFAULT_MODELS.iter().map(|(file, body)| (args.dir.join("models/gold").join(file), *body)));
    if !args.force
        && let Some((existing, _)) = targets.iter().find(|(p, _)| p.exists())
    {
        return Err(UserError(format!("{} already exists; pass --force to overwrite", existing.display())).into());
    }
    let mut written = Vec::new();
    for (path, body) in &targets {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(path, body).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path.display().to_string());
    }
    let text = format!("wrote {}\nnext: gold demo, or gold generate --out landing\n", written.join(", "));
    printer.result(json!({"status": "ok", "written": written}), text);
    Ok(())
}

pub(crate) async fn runs(location: &WarehouseLocation, printer: &mut Printer) -> anyhow::Result<()> {
    let warehouse = open_warehouse(location)?;
    let runs = Ledger::new(&warehouse).runs().await.context("cannot read the run ledger")?;
    let mut text = String::new();
    if runs.is_empty() {
        let _ = writeln!(text, "no runs recorded in {}", warehouse.root());
    } else {
        let _ = writeln!(
            text,
            "{:>4}  {:<9} {:<10}  {:<9} {:<20} {:>8}  tables",
            "run", "kind", "date", "status", "started (UTC)", "seconds"
        );
        for r in &runs {
            let tables = if r.tables.is_empty() {
                "-".to_string()
            } else {
                r.tables.iter().map(|t| format!("{}@v{}", t.table, t.version)).collect::<Vec<_>>().join(", ")
            };
            let seconds = (r.ended_at - r.started_at).num_milliseconds() as f64 / 1000.0;
            let _ = writeln!(
                text,
                "{:>4}  {:<9} {:<10}  {:<9} {:<20} {:>8.2}  {}",
                r.run_id.0,
                r.kind,
                r.logical_date,
                r.status,
                r.started_at.format("%Y-%m-%d %H:%M:%S"),
                seconds,
                tables
            );
            if let Some(message) = &r.message {
                let _ = writeln!(text, "      error: {message}");
            }
        }
    }
    let docs: Vec<serde_json::Value> = runs
        .iter()
        .map(|r| {
            let mut doc = serde_json::to_value(r).unwrap_or_default();
            // The summary is stored as text; show it as the JSON it is.
            let summary = r.summary_json();
            if !summary.is_null() {
                doc["summary"] = summary;
            }
            doc
        })
        .collect();
    printer.result(json!({"warehouse": warehouse.root().as_str(), "runs": docs}), text);
    Ok(())
}

/// The ingest stage: bronze from the landing folder, up to the run's date.
async fn ingest_stage(
    warehouse: &Warehouse,
    run: &RunContext,
    catalog: &ingest::SourceCatalog,
    landing: &Path,
) -> anyhow::Result<(ingest::IngestReport, serde_json::Value)> {
    let started = std::time::Instant::now();
    let options = ingest::IngestOptions { landing, up_to: run.clock.logical_date() };
    let report = ingest::ingest(warehouse, run, catalog, &options).await.context("stage ingest")?;
    let (read, written, rescued) = report.totals();
    let stage = json!({
        "stage": "ingest",
        "seconds": started.elapsed().as_secs_f64(),
        "days": report.days,
        "rows_read": read,
        "rows_written": written,
        "rows_rescued": rescued,
        "sources": report.sources,
    });
    Ok((report, stage))
}

fn ingest_text(report: &ingest::IngestReport) -> String {
    let mut t = String::new();
    let _ =
        writeln!(t, "  {:<16} {:>6} {:>12} {:>12} {:>9}  table", "source", "files", "rows read", "written", "rescued");
    for s in &report.sources {
        let table = s.bronze_version.map_or_else(|| "(nothing new)".to_string(), |v| format!("{}@v{v}", s.table));
        let _ = writeln!(
            t,
            "  {:<16} {:>6} {:>12} {:>12} {:>9}  {table}",
            s.source,
            s.read.len(),
            thousands(s.rows_read),
            thousands(s.rows_written),
            thousands(s.rows_rescued)
        );
    }
    let warnings: Vec<&String> = report.sources.iter().flat_map(|s| &s.warnings).collect();
    if !warnings.is_empty() {
        let _ = writeln!(t, "  warnings:");
        for w in warnings {
            let _ = writeln!(t, "    {w}");
        }
    }
    t
}

/// The silver stage's JSON document: the totals, the tables, and each
/// round's day and counts when it ran in rounds.
fn silver_doc(report: &quality::SilverReport, seconds: f64, rounds: &[serde_json::Value]) -> serde_json::Value {
    let totals = report.totals();
    let mut doc = json!({
        "stage": "silver",
        "seconds": seconds,
        "bronze_rows": totals.bronze_rows,
        "accepted": totals.accepted,
        "duplicates": totals.duplicates,
        "quarantined": totals.quarantined,
        "dropped": totals.dropped,
        "tables": report.tables,
    });
    if rounds.len() > 1 {
        doc["rounds"] = json!(rounds);
    }
    doc
}

fn silver_text(report: &quality::SilverReport) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "  {:<24} {:>11} {:>11} {:>10} {:>11} {:>8} {:>9}  table",
        "silver table", "bronze rows", "accepted", "duplicates", "quarantined", "dropped", "released"
    );
    for table in &report.tables {
        let a = quality::BatchAccount::sum(&table.batches);
        let at = table
            .version
            .map_or_else(|| "(nothing new)".to_string(), |v| format!("{} rows @v{v}", thousands(table.rows)));
        let _ = writeln!(
            t,
            "  {:<24} {:>11} {:>11} {:>10} {:>11} {:>8} {:>9}  {at}",
            table.table,
            thousands(a.bronze_rows),
            thousands(a.accepted),
            thousands(a.duplicates),
            thousands(a.quarantined),
            thousands(a.dropped),
            thousands(table.released)
        );
    }
    t
}

/// Records a run's outcome in the ledger: its tables and summary if it
/// succeeded, its error if not (and then returns that error).
pub(crate) async fn finish_run<T>(
    ledger: &Ledger<'_>,
    run: &RunContext,
    outcome: anyhow::Result<T>,
    tables: impl FnOnce(&T) -> Vec<(String, i64, i64)>,
    summary: impl FnOnce(&T) -> serde_json::Value,
) -> anyhow::Result<(T, i64)> {
    match outcome {
        Ok(value) => {
            let mut summary = summary(&value);
            // The instant the run's clock read, so a rebuild can replay it.
            summary["clock_now"] = json!(run.clock.now());
            let mut record = RunRecord::succeeded(run, CODE_VERSION).with_summary(&summary);
            // A run that scored names the model it scored with.
            record.model_version = summary["stages"]
                .as_array()
                .and_then(|stages| stages.iter().find_map(|s| s["score"]["model_version"].as_str()))
                .or_else(|| summary["train"]["model_version"].as_str())
                .map(str::to_string);
            for (table, version, rows) in tables(&value) {
                record = record.with_table(&table, version, rows);
            }
            let version = ledger.finish(run, record).await.context("cannot record the run")?;
            Ok((value, version))
        }
        Err(err) => {
            if let Err(e) = ledger.finish(run, RunRecord::failed(run, CODE_VERSION, &format!("{err:#}"))).await {
                tracing::warn!("cannot record the failed run {}: {e:#}", run.id);
            }
            Err(err)
        }
    }
}

pub(crate) async fn ingest(
    args: IngestArgs,
    location: &WarehouseLocation,
    catalog: &ingest::SourceCatalog,
    retries: u32,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let clock = args.date.map_or_else(RunClock::from_wall_clock, RunClock::for_date);
    let warehouse = open_warehouse(location)?;
    let ledger = Ledger::new(&warehouse);
    let run = ledger.begin(RunKind::Build, clock).await.context("cannot start a run")?;
    let outcome = with_retries(retries, "ingest", || ingest_stage(&warehouse, &run, catalog, &args.landing)).await;
    let summary = |(_, stage): &(ingest::IngestReport, serde_json::Value)| json!({"run_id": run.id, "kind": "build", "logical_date": run.clock.logical_date(), "stages": [stage]});
    let ((report, stage), _) = finish_run(&ledger, &run, outcome, |(r, _)| r.table_versions(), summary).await?;
    let mut text = format!(
        "run {} (build, {}): ingested {} day folder(s) from {}\n",
        run.id,
        run.clock.logical_date(),
        report.days.len(),
        args.landing.display()
    );
    text.push_str(&ingest_text(&report));
    printer.result(json!({"status": "ok", "run_id": run.id, "warehouse": warehouse.root().as_str(), "logical_date": run.clock.logical_date(), "stages": [stage], "tables": report.table_versions()}), text);
    Ok(())
}

/// The models the stages after ingest read, and how often a stage is
/// retried after a transient error (gold.toml's `[build] retries`).
pub(crate) struct Models {
    pub(crate) silver: quality::SilverCatalog,
    pub(crate) dims: dims::DimCatalog,
    pub(crate) scoring: scoring::ScoringConfig,
    pub(crate) aggregates: aggregates::AggregateCatalog,
    pub(crate) retries: u32,
}

/// Whether an error may go away on its own: somewhere in its chain, a
/// connection that was refused, reset, aborted or timed out, or a source
/// database that did not answer.
fn is_transient(err: &anyhow::Error) -> bool {
    use std::io::ErrorKind::*;
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected | TimedOut | Interrupted
            )
        }) || e.downcast_ref::<ingest::Error>().is_some_and(ingest::Error::is_transient)
    })
}

/// Runs `stage` until it succeeds, fails for good, or has been retried
/// `retries` times after transient errors, waiting 1, 2, 4, … (at most 30)
/// seconds in between. Every stage writes exactly once, so a retry redoes
/// only what did not commit.
async fn with_retries<T, F>(retries: u32, name: &str, mut stage: impl FnMut() -> F) -> anyhow::Result<T>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut tries = 0;
    loop {
        match stage().await {
            Err(err) if tries < retries && is_transient(&err) => {
                tries += 1;
                let wait = std::time::Duration::from_secs((1u64 << (tries - 1).min(5)).min(30));
                tracing::warn!(
                    "stage {name}: {err:#}; a transient error, retry {tries} of {retries} in {} s",
                    wait.as_secs()
                );
                tokio::time::sleep(wait).await;
            }
            outcome => return outcome,
        }
    }
}

/// The stages `build` runs today, in order.
const BUILT_STAGES: [Stage; 6] =
    [Stage::Ingest, Stage::Silver, Stage::Dims, Stage::Facts, Stage::Score, Stage::Aggregates];

/// What a run of stages produced: text for people, one JSON document per
/// stage, and the table versions for the ledger.
pub(crate) type StagesDone = (String, Vec<serde_json::Value>, Vec<(String, i64, i64)>);

/// The dims stage's text for people: one line per dimension.
fn dims_text(reports: &[dims::DimReport]) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "  {:<16} {:>9} {:>9} {:>9} {:>9} {:>11}  table",
        "dimension", "inserted", "closed", "deleted", "unchanged", "current"
    );
    for r in reports {
        let m = &r.metrics;
        let at = match (r.version, r.source_version) {
            (Some(v), _) => format!("{}@v{v}", r.table),
            (None, Some(_)) => "(up to date)".to_string(),
            (None, None) => format!("(no {} yet)", r.source),
        };
        let _ = writeln!(
            text,
            "  {:<16} {:>9} {:>9} {:>9} {:>9} {:>11}  {at}",
            r.table,
            thousands(m.inserted),
            thousands(m.closed),
            thousands(m.deleted),
            thousands(m.unchanged),
            thousands(r.current_rows)
        );
    }
    text
}

/// A dims stage's tables for the ledger: (table, version, rows written).
fn dims_tables(reports: &[dims::DimReport]) -> Vec<(String, i64, i64)> {
    reports
        .iter()
        .filter_map(|r| {
            let m = &r.metrics;
            r.version.map(|v| (r.table.clone(), v as i64, (m.inserted + m.closed + m.deleted) as i64))
        })
        .collect()
}

/// The silver stage, then (when `with_dims`) the dims stage, in rounds.
///
/// A nightly run has one landing day to process and runs each stage once.
/// A run that catches up several day folders (a first build of a landing
/// with history, or a build after missed nights) replays them one day at
/// a time, as the nightly runs would have: silver takes that day's batches,
/// with the day as its logical date (its rules' "today", its DQ results'
/// date), and the dimensions merge the result with the day's midnight as
/// the clock of their deletes. So a member's every daily extract becomes
/// its own SCD2 version instead of only the last one. The last round is the
/// run's own day and clock. `rebuild` replays the same rounds, because a
/// batch's day comes from its rows.
async fn silver_and_dims(
    warehouse: &Warehouse,
    run: &RunContext,
    models: &Models,
    with_dims: bool,
) -> anyhow::Result<(String, Vec<serde_json::Value>, Vec<(String, i64, i64)>)> {
    let started = std::time::Instant::now();
    let rounds = with_retries(models.retries, "silver", || async {
        quality::silver_rounds(warehouse, &models.silver).await.context("stage silver")
    })
    .await?;
    let rounds = if rounds.len() > 1 { rounds } else { vec![quality::Round::everything()] };
    let (mut silver, mut silver_rounds, mut silver_seconds) = (quality::SilverReport::default(), Vec::new(), 0.0);
    let (mut dims, mut dims_rounds, mut dims_seconds) = (Vec::<dims::DimReport>::new(), Vec::new(), 0.0);
    // A run of `day`: silver's clock stays the run's (its `_updated_at` is
    // the facts' watermark, which must not go back), the dimensions' is
    // the day's midnight, as a nightly build of that day reads.
    let on_day = |day: chrono::NaiveDate| {
        let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
        let at = |now| RunContext { id: run.id, kind: run.kind, clock: RunClock::replaying(day, now) };
        (at(run.clock.now()), at(midnight.min(run.clock.now())))
    };
    // A silver version of an earlier day that an earlier run left unmerged
    // (it stopped between a round's silver and dims, or ran silver alone)
    // is merged first, at its own day, so that day's versions are not
    // folded into the next.
    if with_dims
        && let Some(day) = dims::unmerged_day(warehouse, &models.dims).await.context("stage dims")?
        && day < run.clock.logical_date()
    {
        let at = std::time::Instant::now();
        let reports = with_retries(models.retries, "dims", || async {
            dims::build_dims(warehouse, &on_day(day).1, &models.dims).await.context("stage dims")
        })
        .await?;
        dims_seconds += at.elapsed().as_secs_f64();
        dims.extend(reports);
    }
    let last = rounds.len() - 1;
    for (i, round) in rounds.iter().enumerate() {
        let (silver_run, dims_run) = match round.day {
            Some(day) if i < last => on_day(day),
            _ => (run.clone(), run.clone()),
        };
        let day = round.day.map(|d| d.to_string());
        let at = std::time::Instant::now();
        let report = with_retries(models.retries, "silver", || async {
            quality::build_silver_round(warehouse, &silver_run, &models.silver, round).await.context("stage silver")
        })
        .await?;
        let seconds = at.elapsed().as_secs_f64();
        silver_seconds += seconds;
        let totals = report.totals();
        silver_rounds.push(json!({"day": day, "seconds": seconds, "bronze_rows": totals.bronze_rows, "accepted": totals.accepted, "quarantined": totals.quarantined}));
        silver.absorb(report);
        storage::failpoint("silver-round");
        if !with_dims {
            continue;
        }
        let at = std::time::Instant::now();
        let reports = with_retries(models.retries, "dims", || async {
            dims::build_dims(warehouse, &dims_run, &models.dims).await.context("stage dims")
        })
        .await?;
        let seconds = at.elapsed().as_secs_f64();
        dims_seconds += seconds;
        dims_rounds.push(json!({"day": day, "seconds": seconds, "dims": reports.iter().map(|r| json!({"table": r.table, "version": r.version, "metrics": r.metrics})).collect::<Vec<_>>()}));
        for r in reports {
            match dims.iter_mut().find(|d| d.table == r.table) {
                Some(d) => d.absorb(&r),
                None => dims.push(r),
            }
        }
    }
    let mut text = String::new();
    match (rounds.first().and_then(|r| r.day), rounds.last().and_then(|r| r.day)) {
        (Some(first), Some(last)) if rounds.len() > 1 => {
            let _ = writeln!(text, "silver: {} rounds, one per landing day from {first} to {last}:", rounds.len());
        }
        _ => text.push_str("silver:\n"),
    }
    text.push_str(&silver_text(&silver));
    let mut docs = vec![silver_doc(&silver, silver_seconds, &silver_rounds)];
    if with_dims {
        text.push_str("dims:\n");
        text.push_str(&dims_text(&dims));
        let mut doc = json!({"stage": "dims", "seconds": dims_seconds, "dims": dims});
        if rounds.len() > 1 {
            doc["rounds"] = json!(dims_rounds);
        }
        docs.push(doc);
    }
    tracing::debug!(rounds = rounds.len(), seconds = started.elapsed().as_secs_f64(), "silver and dims");
    // One entry per table: its last version, over every round.
    let mut tables = silver.table_versions();
    tables.extend(dims_tables(&dims));
    Ok((text, docs, tables))
}

/// The dims stage alone: every dimension whose silver table has a new
/// version.
async fn dims_stage(
    warehouse: &Warehouse,
    run: &RunContext,
    catalog: &dims::DimCatalog,
) -> anyhow::Result<(String, serde_json::Value, Vec<(String, i64, i64)>)> {
    let started = std::time::Instant::now();
    let reports = dims::build_dims(warehouse, run, catalog).await.context("stage dims")?;
    let doc = json!({"stage": "dims", "seconds": started.elapsed().as_secs_f64(), "dims": reports});
    Ok((dims_text(&reports), doc, dims_tables(&reports)))
}

/// The facts stage: the facts whose silver rows or dimension intervals
/// changed, or all of them on a full refresh.
async fn facts_stage(
    warehouse: &Warehouse,
    run: &RunContext,
    catalog: &dims::DimCatalog,
    options: facts::FactOptions,
) -> anyhow::Result<(String, serde_json::Value, Vec<(String, i64, i64)>)> {
    let started = std::time::Instant::now();
    let report = facts::build_facts(warehouse, run, catalog, options).await.context("stage facts")?;
    let mut text = String::new();
    let _ = writeln!(text, "  {:<22} {:>11} {:>9} {:>7}  table", "table", "rebuilt", "restated", "months");
    let mut tables = Vec::new();
    for t in &report.tables {
        let at = match t.version {
            Some(v) => format!("{}@v{v}{}", t.table, if t.full_refresh { " (full)" } else { "" }),
            None => "(up to date)".to_string(),
        };
        let _ = writeln!(
            text,
            "  {:<22} {:>11} {:>9} {:>7}  {at}",
            t.table,
            thousands(t.rebuilt),
            thousands(t.restated),
            t.months_rewritten
        );
        if let Some(v) = t.version {
            tables.push((t.table.clone(), v, t.rebuilt as i64));
        }
    }
    let inferred: Vec<String> =
        report.inferred.iter().filter(|(_, n)| **n > 0).map(|(d, n)| format!("{d} {}", thousands(*n))).collect();
    if !inferred.is_empty() {
        let _ = writeln!(text, "  inferred: {}", inferred.join(", "));
    }
    let doc = json!({"stage": "facts", "seconds": started.elapsed().as_secs_f64(), "facts": report});
    Ok((text, doc, tables))
}

/// The score stage: the model current at the run's date (trained first if
/// none is, or it is stale) applied to every claim and provider.
async fn score_stage(
    warehouse: &Warehouse,
    run: &RunContext,
    config: &scoring::ScoringConfig,
    training: scoring::Training,
) -> anyhow::Result<(String, serde_json::Value, Vec<(String, i64, i64)>)> {
    let started = std::time::Instant::now();
    let report = scoring::score(warehouse, run, config, training).await.context("stage score")?;
    let mut text = String::new();
    let mut tables = Vec::new();
    if let Some(t) = &report.trained {
        let _ = writeln!(text, "{}", train_text(t));
        if let Some(v) = t.table_version {
            tables.push((scoring::MODELS.to_string(), v, 1));
        }
    }
    if report.up_to_date {
        let _ = writeln!(text, "  scores are up to date (model {}, same facts)", report.model_version);
    } else {
        let _ = writeln!(
            text,
            "  model {}: {} claims and {} providers scored, {} claims at or above the referral threshold",
            report.model_version,
            thousands(report.claims_scored as u64),
            thousands(report.providers_scored as u64),
            thousands(report.referrals as u64)
        );
        let _ = writeln!(
            text,
            "  features {:.1} s, apply {:.1} s ({} claims/s)",
            report.features_seconds,
            report.apply_seconds,
            thousands(report.claims_per_second as u64)
        );
    }
    if let Some(v) = report.claims_version {
        tables.push((scoring::FRAUD_SCORES.to_string(), v, report.claims_scored as i64));
    }
    if let Some(v) = report.providers_version {
        tables.push((scoring::PROVIDER_RISK.to_string(), v, report.providers_scored as i64));
    }
    let doc = json!({"stage": "score", "seconds": started.elapsed().as_secs_f64(), "score": report});
    Ok((text, doc, tables))
}

/// The aggregates stage: every SQL model whose query or input tables
/// changed, materialised as its gold_ table.
async fn aggregates_stage(
    warehouse: &Warehouse,
    run: &RunContext,
    models: &Models,
) -> anyhow::Result<(String, serde_json::Value, Vec<(String, i64, i64)>)> {
    let started = std::time::Instant::now();
    let params = aggregates::Params::default().with("referral_threshold", models.scoring.scores.referral_threshold);
    let reports =
        aggregates::build_aggregates(warehouse, run, &models.aggregates, &params).await.context("stage aggregates")?;
    let mut text = String::new();
    let _ = writeln!(text, "  {:<32} {:>9}  table", "aggregate", "rows");
    let mut tables = Vec::new();
    for r in &reports {
        let at = match r.version {
            Some(v) => format!("{}@v{v}", r.table),
            None if r.up_to_date => "(up to date)".to_string(),
            None => format!("(not built: {} not built yet)", r.missing_inputs.join(", ")),
        };
        let rows = if r.version.is_some() { thousands(r.rows) } else { String::new() };
        let _ = writeln!(text, "  {:<32} {:>9}  {at}", r.table, rows);
        if let Some(v) = r.version {
            tables.push((r.table.clone(), v, r.rows as i64));
        }
    }
    let doc = json!({"stage": "aggregates", "seconds": started.elapsed().as_secs_f64(), "aggregates": reports});
    Ok((text, doc, tables))
}

fn train_text(t: &scoring::TrainReport) -> String {
    format!(
        "  trained model {} on {} claims and {} providers serviced {}..{}{}{} ({:.1} s)",
        t.model_version,
        thousands(t.training_claims as u64),
        thousands(t.training_providers as u64),
        t.window_from,
        t.window_to,
        if t.reused_features { " (the features computed for scoring)" } else { "" },
        if t.written { "" } else { "; the same model was already stored" },
        t.seconds
    )
}

/// Runs `stages` (in their order) for `run`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_stages(
    warehouse: &Warehouse,
    run: &RunContext,
    catalog: &ingest::SourceCatalog,
    models: &Models,
    landing: &Path,
    stages: &[Stage],
    facts_options: facts::FactOptions,
    training: scoring::Training,
) -> anyhow::Result<StagesDone> {
    let mut text = String::new();
    let mut docs = Vec::new();
    let mut tables = Vec::new();
    if stages.contains(&Stage::Ingest) {
        let (report, stage) =
            with_retries(models.retries, "ingest", || ingest_stage(warehouse, run, catalog, landing)).await?;
        let _ = writeln!(text, "ingest: {} day folder(s) from {}", report.days.len(), landing.display());
        text.push_str(&ingest_text(&report));
        tables.extend(report.table_versions());
        docs.push(stage);
        storage::failpoint("after-ingest");
    }
    if stages.contains(&Stage::Silver) {
        let (body, stage_docs, written) =
            silver_and_dims(warehouse, run, models, stages.contains(&Stage::Dims)).await?;
        text.push_str(&body);
        tables.extend(written);
        docs.extend(stage_docs);
    } else if stages.contains(&Stage::Dims) {
        let (body, stage, written) =
            with_retries(models.retries, "dims", || dims_stage(warehouse, run, &models.dims)).await?;
        let _ = writeln!(text, "dims:");
        text.push_str(&body);
        tables.extend(written);
        docs.push(stage);
    }
    if stages.contains(&Stage::Facts) {
        let (body, stage, written) =
            with_retries(models.retries, "facts", || facts_stage(warehouse, run, &models.dims, facts_options)).await?;
        let _ = writeln!(text, "facts:");
        text.push_str(&body);
        tables.extend(written);
        docs.push(stage);
    }
    if stages.contains(&Stage::Score) {
        let (body, stage, written) =
            with_retries(models.retries, "score", || score_stage(warehouse, run, &models.scoring, training)).await?;
        let _ = writeln!(text, "score:");
        text.push_str(&body);
        tables.extend(written);
        docs.push(stage);
    }
    if stages.contains(&Stage::Aggregates) {
        let (body, stage, written) =
            with_retries(models.retries, "aggregates", || aggregates_stage(warehouse, run, models)).await?;
        let _ = writeln!(text, "aggregates:");
        text.push_str(&body);
        tables.extend(written);
        docs.push(stage);
    }
    Ok((text, docs, tables))
}

pub(crate) async fn build(
    args: BuildArgs,
    location: &WarehouseLocation,
    catalog: &ingest::SourceCatalog,
    models: &Models,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let mut stages = if args.only.is_empty() { BUILT_STAGES.to_vec() } else { args.only.clone() };
    stages.sort();
    stages.dedup();
    let clock = args.date.map_or_else(RunClock::from_wall_clock, RunClock::for_date);
    let warehouse = open_warehouse(location)?;
    let ledger = Ledger::new(&warehouse);
    let run = ledger.begin(RunKind::Build, clock).await.context("cannot start a run")?;
    let options = facts::FactOptions { full_refresh: args.full_refresh };
    let outcome =
        run_stages(&warehouse, &run, catalog, models, &args.landing, &stages, options, scoring::Training::WhenStale)
            .await;
    let summary = |(_, docs, _): &StagesDone| json!({"run_id": run.id, "kind": "build", "logical_date": run.clock.logical_date(), "stages": docs});
    let ((body, docs, tables), _) = finish_run(&ledger, &run, outcome, |(_, _, t)| t.clone(), summary).await?;
    let text = format!("run {} (build, {})\n{body}", run.id, run.clock.logical_date());
    printer.result(json!({"status": "ok", "run_id": run.id, "warehouse": warehouse.root().as_str(), "logical_date": run.clock.logical_date(), "stages": docs, "tables": tables}), text);
    Ok(())
}

pub(crate) async fn demo(
    args: DemoArgs,
    location: &WarehouseLocation,
    catalog: &ingest::SourceCatalog,
    models: &Models,
    quiet: bool,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let landing = args.out.join("landing");
    // The demo owns its folder: an earlier demo's landing data is replaced.
    let config = synth::Config { members: args.members, seed: args.seed, force: true, ..synth::Config::new(&landing) };
    // The run is for the last generated day; its clock starts now.
    let clock = RunClock::for_date(config.start_date + chrono::Duration::days(i64::from(config.days) - 1));
    let (summary, seconds) = run_generator(&config, quiet).await?;

    let warehouse = open_warehouse(location)?;
    let ledger = Ledger::new(&warehouse);
    let run = ledger.begin(RunKind::Demo, clock).await.context("cannot start a run")?;
    let generate = json!({"stage": "generate", "seconds": seconds, "rows_out": summary.rows, "landing": landing.display().to_string()});
    let outcome = run_stages(
        &warehouse,
        &run,
        catalog,
        models,
        &landing,
        &BUILT_STAGES,
        facts::FactOptions::default(),
        scoring::Training::WhenStale,
    )
    .await;
    let run_summary = |(_, docs, _): &StagesDone| {
        let mut stages = vec![generate.clone()];
        stages.extend(docs.iter().cloned());
        json!({"run_id": run.id, "kind": "demo", "logical_date": run.clock.logical_date(), "stages": stages})
    };
    let ((body, docs, tables), ledger_version) =
        finish_run(&ledger, &run, outcome, |(_, _, t)| t.clone(), run_summary).await?;

    let mut text = generate_text(&summary, seconds);
    let _ = writeln!(text, "built run {} ({}):", run.id, run.clock.logical_date());
    text.push_str(&body);
    let _ = writeln!(text, "recorded demo run {} in {} (ledger version {ledger_version})", run.id, warehouse.root());
    let _ = writeln!(text, "stages run: generate, ingest, silver, dims, facts, score, aggregates");

    // The report of the run, as the default role (analyst) sees it.
    let report_path = args.out.join("report.html");
    let (state, origin) = crate::sql::run_state(&warehouse, Some(run.id.0), None).await?;
    let masking = crate::sql::masking(catalog, &models.silver);
    let threshold = models.scoring.scores.referral_threshold;
    let report =
        crate::sql::write_report(&warehouse, &report_path, state, origin.clone(), Some(&masking), threshold).await?;
    text.push_str(&crate::sql::report_text(&report_path, &origin, &report));
    let _ = writeln!(text, "report: {}", report_path.display());
    let _ = writeln!(text, "next: gold runs --warehouse {location}");
    let mut stages = vec![generate];
    stages.extend(docs);
    printer.result(
        json!({"status": "ok", "run_id": run.id, "warehouse": warehouse.root().as_str(), "ledger_version": ledger_version, "stages": stages, "tables": tables, "generate": summary, "report": report_path.display().to_string()}),
        text,
    );
    Ok(())
}

/// A table location from the command line: a URI, or a local folder.
fn table_url(location: &str) -> anyhow::Result<url::Url> {
    match url::Url::parse(location) {
        Ok(url) if url.scheme().len() > 1 => {
            Ok(if url.path().ends_with('/') { url } else { url::Url::parse(&format!("{url}/")).unwrap_or(url) })
        }
        _ => {
            let abs = std::path::absolute(location).with_context(|| format!("target {location:?}"))?;
            url::Url::from_directory_path(&abs)
                .map_err(|()| UserError(format!("target {location:?} cannot be expressed as a file URL")).into())
        }
    }
}

/// `gold snapshot`: the target is a folder or an object-store URI, written
/// with the config's storage options.
pub(crate) async fn snapshot(
    args: SnapshotArgs,
    storage: &std::collections::HashMap<String, String>,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let tracked = match (args.track, args.track_all_except) {
        (Some(cols), _) => merge::Tracked::Columns(cols),
        (None, Some(except)) => merge::Tracked::AllExcept(except),
        (None, None) => merge::Tracked::AllExcept(Vec::new()),
    };
    let spec = merge::Spec {
        key: args.key,
        tracked,
        type1: args.type1,
        order_by: Vec::new(),
        effective_from: args.updated_at,
        deletes: match args.hard_deletes {
            HardDeletes::Ignore => merge::Deletes::Ignore,
            HardDeletes::Invalidate => merge::Deletes::Invalidate,
            HardDeletes::NewRecord => merge::Deletes::NewRecord,
        },
        surrogate_key: args.surrogate_key,
        history_from: None,
    };
    let clock = match args.date {
        Some(date) => RunClock::for_date(date),
        None => RunClock::from_wall_clock(),
    };
    let at = clock.now();
    let digest = merge::source::digest(&args.source, &spec)?;
    let target = merge::Target {
        url: table_url(&args.target)?,
        storage_options: storage.clone(),
        app_id: "gold.snapshot".to_string(),
        commit_info: vec![
            ("gold.operation".to_string(), json!("snapshot")),
            ("gold.source".to_string(), json!(args.source.display().to_string())),
            ("gold.logical_date".to_string(), json!(clock.logical_date().to_string())),
            (merge::SOURCE_DIGEST.to_string(), json!(digest)),
        ],
        deletion_vectors: !args.no_deletion_vectors,
    };
    // The very file (and options) the table's newest version applied: the
    // table is already its result.
    if let Some(version) = merge::applied_source(&target, &digest).await? {
        printer.result(
            json!({
                "status": "ok",
                "target": target.url.as_str(),
                "version": null,
                "already_applied": true,
                "source_applied_in_version": version,
                "source_digest": digest,
            }),
            format!(
                "{}: {} is, byte for byte and with the same options, the snapshot version {version} applied; \
                 nothing to do\n",
                target.url,
                args.source.display()
            ),
        );
        return Ok(());
    }
    let known = merge::business_schema(&target, &spec).await?;
    let rows = merge::source::read_snapshot(&args.source, known.as_ref()).await?;
    let file_name = args.source.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let batch = merge::Batch {
        id: format!("{file_name}@{}", at.to_rfc3339()),
        sequence: at.timestamp_micros(),
        clock: at,
        rows,
    };
    let outcome = merge::merge(&target, &spec, batch).await?;
    let m = &outcome.metrics;
    let text = if outcome.already_applied {
        format!("{}: a snapshot for {} was already applied; nothing to do\n", target.url, at.to_rfc3339())
    } else {
        let version =
            outcome.version.map_or_else(|| "no new version (nothing changed)".to_string(), |v| format!("version {v}"));
        format!(
            "{}: {version}\n  {} rows in, {} inserted, {} closed, {} unchanged, {} deleted, {} resurrected, {} updated in place, {} late splits, {} duplicates\n  {} current rows\n",
            target.url,
            thousands(m.rows_in),
            thousands(m.inserted),
            thousands(m.closed),
            thousands(m.unchanged),
            thousands(m.deleted),
            thousands(m.resurrected),
            thousands(m.type1_updated),
            thousands(m.late_split),
            thousands(m.duplicates),
            thousands(outcome.current_rows),
        )
    };
    printer.result(
        json!({
            "status": "ok",
            "target": target.url.as_str(),
            "version": outcome.version,
            "already_applied": outcome.already_applied,
            "metrics": m,
            "columns_added": outcome.columns_added,
            "current_rows": outcome.current_rows,
            "changed_intervals": outcome.changed.len(),
            "timings_ms": outcome.timings_ms,
        }),
        text,
    );
    Ok(())
}

pub(crate) async fn train(
    args: crate::cli::DateArgs,
    location: &WarehouseLocation,
    config: &scoring::ScoringConfig,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let clock = args.date.map_or_else(RunClock::from_wall_clock, RunClock::for_date);
    let warehouse = open_warehouse(location)?;
    let ledger = Ledger::new(&warehouse);
    let run = ledger.begin(RunKind::Train, clock).await.context("cannot start a run")?;
    let outcome = scoring::train(&warehouse, &run, config).await.context("train");
    let tables =
        |r: &scoring::TrainReport| r.table_version.map(|v| (scoring::MODELS.to_string(), v, 1)).into_iter().collect();
    let summary = |r: &scoring::TrainReport| json!({"run_id": run.id, "kind": "train", "logical_date": run.clock.logical_date(), "train": r});
    let (report, _) = finish_run(&ledger, &run, outcome, tables, summary).await?;
    let text = format!("run {} (train, {})\n{}\n", run.id, run.clock.logical_date(), train_text(&report));
    printer.result(json!({"status": "ok", "run_id": run.id, "train": report}), text);
    Ok(())
}

pub(crate) async fn score(
    args: crate::cli::DateArgs,
    location: &WarehouseLocation,
    config: &scoring::ScoringConfig,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let clock = args.date.map_or_else(RunClock::from_wall_clock, RunClock::for_date);
    let warehouse = open_warehouse(location)?;
    let ledger = Ledger::new(&warehouse);
    let run = ledger.begin(RunKind::Score, clock).await.context("cannot start a run")?;
    let outcome = score_stage(&warehouse, &run, config, scoring::Training::Never).await;
    let summary = |(_, doc, _): &(String, serde_json::Value, Vec<(String, i64, i64)>)| json!({"run_id": run.id, "kind": "score", "logical_date": run.clock.logical_date(), "stages": [doc]});
    let ((body, doc, tables), _) = finish_run(&ledger, &run, outcome, |(_, _, t)| t.clone(), summary).await?;
    let text = format!("run {} (score, {})\n{body}", run.id, run.clock.logical_date());
    printer.result(json!({"status": "ok", "run_id": run.id, "stages": [doc], "tables": tables}), text);
    Ok(())
}

pub(crate) async fn evaluate(
    args: crate::cli::EvaluateArgs,
    location: &WarehouseLocation,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let warehouse = open_warehouse(location)?;
    let labels = scoring::evaluate::read_labels(&args.labels)?;
    let report = scoring::evaluate::evaluate(&warehouse, &labels).await.context("evaluate")?;
    let mut text = format!("model {}\n", report.model_version.as_deref().unwrap_or("(none)"));
    for (level, r) in [("claims", &report.claims), ("providers", &report.providers)] {
        let o = &r.overall;
        let _ = writeln!(
            text,
            "{level}: {} scored, {} positive ({} labelled but not scored)\n  ROC-AUC {:.3}  average precision {:.3}  precision@{} {:.3}",
            thousands(o.rows as u64),
            thousands(o.positives as u64),
            r.labels_not_scored,
            o.roc_auc,
            o.average_precision,
            o.k,
            o.precision_at_k
        );
        let _ =
            writeln!(text, "  {:<28} {:>9} {:>8} {:>8} {:>10}", "pattern", "positives", "ROC-AUC", "AP", "recall@k");
        for (name, m) in &r.per_pattern {
            let _ = writeln!(
                text,
                "  {name:<28} {:>9} {:>8.3} {:>8.3} {:>10.3}",
                m.positives, m.roc_auc, m.average_precision, m.recall_at_k
            );
        }
    }
    let mut exported = None;
    if let Some(dir) = &args.export_features {
        let date = args.date.unwrap_or_else(|| RunClock::from_wall_clock().logical_date());
        let model = scoring::current_model(&warehouse, date).await?.ok_or(scoring::Error::NoModel { date })?;
        let (claims, providers) = scoring::evaluate::export_features(&warehouse, &model, date, &labels, dir).await?;
        let _ = writeln!(text, "exported {claims} claims and {providers} providers to {}", dir.display());
        exported = Some(json!({"dir": dir.display().to_string(), "claims": claims, "providers": providers}));
    }
    printer.result(json!({"status": "ok", "evaluation": report, "exported": exported}), text);
    Ok(())
}
