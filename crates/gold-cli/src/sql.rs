//! `gold sql` and `gold report`: the role's masking, the versions to read,
//! the output.

use std::collections::{BTreeMap, HashSet};

use anyhow::Context;
use serde_json::json;
use storage::{Ledger, RunId, RunStatus};

use crate::UserError;
use crate::cli::{ReportArgs, SqlArgs, SqlFormat};
use crate::config::{Config, WarehouseLocation, default_roles};
use crate::output::Printer;

/// Columns every role without PII access sees hidden, beside the models'
/// PII tags: raw rows kept by quarantine, rescued data and bronze's parse
/// errors (which quote the value) may hold anything, and a key hash is an
/// unkeyed hash of an id.
const ALWAYS_HIDDEN: [&str; 4] = ["_raw", "_rescued_data", "_error", "key_hash"];

/// Ids replaced by pseudonyms (the same in every table, so joins match).
const PSEUDONYMISED: [&str; 4] = ["member_id", "patient_id", "memberid", "patientid"];

/// The masking of a role that may not see PII: every column the source
/// and silver models tag as PII, by name, in every table.
pub(crate) fn masking(sources: &ingest::SourceCatalog, silver: &silver::SilverCatalog) -> query::Masking {
    let mut pii: HashSet<String> = HashSet::new();
    for s in sources.sources() {
        pii.extend(s.columns.iter().filter(|c| c.pii).map(|c| c.name.to_lowercase()));
    }
    for t in silver.tables() {
        pii.extend(t.pii_columns().into_iter().map(str::to_lowercase));
    }
    let (year_only, mut hidden): (HashSet<String>, HashSet<String>) =
        pii.into_iter().partition(|c| c == "dob" || c.contains("birth"));
    hidden.extend(ALWAYS_HIDDEN.iter().map(|c| c.to_string()));
    query::Masking {
        hidden,
        year_only,
        pseudonymised: PSEUDONYMISED.iter().map(|c| c.to_string()).collect(),
        key: std::env::var("GOLD_PII_KEY").ok().filter(|k| !k.is_empty()).map(|k| query::Masking::key_from(&k)),
    }
}

/// The masking of `role` (from gold.toml, else the default roles): `None`
/// for a role that sees PII.
fn role_masking(config: &Config, role: &str, masking: query::Masking) -> anyhow::Result<Option<query::Masking>> {
    let defaults = default_roles();
    let roles = if config.roles.is_empty() { &defaults } else { &config.roles };
    let found = roles.get(role).ok_or_else(|| {
        UserError(format!(
            "no role {role:?}; the roles are {} (gold.toml [roles.NAME])",
            roles.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })?;
    Ok((!found.sees_pii).then_some(masking))
}

/// The table versions a run left, and a name for that run: run
/// `as_of_run`, else the last successful run that ended by
/// `as_of_timestamp`, else the last successful run. The ledger itself is
/// read as it is now.
pub(crate) async fn run_state(
    warehouse: &storage::Warehouse,
    as_of_run: Option<i64>,
    as_of_timestamp: Option<&str>,
) -> anyhow::Result<(BTreeMap<String, i64>, String)> {
    let runs = Ledger::new(warehouse).runs().await.context("cannot read the run ledger")?;
    let succeeded = || runs.iter().filter(|r| r.status == RunStatus::Succeeded && !r.state.is_empty());
    let run = if let Some(id) = as_of_run {
        let run = runs
            .iter()
            .find(|r| r.run_id == RunId(id))
            .ok_or_else(|| UserError(format!("run {id} is not in the run ledger (see gold runs)")))?;
        if run.status != RunStatus::Succeeded {
            return Err(UserError(format!("run {id} {}; its tables are not a consistent state", run.status)).into());
        }
        run
    } else if let Some(ts) = as_of_timestamp {
        let at = chrono::DateTime::parse_from_rfc3339(ts)
            .map(|t| t.with_timezone(&chrono::Utc))
            .or_else(|_| {
                chrono::NaiveDate::parse_from_str(ts, "%Y-%m-%d")
                    .map(|d| d.and_hms_opt(23, 59, 59).expect("valid time").and_utc())
            })
            .map_err(|_| UserError(format!("--as-of-timestamp {ts:?}: not an RFC 3339 time or a date")))?;
        succeeded()
            .filter(|r| r.ended_at <= at)
            .max_by_key(|r| r.run_id)
            .ok_or_else(|| UserError(format!("no run had succeeded by {ts}")))?
    } else {
        succeeded()
            .max_by_key(|r| r.run_id)
            .ok_or_else(|| UserError(format!("no successful run in {} yet: gold build first", warehouse.root())))?
    };
    let mut state = run.state.clone();
    if let Some(v) = warehouse.load(&storage::TableName::new(storage::LEDGER_TABLE)?).await?.and_then(|t| t.version()) {
        state.insert(storage::LEDGER_TABLE.to_string(), v as i64);
    }
    Ok((state, format!("run {} ({}, {})", run.run_id, run.kind, run.logical_date)))
}

pub(crate) async fn sql(
    args: SqlArgs,
    location: &WarehouseLocation,
    config: &Config,
    masking: query::Masking,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let masking = role_masking(config, &args.role, masking)?;
    let warehouse = crate::config::open_warehouse(location)?;
    let versions = match args.as_of_version {
        Some(v) => query::Versions::Version(v),
        None => {
            let (state, origin) = run_state(&warehouse, args.as_of_run, args.as_of_timestamp.as_deref()).await?;
            query::Versions::State { state, origin }
        }
    };
    let result = query::run(&warehouse, &args.query, &versions, masking.as_ref()).await?;
    let rows: usize = result.batches.iter().map(|b| b.num_rows()).sum();
    let records = query::to_json(&result.batches)?;
    let text = match args.format {
        SqlFormat::Table => format!("{}\n({rows} rows)\n", query::pretty(&result.batches)?),
        SqlFormat::Csv => query::to_csv(&result.batches)?,
        SqlFormat::Json => format!("{}\n", serde_json::to_string_pretty(&records)?),
    };
    printer.result(
        json!({"role": args.role, "tables": result.versions, "columns": result.schema.fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>(), "rows": records}),
        text,
    );
    Ok(())
}

/// Writes the HTML report of the run's state to `out`; returns what it
/// showed.
pub(crate) async fn write_report(
    warehouse: &storage::Warehouse,
    out: &std::path::Path,
    state: BTreeMap<String, i64>,
    origin: String,
    masking: Option<&query::Masking>,
    referral_threshold: f64,
) -> anyhow::Result<report::Report> {
    let source = report::Source { warehouse, state, origin, masking, referral_threshold };
    let report = report::render(&source).await?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| UserError(format!("cannot create {}: {e}", dir.display())))?;
    }
    std::fs::write(out, &report.html).map_err(|e| UserError(format!("cannot write {}: {e}", out.display())))?;
    Ok(report)
}

/// What a report showed, for people.
pub(crate) fn report_text(out: &std::path::Path, origin: &str, report: &report::Report) -> String {
    let mut text = format!("wrote {} ({} charts, {origin})\n", out.display(), report.charts.len());
    for (chart, why) in &report.without_data {
        text.push_str(&format!("  {chart}: no data ({why})\n"));
    }
    text
}

pub(crate) async fn report(
    args: ReportArgs,
    location: &WarehouseLocation,
    config: &Config,
    masking: query::Masking,
    referral_threshold: f64,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let masking = role_masking(config, &args.role, masking)?;
    let warehouse = crate::config::open_warehouse(location)?;
    let (state, origin) = run_state(&warehouse, args.as_of_run, args.as_of_timestamp.as_deref()).await?;
    let report =
        write_report(&warehouse, &args.out, state, origin.clone(), masking.as_ref(), referral_threshold).await?;
    let without: BTreeMap<&str, &str> = report.without_data.iter().map(|(c, w)| (*c, w.as_str())).collect();
    printer.result(
        json!({"report": args.out.display().to_string(), "role": args.role, "run": origin, "charts": report.charts, "tables": report.versions, "without_data": without}),
        report_text(&args.out, &origin, &report),
    );
    Ok(())
}
