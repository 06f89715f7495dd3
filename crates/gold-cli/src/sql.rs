//! `gold sql`: the role's masking, the versions to read, the output.

use std::collections::HashSet;

use anyhow::Context;
use serde_json::json;
use storage::{Ledger, RunId, RunStatus};

use crate::UserError;
use crate::cli::{SqlArgs, SqlFormat};
use crate::config::{Config, default_roles};
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
pub(crate) fn masking(sources: &ingest::SourceCatalog, silver: &quality::SilverCatalog) -> query::Masking {
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

pub(crate) async fn sql(
    args: SqlArgs,
    location: &str,
    config: &Config,
    masking: query::Masking,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let defaults = default_roles();
    let roles = if config.roles.is_empty() { &defaults } else { &config.roles };
    let role = roles.get(&args.role).ok_or_else(|| {
        UserError(format!(
            "no role {:?}; the roles are {} (gold.toml [roles.NAME])",
            args.role,
            roles.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })?;
    let warehouse = crate::config::open_warehouse(location)?;
    let runs = Ledger::new(&warehouse).runs().await.context("cannot read the run ledger")?;
    let succeeded = || runs.iter().filter(|r| r.status == RunStatus::Succeeded && !r.state.is_empty());
    let versions = if let Some(v) = args.as_of_version {
        query::Versions::Version(v)
    } else {
        let run = if let Some(id) = args.as_of_run {
            let run = runs
                .iter()
                .find(|r| r.run_id == RunId(id))
                .ok_or_else(|| UserError(format!("run {id} is not in the run ledger (see gold runs)")))?;
            if run.status != RunStatus::Succeeded {
                return Err(UserError(format!("run {id} {}; its tables are not a consistent state", run.status)).into());
            }
            run
        } else if let Some(ts) = &args.as_of_timestamp {
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
        // The ledger itself is always read as it is now.
        if let Some(v) =
            warehouse.load(&storage::TableName::new(storage::LEDGER_TABLE)?).await?.and_then(|t| t.version())
        {
            state.insert(storage::LEDGER_TABLE.to_string(), v as i64);
        }
        query::Versions::State { state, origin: format!("run {} ({}, {})", run.run_id, run.kind, run.logical_date) }
    };
    let masking = (!role.sees_pii).then_some(&masking);
    let result = query::run(&warehouse, &args.query, &versions, masking).await?;
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
