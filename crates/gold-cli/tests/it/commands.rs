//! The commands of the foundation: generate, init, runs, demo; exit codes
//! and output formats.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{gold, gold_json, gold_ok, stderr, stdout};

fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.insert(path.strip_prefix(base).unwrap().display().to_string(), std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn generate_twice_with_the_same_seed_gives_byte_identical_trees() {
    let dir = tempfile::tempdir().unwrap();
    let args = |out: &str, seed: &str| {
        vec!["generate", "--out", out, "--members", "1000", "--days", "3", "--seed", seed]
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    for (out, seed) in [("a", "7"), ("b", "7"), ("c", "8")] {
        let a = args(out, seed);
        gold_ok(dir.path(), &a.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let (a, b, c) = (tree(&dir.path().join("a")), tree(&dir.path().join("b")), tree(&dir.path().join("c")));
    assert_eq!(a, b, "same seed, same bytes");
    assert_ne!(a, c, "another seed, another tree");
    for day in ["2024-12-29", "2024-12-30", "2024-12-31"] {
        for file in [
            "members.csv",
            "claims_batch.csv",
            "claims_stream.json",
            "patients.csv",
            "claims.csv",
            "medical_events.csv",
        ] {
            assert!(a.contains_key(&format!("{day}/{file}")), "{day}/{file} missing");
        }
    }
    assert!(a.contains_key("2024-12-29/providers.json") && a.contains_key("2024-12-29/diagnosis_ref.csv"));
    assert!(
        a.contains_key("legacy.db")
            && a.contains_key("_truth/defects.csv")
            && a.contains_key("_truth/fraud_labels.csv")
    );
}

#[test]
fn generate_reports_counts_as_one_json_document() {
    let dir = tempfile::tempdir().unwrap();
    let (code, doc) = gold_json(dir.path(), &["generate", "--out", "l", "--members", "300", "--days", "2"]);
    assert_eq!(code, Some(0));
    let summary = &doc["summary"];
    assert_eq!(summary["members"], 300);
    let files: BTreeMap<String, u64> = serde_json::from_value(summary["files"].clone()).unwrap();
    // Every count is the number of data rows really in the file.
    for (rel, rows) in &files {
        let text = std::fs::read_to_string(dir.path().join("l").join(rel)).unwrap();
        let lines = text.lines().count() as u64;
        let expected = if rel.ends_with(".json") { lines } else { lines - 1 };
        // CSV fields with embedded newlines would break this count; the generator writes none.
        assert_eq!(*rows, expected, "{rel}");
    }
    assert!(doc["rows_per_second"].as_f64().unwrap() > 0.0);
}

#[test]
fn default_history_spans_new_year_2025() {
    let dir = tempfile::tempdir().unwrap();
    let (_, doc) = gold_json(dir.path(), &["generate", "--out", "l", "--members", "50"]);
    let (first, last) = (doc["summary"]["first_day"].as_str().unwrap(), doc["summary"]["last_day"].as_str().unwrap());
    assert!(first < "2025-01-01" && last > "2025-01-01", "{first}..{last}");
    assert!(dir.path().join("l/2025-01-01/members.csv").exists());
}

#[test]
fn user_errors_exit_1_with_one_chained_line() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["generate", "--out", "x", "--members", "lots"],
        vec!["generate", "--out", "x", "--days", "0"],
        vec!["generate", "--out", "x", "--start-date", "2025-13-01"],
        vec!["frobnicate"],
        vec!["runs", "--no-such-flag"],
    ] {
        let o = gold(dir.path(), &args);
        assert_eq!(o.status.code(), Some(1), "gold {args:?}: {}", stderr(&o));
        assert!(stdout(&o).is_empty(), "gold {args:?} printed on stdout");
    }
    std::fs::create_dir(dir.path().join("busy")).unwrap();
    std::fs::write(dir.path().join("busy/mine.txt"), "keep me").unwrap();
    let o = gold(dir.path(), &["generate", "--out", "busy", "--members", "5"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.starts_with("error: cannot generate into busy: ")
            && err.contains("not empty")
            && err.trim_end().lines().count() == 1,
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(dir.path().join("busy/mine.txt")).unwrap(), "keep me");

    let (code, doc) = gold_json(dir.path(), &["generate", "--out", "busy", "--members", "5"]);
    assert_eq!((code, doc["status"].as_str(), doc["exit_code"].as_i64()), (Some(1), Some("error"), Some(1)), "{doc}");
}

#[test]
fn help_and_version_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    assert!(gold_ok(dir.path(), &["--help"]).contains("generate"));
    assert!(gold_ok(dir.path(), &["--version"]).starts_with("gold "));
}

#[test]
fn config_file_sets_the_warehouse_and_typos_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    gold_ok(dir.path(), &["init", "proj"]);
    assert!(dir.path().join("proj/gold.toml").is_file() && dir.path().join("proj/models/sources.toml").is_file());
    assert!(dir.path().join("proj/models/gold/gold_prompt_pay.sql").is_file(), "init writes the SQL aggregates");
    let o = gold(dir.path(), &["init", "proj"]);
    assert_eq!(o.status.code(), Some(1), "init refuses to overwrite: {}", stderr(&o));
    gold_ok(dir.path(), &["init", "proj", "--force"]);
    // A model may not take a table another stage writes.
    std::fs::write(dir.path().join("proj/models/gold/gold_fraud_scores.sql"), "-- clobbers\nSELECT 1 AS x").unwrap();
    let o = gold(dir.path(), &["--config", "proj/gold.toml", "build", "--landing", "nowhere"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("gold_fraud_scores is written by the score stage"), "{}", stderr(&o));
    std::fs::remove_file(dir.path().join("proj/models/gold/gold_fraud_scores.sql")).unwrap();
    // A user adds an aggregate by adding a file.
    std::fs::write(
        dir.path().join("proj/models/gold/gold_claims_by_channel.sql"),
        "-- gold_claims_by_channel: claims per submission channel.\n\
         SELECT coalesce(submission_channel, 'none') AS channel, count(*) AS claims FROM fact_claims GROUP BY 1",
    )
    .unwrap();

    // gold.toml says root = "warehouse", relative to the file's folder.
    gold_ok(dir.path(), &["--config", "proj/gold.toml", "demo", "--out", "d", "--members", "100"]);
    assert!(dir.path().join("proj/warehouse/_gold_runs/_delta_log").is_dir(), "the demo used the configured warehouse");
    let (code, doc) = crate::gold_json(
        dir.path(),
        &["--config", "proj/gold.toml", "sql", "SELECT sum(claims) AS n FROM gold_claims_by_channel"],
    );
    assert_eq!(code, Some(0), "{doc}");
    let (_, facts) =
        crate::gold_json(dir.path(), &["--config", "proj/gold.toml", "sql", "SELECT count(*) AS n FROM fact_claims"]);
    assert!(doc["rows"][0]["n"].as_i64().unwrap() > 0, "{doc}");
    assert_eq!(doc["rows"][0]["n"], facts["rows"][0]["n"], "the new aggregate counts every claim");

    std::fs::write(dir.path().join("bad.toml"), "[warehouse]\nrot = \"x\"\n").unwrap();
    let o = gold(dir.path(), &["--config", "bad.toml", "runs"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("bad.toml") && stderr(&o).contains("rot"), "{}", stderr(&o));
}

#[test]
fn warehouse_comes_from_the_flag_then_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    gold_ok(dir.path(), &["demo", "--out", "d", "--members", "100", "--warehouse", "wh1"]);
    assert!(dir.path().join("wh1/_gold_runs").is_dir());
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gold"))
        .args(["--output-format", "json", "runs"])
        .current_dir(dir.path())
        .env("GOLD_WAREHOUSE", "wh1")
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["runs"].as_array().unwrap().len(), 1, "{doc}");
}

#[test]
fn demo_records_runs_that_runs_lists() {
    let dir = tempfile::tempdir().unwrap();
    let (_, empty) = gold_json(dir.path(), &["runs", "--warehouse", "d/warehouse"]);
    assert_eq!(empty["runs"].as_array().unwrap().len(), 0);

    let text = gold_ok(dir.path(), &["demo", "--out", "d", "--members", "200", "--warehouse", "d/warehouse"]);
    assert!(text.contains("recorded demo run 1"), "{text}");
    let (code, doc) = gold_json(dir.path(), &["demo", "--out", "d", "--members", "200", "--warehouse", "d/warehouse"]);
    assert_eq!((code, doc["run_id"].as_i64()), (Some(0), Some(2)), "{doc}");

    let (code, runs) = gold_json(dir.path(), &["runs", "--warehouse", "d/warehouse"]);
    assert_eq!(code, Some(0));
    let runs = runs["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(run["run_id"], i as i64 + 1);
        assert_eq!(run["kind"], "demo");
        assert_eq!(run["status"], "succeeded");
        assert_eq!(run["logical_date"], "2025-01-04");
        assert!(run["tables"].is_array(), "per-table versions are listed: {run}");
        assert_eq!(run["summary"]["stages"][0]["stage"], "generate");
    }
    let text = gold_ok(dir.path(), &["runs", "--warehouse", "d/warehouse"]);
    assert!(text.lines().count() == 3 && text.contains("demo"), "{text}");
}

#[test]
fn build_runs_every_stage_and_a_rerun_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    gold_ok(dir.path(), &["generate", "--out", "landing", "--members", "200", "--days", "2"]);
    let wh = ["--warehouse", "wh"];
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "--landing", "landing", "--date", "2024-12-30"];
        args.extend_from_slice(&wh);
        args.extend_from_slice(extra);
        gold_json(dir.path(), &args)
    };

    let (code, doc) = build(&["--only", "ingest"]);
    assert_eq!(code, Some(0), "{doc}");
    let stages: Vec<&str> = doc["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["ingest"]);

    // Aggregates whose tables are not built yet are skipped, naming them.
    let (code, doc) = build(&["--only", "aggregates"]);
    assert_eq!(code, Some(0), "{doc}");
    let aggs = doc["stages"][0]["aggregates"].as_array().unwrap();
    assert_eq!(aggs.len(), 8, "{doc}");
    assert!(aggs.iter().all(|a| a["version"].is_null() && !a["missing_inputs"].as_array().unwrap().is_empty()));
    let fwa = aggs.iter().find(|a| a["table"] == "gold_fwa_referrals").unwrap();
    assert_eq!(fwa["missing_inputs"], serde_json::json!(["fact_claims", "gold_fraud_scores"]), "{doc}");
    assert_eq!(doc["tables"].as_array().unwrap().len(), 0, "{doc}");

    let (code, doc) = build(&[]);
    assert_eq!(code, Some(0), "{doc}");
    let stages: Vec<&str> = doc["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["ingest", "silver", "dims", "facts", "score", "aggregates"]);
    let silver = &doc["stages"][1];
    let sum = |k: &str| silver[k].as_u64().unwrap();
    assert!(sum("bronze_rows") > 0);
    assert_eq!(
        sum("accepted") + sum("duplicates") + sum("quarantined") + sum("dropped"),
        sum("bronze_rows"),
        "{silver}"
    );
    let tables: Vec<&str> = doc["tables"].as_array().unwrap().iter().map(|t| t[0].as_str().unwrap()).collect();
    for t in [
        "silver_members",
        "silver_claims",
        "quarantine_silver_claims",
        "dq_results",
        "dim_members",
        "dim_patients",
        "dim_providers",
        "fact_claims",
        "fact_claim_diagnoses",
        "fact_claim_procedures",
        "fact_medical_events",
        "dim_date",
        "dim_diagnosis",
        "gold_fraud_models",
        "gold_fraud_scores",
        "gold_provider_risk",
        "gold_provider_monthly_summary",
        "gold_claim_outcomes",
        "gold_prompt_pay",
        "gold_member_months",
        "gold_loss_ratio",
        "gold_fwa_referrals",
        "gold_utilization",
        "gold_dq_scorecard",
    ] {
        assert!(tables.contains(&t), "{t} written: {tables:?}");
    }
    let model = doc["stages"][4]["score"]["model_version"].as_str().unwrap().to_string();
    assert!(model.starts_with("fm-"), "{doc}");

    let (code, again) = build(&[]);
    assert_eq!(code, Some(0), "{again}");
    assert_eq!(again["tables"].as_array().unwrap().len(), 0, "a rerun writes no table: {again}");

    let (code, full) = build(&["--only", "facts", "--full-refresh"]);
    assert_eq!(code, Some(0), "{full}");
    let rebuilt: Vec<&str> = full["tables"].as_array().unwrap().iter().filter_map(|t| t[0].as_str()).collect();
    assert!(rebuilt.contains(&"fact_claims") && !rebuilt.contains(&"dim_members"), "{full}");

    // The refreshed facts are new input versions: the aggregates that read
    // them are recomputed, the DQ scorecard (dq_results only) is not, and
    // a second run writes nothing.
    let (code, agg) = build(&["--only", "aggregates"]);
    assert_eq!(code, Some(0), "{agg}");
    let written: Vec<&str> = agg["tables"].as_array().unwrap().iter().filter_map(|t| t[0].as_str()).collect();
    assert!(written.contains(&"gold_claim_outcomes") && !written.contains(&"gold_dq_scorecard"), "{agg}");
    let (code, agg) = build(&["--only", "aggregates"]);
    assert_eq!(code, Some(0), "{agg}");
    assert_eq!(agg["tables"].as_array().unwrap().len(), 0, "{agg}");
    let o = gold(dir.path(), &["build", "--landing", "landing", "--only", "silver,nope", "--warehouse", "wh"]);
    assert_eq!(o.status.code(), Some(1), "an unknown stage is a user error");

    // The full refresh wrote new fact versions, so scoring rescores (with
    // the same model); scoring again writes nothing. The ledger names the
    // model.
    let (code, scored) = gold_json(dir.path(), &["score", "--date", "2024-12-30", "--warehouse", "wh"]);
    assert_eq!(code, Some(0), "{scored}");
    assert_eq!(scored["stages"][0]["score"]["up_to_date"], false, "{scored}");
    let (code, scored) = gold_json(dir.path(), &["score", "--date", "2024-12-30", "--warehouse", "wh"]);
    assert_eq!(code, Some(0), "{scored}");
    assert_eq!(scored["stages"][0]["score"]["up_to_date"], true, "{scored}");
    assert_eq!(scored["stages"][0]["score"]["model_version"], model.as_str());
    let (_, runs) = gold_json(dir.path(), &["runs", "--warehouse", "wh"]);
    let last = runs["runs"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["kind"].as_str(), last["model_version"].as_str()),
        (Some("score"), Some(model.as_str())),
        "{last}"
    );

    // Evaluation against the generator's labels.
    let (code, eval) =
        gold_json(dir.path(), &["evaluate", "--labels", "landing/_truth/fraud_labels.csv", "--warehouse", "wh"]);
    assert_eq!(code, Some(0), "{eval}");
    assert!(eval["evaluation"]["claims"]["overall"]["rows"].as_u64().unwrap() > 0, "{eval}");
    assert_eq!(eval["evaluation"]["model_version"], model.as_str());

    // No facts, no model: clear errors, exit 1.
    let o = gold(dir.path(), &["score", "--warehouse", "empty"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("gold train"), "{}", stderr(&o));
    let o = gold(dir.path(), &["train", "--warehouse", "empty"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("fact_claims does not exist yet"), "{}", stderr(&o));
    let o = gold(dir.path(), &["evaluate", "--labels", "nope.csv", "--warehouse", "wh"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("nope.csv"), "{}", stderr(&o));
}
