//! Text for people: a stage's report as the table `gold build` prints.

use std::fmt::Write as _;

use pipeline::{StageDone, StageReport};

/// `n` with thousands separators: 1234567 → "1,234,567".
pub(crate) fn thousands(n: u64) -> String {
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

/// Every stage of a run, each under its name.
pub(crate) fn stages(done: &[StageDone], landing: &std::path::Path) -> String {
    let mut text = String::new();
    for s in done {
        match &s.report {
            StageReport::Ingest(r) => {
                let _ = writeln!(text, "ingest: {} day folder(s) from {}", r.days.len(), landing.display());
                text.push_str(&ingest(r));
            }
            StageReport::Silver { report, rounds } => {
                match (rounds.first().and_then(|r| r.day), rounds.last().and_then(|r| r.day)) {
                    (Some(first), Some(last)) if rounds.len() > 1 => {
                        let _ = writeln!(
                            text,
                            "silver: {} rounds, one per landing day from {first} to {last}:",
                            rounds.len()
                        );
                    }
                    _ => text.push_str("silver:\n"),
                }
                text.push_str(&silver(report));
            }
            StageReport::Dims(r) => {
                text.push_str("dims:\n");
                text.push_str(&dims(r));
            }
            StageReport::Facts(r) => {
                text.push_str("facts:\n");
                text.push_str(&facts(r));
            }
            StageReport::Score(r) => {
                text.push_str("score:\n");
                text.push_str(&score(r));
            }
            StageReport::ScoreSkipped(why) => {
                let _ = writeln!(text, "score: {why}");
            }
            StageReport::Aggregates(r) => {
                text.push_str("aggregates:\n");
                text.push_str(&aggregates(r));
            }
            StageReport::Compact(tables) if !tables.is_empty() => {
                text.push_str("compact:\n");
                for t in tables {
                    let u = &t["upkeep"];
                    let _ = writeln!(
                        text,
                        "  {:<32} files {} -> {}  ({} small files in a partition)",
                        t["table"].as_str().unwrap_or_default(),
                        u["files_removed"],
                        u["files_added"],
                        u["small_files"]
                    );
                }
            }
            _ => {}
        }
    }
    text
}

/// The ingest stage: one line per source.
pub(crate) fn ingest(report: &ingest::IngestReport) -> String {
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

/// The silver stage: one line per silver table.
fn silver(report: &silver::SilverReport) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "  {:<24} {:>11} {:>11} {:>10} {:>11} {:>8} {:>9}  table",
        "silver table", "bronze rows", "accepted", "duplicates", "quarantined", "dropped", "released"
    );
    for table in &report.tables {
        let a = silver::BatchAccount::sum(&table.batches);
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

/// The dims stage: one line per dimension.
fn dims(reports: &[dims::DimReport]) -> String {
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

/// The facts stage: one line per fact table, and the keys inferred.
fn facts(report: &facts::FactsReport) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "  {:<22} {:>11} {:>9} {:>7}  table", "table", "rebuilt", "restated", "months");
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
    }
    let inferred: Vec<String> =
        report.inferred.iter().filter(|(_, n)| **n > 0).map(|(d, n)| format!("{d} {}", thousands(*n))).collect();
    if !inferred.is_empty() {
        let _ = writeln!(text, "  inferred: {}", inferred.join(", "));
    }
    text
}

/// The score stage: the model trained, if any, and what was scored.
pub(crate) fn score(report: &scoring::ScoreReport) -> String {
    let mut text = String::new();
    if let Some(t) = &report.trained {
        let _ = writeln!(text, "{}", train(t));
    }
    if report.up_to_date {
        let _ = writeln!(text, "  scores are up to date (model {}, same facts)", report.model_version);
        return text;
    }
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
    text
}

/// The aggregates stage: one line per aggregate.
fn aggregates(reports: &[aggregates::AggregateReport]) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "  {:<32} {:>9}  table", "aggregate", "rows");
    for r in reports {
        let at = match r.version {
            Some(v) => format!("{}@v{v}", r.table),
            None if r.up_to_date => "(up to date)".to_string(),
            None => format!("(not built: {} not built yet)", r.missing_inputs.join(", ")),
        };
        let rows = if r.version.is_some() { thousands(r.rows) } else { String::new() };
        let _ = writeln!(text, "  {:<32} {:>9}  {at}", r.table, rows);
    }
    text
}

/// A trained model, in one line.
pub(crate) fn train(t: &scoring::TrainReport) -> String {
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
