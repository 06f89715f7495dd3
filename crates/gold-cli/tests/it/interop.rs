//! Other engines read what gold wrote: polars-deltalake, DuckDB's delta
//! extension, chdb (with delta-kernel-rs and with ClickHouse's own reader)
//! and Sail (Spark Connect), at the latest version and at older ones, and a
//! gold SQL model runs unchanged on Sail's Spark SQL. `tests/run.sh`
//! installs them (tests/interop/requirements.txt) and sets GOLD_TEST_PYTHON.

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
fn polars_deltalake_reads_the_ledger_gold_wrote_including_its_first_versions() {
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

    let created = read_with_polars(&python, &table, Some(0));
    assert_eq!(created["rows"], 0, "version 0 is the empty ledger the first run created: {created}");
    let first = read_with_polars(&python, &table, Some(1));
    assert_eq!(first["rows"], 1, "version 1 holds the first run's begin only: {first}");
    assert_eq!(first["data"][0]["run_id"], "1");
    assert_eq!(first["data"][0]["status"], "running");
}

/// What `tests/interop/matrix.py READER TABLE [VERSION]` read, or `None`
/// when the reader cannot read a version (exit 3).
fn matrix(python: &str, args: &[&str]) -> Option<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/matrix.py");
    let out = Command::new(python).arg(&script).args(args).output().expect("run python");
    if out.status.code() == Some(3) {
        return None;
    }
    assert!(out.status.success(), "matrix.py {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Some(serde_json::from_slice(&out.stdout).expect("matrix.py JSON"))
}

fn gold_rows(dir: &Path, extra: &[&str], sql: &str) -> Vec<serde_json::Value> {
    let mut args = vec!["--warehouse", "wh", "sql", sql, "--role", "auditor"];
    args.extend_from_slice(extra);
    let (code, doc) = gold_json(dir, &args);
    assert_eq!(code, Some(0), "{doc}");
    doc["rows"].as_array().unwrap().clone()
}

/// The readers of the interop matrix: delta-kernel-rs through polars,
/// DuckDB and chdb, ClickHouse's own Delta reader, and Sail's.
const READERS: [&str; 5] = ["polars", "duckdb", "chdb", "chdb-native", "sail"];

#[test]
fn every_reader_in_the_matrix_reads_a_dimension_a_fact_and_an_aggregate_as_gold_does() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    gold_ok(d, &["generate", "--out", "landing", "--members", "150", "--days", "2"]);
    for day in ["2024-12-29", "2024-12-30"] {
        gold_ok(d, &["--warehouse", "wh", "build", "--landing", "landing", "--date", day]);
    }
    let keys =
        [("dim_members", "member_sk"), ("fact_claims", "claim_id"), ("gold_provider_monthly_summary", "provider_id")];
    for (table, key) in keys {
        let uri = d.join("wh").join(table).display().to_string();
        let ours = gold_rows(d, &[], &format!("SELECT CAST({key} AS VARCHAR) AS k FROM {table} ORDER BY k"));
        assert!(!ours.is_empty(), "{table} is empty");
        let mut reference: Option<serde_json::Value> = None;
        for reader in READERS {
            let doc = matrix(&python, &[reader, &uri]).expect("every reader reads the latest version");
            assert_eq!(doc["rows"].as_u64(), Some(ours.len() as u64), "{reader} on {table}: {}", doc["engine"]);
            // Sample values: every key gold has, as often as gold has it.
            let mut theirs: Vec<&str> =
                doc["data"].as_array().unwrap().iter().map(|r| r[key].as_str().unwrap()).collect();
            theirs.sort_unstable();
            let ours: Vec<&str> = ours.iter().map(|r| r["k"].as_str().unwrap()).collect();
            assert_eq!(theirs, ours, "{reader} on {table}");
            // Every value of every row, rendered alike, agrees across readers.
            match &reference {
                None => reference = Some(doc),
                Some(r) => assert_eq!(doc["data"], r["data"], "{reader} and polars disagree on {table}"),
            }
        }
    }

    // Time travel: the dimension's version in run 1's state (the ledger's)
    // is day 1's, as gold's own reader sees it at run 1.
    let uri = d.join("wh/dim_members").display().to_string();
    let (_, runs) = gold_json(d, &["--warehouse", "wh", "runs"]);
    let run1 = runs["runs"].as_array().unwrap().iter().find(|r| r["run_id"] == 1).unwrap();
    let version = run1["state"]["dim_members"].as_i64().unwrap().to_string();
    let day1 = gold_rows(d, &["--as-of-run", "1"], "SELECT count(*) AS n FROM dim_members")[0]["n"].as_u64().unwrap();
    let day2 = gold_rows(d, &[], "SELECT count(*) AS n FROM dim_members")[0]["n"].as_u64().unwrap();
    assert!(day1 < day2, "day 2 closed and opened versions: {day1} vs {day2}");
    let mut travelled = Vec::new();
    for reader in READERS {
        if let Some(doc) = matrix(&python, &[reader, &uri, &version]) {
            assert_eq!(doc["rows"].as_u64(), Some(day1), "{reader} at version {version}");
            travelled.push(reader);
        }
    }
    assert_eq!(travelled, ["polars", "duckdb", "chdb", "sail"], "chdb-native alone has no time travel");
}

#[test]
fn a_gold_sql_model_gives_the_same_result_on_sails_spark_sql_as_on_datafusion() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    gold_ok(d, &["demo", "--out", "demo", "--members", "150", "--warehouse", "wh"]);
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/gold/gold_provider_monthly_summary.sql");
    let view = format!("fact_claims={}", d.join("wh/fact_claims").display());
    let spark = matrix(&python, &["sail-sql", model.to_str().unwrap(), &view]).unwrap();
    let table = d.join("wh/gold_provider_monthly_summary").display().to_string();
    let datafusion = matrix(&python, &["polars", &table]).unwrap();
    assert!(datafusion["rows"].as_u64().unwrap() > 0);
    assert_eq!(spark["columns"], datafusion["columns"]);
    assert_eq!(spark["data"], datafusion["data"], "Spark SQL on Sail and DataFusion disagree");
}

/// A table `gold snapshot` made, with deletion vectors: day 2 changes 3 of
/// day 1's 20 members and drops one, so the day-1 file stays and its
/// vector hides those 4 rows.
#[test]
fn every_reader_but_clickhouses_own_applies_the_deletion_vectors_of_a_snapshot_table() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let day = |n: u32| -> String {
        let mut text = String::from("MemberID,Region,LastUpdated\n");
        for i in 0..20 {
            let region = if n == 2 && [2, 5, 11].contains(&i) { "South" } else { "North" };
            if n == 1 || i != 7 {
                text.push_str(&format!("M{i:02},{region},2025-01-0{n}\n"));
            }
        }
        text
    };
    for n in [1, 2] {
        std::fs::write(d.join(format!("day{n}.csv")), day(n)).unwrap();
        let (source, date) = (format!("day{n}.csv"), format!("2025-01-0{n}"));
        let args = ["snapshot", "--source", &source, "--target", "dim", "--key", "MemberID", "--date", &date];
        let (code, doc) = gold_json(d, &[&args[..], &["--track-all-except", "LastUpdated"]].concat());
        assert_eq!(code, Some(0), "{doc}");
    }
    let log = std::fs::read_to_string(d.join("dim/_delta_log/00000000000000000001.json")).unwrap();
    assert!(log.contains(r#""cardinality":4"#), "day 2 hides 4 rows of the day-1 file: {log}");

    let uri = d.join("dim").display().to_string();
    let mut reference: Option<serde_json::Value> = None;
    for reader in READERS {
        let doc = matrix(&python, &[reader, &uri]).expect("every reader reads the latest version");
        let rows = doc["data"].as_array().unwrap();
        let current = |r: &&serde_json::Value| r["is_current"] == "true";
        if reader == "chdb-native" {
            // ClickHouse's own Delta reader ignores deletion vectors: it
            // returns the 4 hidden rows as well, still current. Use its
            // delta-kernel-rs reader, or --no-deletion-vectors.
            assert_eq!((rows.len(), rows.iter().filter(current).count()), (27, 23), "{doc}");
            continue;
        }
        assert_eq!((rows.len(), rows.iter().filter(current).count()), (23, 19), "{reader}: {doc}");
        let region = |id: &str| -> Vec<&str> {
            rows.iter().filter(|r| r["MemberID"] == id && current(r)).map(|r| r["Region"].as_str().unwrap()).collect()
        };
        assert_eq!((region("M02"), region("M03"), region("M07")), (vec!["South"], vec!["North"], vec![]), "{reader}");
        match &reference {
            None => reference = Some(doc),
            Some(r) => assert_eq!(doc["data"], r["data"], "{reader} and polars disagree"),
        }
    }
}
