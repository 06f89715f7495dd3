//! gold on object storage: the nightly build, `gold sql`, `gold runs` and
//! `gold rebuild --out URI` on moto's S3 server and on Azurite (Azure
//! Blob), which tests/run.sh starts with tests/interop/emulators.sh. The
//! warehouse URI and its storage options come from gold.toml; credentials
//! come from the environment (the emulators' test keys).

use std::path::Path;

use crate::{gold, gold_json, gold_ok, stderr};

#[derive(Clone, Copy, Debug)]
enum Store {
    S3,
    Azure,
}

/// gold.toml for a fresh warehouse prefix on the emulator, or `None`
/// (skipped) when the emulator's variables are unset outside CI.
fn config(store: Store, test: &str) -> Option<(String, String)> {
    let var = match store {
        Store::S3 => "GOLD_TEST_S3_BUCKET",
        Store::Azure => "GOLD_TEST_AZURE_CONTAINER",
    };
    let (name, unique) = testkit::emulator(var, test)?;
    let (root, storage) = match store {
        Store::S3 => (
            format!("s3://{name}/{unique}"),
            format!(
                "aws_endpoint = \"{}\"\naws_allow_http = \"true\"\n",
                std::env::var("GOLD_TEST_S3_ENDPOINT").expect("GOLD_TEST_S3_ENDPOINT (emulators.sh)")
            ),
        ),
        Store::Azure => (format!("az://{name}/{unique}"), "azure_storage_use_emulator = \"true\"\n".to_string()),
    };
    let toml = format!("[warehouse]\nroot = \"{root}\"\n\n[warehouse.storage]\n{storage}");
    Some((root, toml))
}

fn count(dir: &Path, warehouse: &[&str], table: &str) -> i64 {
    let mut args = warehouse.to_vec();
    let sql = format!("SELECT count(*) AS n FROM {table}");
    args.extend(["sql", sql.as_str()]);
    let (code, doc) = gold_json(dir, &args);
    assert_eq!(code, Some(0), "{doc}");
    doc["rows"][0]["n"].as_i64().unwrap()
}

fn nightly_builds_and_a_rebuild_run_on_the_object_store(store: Store) {
    let Some((root, toml)) = config(store, "build") else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("gold.toml"), toml).unwrap();
    gold_ok(d, &["generate", "--out", "landing", "--members", "150", "--days", "2"]);
    let days = ["2024-12-29", "2024-12-30"];
    for day in days {
        for warehouse in [&[][..], &["--warehouse", "local"][..]] {
            let mut args = warehouse.to_vec();
            args.extend(["build", "--landing", "landing", "--date", day]);
            let (code, doc) = gold_json(d, &args);
            assert_eq!(code, Some(0), "build {day} {warehouse:?}: {doc}");
            let stages: Vec<&str> =
                doc["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
            assert_eq!(stages, ["ingest", "compact", "silver", "dims", "facts", "score", "aggregates"], "{doc}");
            if warehouse.is_empty() {
                assert_eq!(doc["warehouse"], format!("{root}/"), "the build wrote to the object store");
            }
        }
    }
    assert!(!d.join("warehouse").exists(), "nothing went to a local folder");

    // The object-store warehouse holds what a local one built from the
    // same landing holds.
    for table in ["silver_members", "dim_members", "fact_claims", "gold_fraud_scores", "gold_provider_monthly_summary"]
    {
        let remote = count(d, &[], table);
        assert!(remote > 0, "{table} is empty");
        assert_eq!(remote, count(d, &["--warehouse", "local"], table), "{table}");
    }
    let (_, runs) = gold_json(d, &["runs"]);
    let runs = runs["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{runs:?}");
    let (code, history) = gold_json(d, &["history", "fact_claims"]);
    assert_eq!(code, Some(0), "{history}");

    // Rebuild day 1 next to the warehouse, on the same store: every table
    // matches day 1's run, and the listing of the new prefix finds them.
    let out = format!("{root}-rebuild");
    let (code, doc) = gold_json(d, &["rebuild", "--as-of", days[0], "--out", &out]);
    assert_eq!(code, Some(0), "rebuild: {doc}");
    assert_eq!(doc["all_match"], true, "{doc}");
    assert!(doc["tables"].as_array().unwrap().len() >= 10, "{doc}");
    let o = gold(d, &["rebuild", "--as-of", days[0], "--out", &out]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
}

#[test]
fn s3_nightly_builds_and_a_rebuild_run_on_the_object_store() {
    nightly_builds_and_a_rebuild_run_on_the_object_store(Store::S3);
}

#[test]
fn azure_nightly_builds_and_a_rebuild_run_on_the_object_store() {
    nightly_builds_and_a_rebuild_run_on_the_object_store(Store::Azure);
}

/// `gold snapshot` to a table on the object store: day 2 changes one of ten
/// keys, so a deletion vector file is written there and the day-1 file
/// hides that key's old row; the same rows in other bytes the next day
/// read the table back through the vector and change nothing.
fn a_snapshot_table_with_deletion_vectors_on_the_object_store(store: Store) {
    let Some((root, toml)) = config(store, "snapshot") else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("gold.toml"), toml).unwrap();
    let rows = |changed: bool| -> Vec<String> {
        (0..10).map(|i| format!("k{i},{}", if changed && i == 3 { "2" } else { "1" })).collect()
    };
    std::fs::write(d.join("day1.csv"), format!("id,value\n{}\n", rows(false).join("\n"))).unwrap();
    std::fs::write(d.join("day2.csv"), format!("id,value\n{}\n", rows(true).join("\n"))).unwrap();
    let reversed: Vec<String> = rows(true).into_iter().rev().collect();
    std::fs::write(d.join("day3.csv"), format!("id,value\n{}\n", reversed.join("\n"))).unwrap();
    let target = format!("{root}/dim");
    let snapshot = |file: &str, date: &str| {
        let args =
            ["snapshot", "--source", file, "--target", &target, "--key", "id", "--track", "value", "--date", date];
        let (code, doc) = gold_json(d, &args);
        assert_eq!(code, Some(0), "{file}: {doc}");
        doc
    };
    snapshot("day1.csv", "2025-01-01");
    let day2 = snapshot("day2.csv", "2025-01-02");
    let m = &day2["metrics"];
    assert_eq!(
        (m["closed"].as_u64(), m["unchanged"].as_u64(), day2["current_rows"].as_u64()),
        (Some(1), Some(9), Some(10))
    );
    let day3 = snapshot("day3.csv", "2025-01-03");
    assert!(day3["version"].is_null(), "nothing changed: {day3}");
    assert_eq!(day3["metrics"]["unchanged"].as_u64(), Some(10), "{day3}");
    assert!(!d.join("dim").exists(), "nothing went to a local folder");
}

#[test]
fn s3_snapshot_table_with_deletion_vectors() {
    a_snapshot_table_with_deletion_vectors_on_the_object_store(Store::S3);
}

#[test]
fn azure_snapshot_table_with_deletion_vectors() {
    a_snapshot_table_with_deletion_vectors_on_the_object_store(Store::Azure);
}

#[test]
fn credentials_in_gold_toml_are_refused_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[warehouse]\nroot = \"s3://bucket/wh\"\n\n[warehouse.storage]\naws_secret_access_key = \"hunter2\"\n";
    std::fs::write(dir.path().join("gold.toml"), toml).unwrap();
    let o = gold(dir.path(), &["runs"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("aws_secret_access_key") && err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    assert!(!err.contains("hunter2"), "the secret is never echoed: {err}");

    std::fs::remove_file(dir.path().join("gold.toml")).unwrap();
    let o = gold(dir.path(), &["--warehouse", "gs://bucket/wh", "runs"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("gs://"), "{}", stderr(&o));
}
