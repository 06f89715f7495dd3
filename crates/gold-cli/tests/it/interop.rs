//! An independent reader: polars-deltalake (delta-kernel-rs, no delta-rs
//! code) reads what gold wrote, at the latest version and at version 0.
//! `tests/run.sh` installs it and sets GOLD_TEST_PYTHON.

use std::path::Path;
use std::process::Command;

use crate::{gold_json, gold_ok};

pub(crate) fn python() -> Option<String> {
    match std::env::var("GOLD_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var_os("CI").is_some() => panic!("GOLD_TEST_PYTHON must be set under CI (see tests/run.sh)"),
        _ => {
            eprintln!("skipped: set GOLD_TEST_PYTHON to a Python with polars-deltalake (tests/run.sh does)");
            None
        }
    }
}

pub(crate) fn read_with_polars(python: &str, table: &Path, version: Option<u64>) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/read_delta.py");
    let mut cmd = Command::new(python);
    cmd.arg(&script).arg(table);
    if let Some(v) = version {
        cmd.arg(v.to_string());
    }
    let out = cmd.output().expect("run python");
    assert!(out.status.success(), "polars-deltalake failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("reader JSON")
}

#[test]
fn polars_deltalake_reads_the_ledger_gold_wrote_including_version_0() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        gold_ok(dir.path(), &["demo", "--out", "d", "--members", "100", "--warehouse", "wh"]);
    }
    let (_, gold_view) = gold_json(dir.path(), &["runs", "--warehouse", "wh"]);
    let table = dir.path().join("wh/_gold_runs");

    let latest = read_with_polars(&python, &table, None);
    // Each run has the row its begin wrote (status running, which holds the
    // warehouse) and the row its end wrote.
    assert_eq!(latest["rows"], 4, "{latest}");
    let columns: Vec<&str> = latest["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(
        columns,
        [
            "run_id",
            "kind",
            "logical_date",
            "started_at",
            "ended_at",
            "status",
            "tables",
            "model_version",
            "code_version",
            "message",
            "summary",
            "state"
        ]
    );
    let dtypes: Vec<&str> = latest["dtypes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert!(dtypes.iter().all(|t| !t.contains("View")), "{dtypes:?}");
    let finished: Vec<&serde_json::Value> =
        latest["data"].as_array().unwrap().iter().filter(|r| r["status"] != "running").collect();
    let mut ids: Vec<String> = finished.iter().map(|r| r["run_id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    assert_eq!(ids, ["1", "2"]);
    for row in finished {
        let id: i64 = row["run_id"].as_str().unwrap().parse().unwrap();
        let ours = gold_view["runs"].as_array().unwrap().iter().find(|r| r["run_id"] == id).unwrap();
        assert_eq!(row["kind"], ours["kind"]);
        assert_eq!(row["status"], ours["status"]);
        assert_eq!(row["logical_date"], ours["logical_date"]);
        assert_eq!(row["code_version"], ours["code_version"]);
    }

    let first = read_with_polars(&python, &table, Some(0));
    assert_eq!(first["rows"], 1, "version 0 holds the first run's begin only: {first}");
    assert_eq!(first["data"][0]["run_id"], "1");
    assert_eq!(first["data"][0]["status"], "running");
}
