//! One function per command. Each sets its result on the [`Printer`].

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use storage::{Ledger, RunClock};

use crate::UserError;
use crate::cli::{BuildArgs, DemoArgs, GenerateArgs, HardDeletes, IngestArgs, InitArgs, SnapshotArgs};
use crate::config::{WarehouseLocation, open_warehouse};
use crate::output::Printer;
use crate::render::{self, thousands};

/// The `gold.toml` that `gold init` writes.
const GOLD_TOML: &str = include_str!("../templates/gold.toml");

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
        claims_per_member_year: args.claims_per_member_year,
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
    let mut targets: Vec<(PathBuf, &str)> = vec![(args.dir.join("gold.toml"), GOLD_TOML)];
    targets.extend(reference::models::files().into_iter().map(|(rel, body)| (args.dir.join("models").join(rel), body)));
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

pub(crate) async fn ingest(
    args: IngestArgs,
    location: &WarehouseLocation,
    sources: &ingest::SourceCatalog,
    retries: u32,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let warehouse = open_warehouse(location)?;
    let done = pipeline::ingest_only(&warehouse, sources, retries, &args.landing, args.date).await?;
    let run = &done.run;
    let mut text = String::new();
    for stage in &done.stages.0 {
        if let pipeline::StageReport::Ingest(report) = &stage.report {
            text = format!(
                "run {} (build, {}): ingested {} day folder(s) from {}\n",
                run.id,
                run.clock.logical_date(),
                report.days.len(),
                args.landing.display()
            );
            text.push_str(&render::ingest(report));
        }
    }
    printer.result(json!({"status": "ok", "run_id": run.id, "warehouse": warehouse.root().as_str(), "logical_date": run.clock.logical_date(), "stages": done.stages.docs(), "tables": done.stages.tables()}), text);
    Ok(())
}

pub(crate) async fn build(
    args: BuildArgs,
    location: &WarehouseLocation,
    models: &pipeline::Models,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let warehouse = open_warehouse(location)?;
    let request = pipeline::BuildRequest {
        landing: args.landing.clone(),
        date: args.date,
        only: args.only.iter().map(|s| s.stage()).collect(),
        full_refresh: args.full_refresh,
    };
    let done = pipeline::build(&warehouse, models, &request).await?;
    let run = &done.run;
    let text = format!(
        "run {} (build, {})\n{}",
        run.id,
        run.clock.logical_date(),
        render::stages(&done.stages.0, &args.landing)
    );
    printer.result(json!({"status": "ok", "run_id": run.id, "warehouse": warehouse.root().as_str(), "logical_date": run.clock.logical_date(), "stages": done.stages.docs(), "tables": done.stages.tables()}), text);
    Ok(())
}

pub(crate) async fn demo(
    args: DemoArgs,
    location: &WarehouseLocation,
    models: &pipeline::Models,
    quiet: bool,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let warehouse = open_warehouse(location)?;
    let bar = progress_bar(args.members, quiet);
    bar.set_message("generating");
    let done = pipeline::demo(&warehouse, models, &args.out, args.members, args.seed, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .await;
    bar.finish_and_clear();
    let done = done?;
    let run = &done.build.run;
    let mut text = generate_text(&done.generated, done.generate_seconds);
    let _ = writeln!(text, "built run {} ({}):", run.id, run.clock.logical_date());
    text.push_str(&render::stages(&done.build.stages.0, &done.landing));
    let _ =
        writeln!(text, "recorded demo run {} in {} (ledger version {})", run.id, warehouse.root(), done.ledger_version);
    let _ = writeln!(text, "stages run: generate, ingest, silver, dims, facts, score, aggregates");

    // The report of the run, as the default role (analyst) sees it.
    let report_path = args.out.join("report.html");
    let (state, origin) = crate::sql::run_state(&warehouse, Some(run.id.0), None).await?;
    let masking = crate::sql::masking(&models.sources, &models.silver);
    let threshold = models.scoring.scores.referral_threshold;
    let report =
        crate::sql::write_report(&warehouse, &report_path, state, origin.clone(), Some(&masking), threshold).await?;
    text.push_str(&crate::sql::report_text(&report_path, &origin, &report));
    let _ = writeln!(text, "report: {}", report_path.display());
    let _ = writeln!(text, "next: gold runs --warehouse {location}");
    let generate = json!({"stage": "generate", "seconds": done.generate_seconds, "rows_out": done.generated.rows, "landing": done.landing.display().to_string()});
    let mut stages = vec![generate];
    stages.extend(done.build.stages.docs());
    printer.result(
        json!({"status": "ok", "run_id": run.id, "warehouse": warehouse.root().as_str(), "ledger_version": done.ledger_version, "stages": stages, "tables": done.build.stages.tables(), "generate": done.generated, "report": report_path.display().to_string()}),
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
        table_properties: storage::table_properties().into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
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
    let warehouse = open_warehouse(location)?;
    let done = pipeline::train(&warehouse, config, args.date).await?;
    let run = &done.run;
    let text = format!("run {} (train, {})\n{}\n", run.id, run.clock.logical_date(), render::train(&done.report));
    printer.result(json!({"status": "ok", "run_id": run.id, "train": done.report}), text);
    Ok(())
}

pub(crate) async fn score(
    args: crate::cli::DateArgs,
    location: &WarehouseLocation,
    config: &scoring::ScoringConfig,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let warehouse = open_warehouse(location)?;
    let done = pipeline::score(&warehouse, config, args.date).await?;
    let run = &done.run;
    let body = match &done.stage.report {
        pipeline::StageReport::Score(report) => render::score(report),
        _ => String::new(),
    };
    let text = format!("run {} (score, {})\n{body}", run.id, run.clock.logical_date());
    printer.result(
        json!({"status": "ok", "run_id": run.id, "stages": [done.stage.doc], "tables": done.stage.tables}),
        text,
    );
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
