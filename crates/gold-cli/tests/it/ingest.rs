//! `gold ingest` and the demo's ingest stage, as a user runs them.

use crate::{gold, gold_json, gold_ok, stderr};

#[test]
fn ingest_twice_adds_nothing_and_the_ledger_names_the_bronze_versions() {
    let dir = tempfile::tempdir().unwrap();
    gold_ok(dir.path(), &["generate", "--out", "landing", "--members", "200", "--days", "3"]);
    let (code, first) =
        gold_json(dir.path(), &["ingest", "--landing", "landing", "--date", "2024-12-31", "--warehouse", "wh"]);
    assert_eq!(code, Some(0), "{first}");
    let stage = &first["stages"][0];
    assert_eq!(stage["stage"], "ingest");
    assert_eq!(stage["rows_read"], stage["rows_written"]);
    assert!(stage["rows_read"].as_u64().unwrap() > 1000);
    let tables: Vec<String> =
        first["tables"].as_array().unwrap().iter().map(|t| t[0].as_str().unwrap().to_string()).collect();
    assert!(
        tables.contains(&"bronze_claims_batch".to_string()) && tables.contains(&"_gold_ingest_files".to_string()),
        "{tables:?}"
    );

    let (_, second) =
        gold_json(dir.path(), &["ingest", "--landing", "landing", "--date", "2024-12-31", "--warehouse", "wh"]);
    assert_eq!(second["stages"][0]["rows_written"], 0);
    assert_eq!(second["tables"].as_array().unwrap().len(), 0, "nothing new, no new version: {second}");

    let (_, runs) = gold_json(dir.path(), &["runs", "--warehouse", "wh"]);
    let runs = runs["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let versions: Vec<(String, i64)> = runs[0]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["table"].as_str().unwrap().to_string(), t["version"].as_i64().unwrap()))
        .collect();
    // One commit per day folder (versions 0, 1 and 2): the run's state is
    // the last.
    assert!(versions.contains(&("bronze_members".to_string(), 2)), "{versions:?}");
    let batches = &runs[0]["summary"]["stages"][0]["sources"][0];
    assert_eq!(batches["source"], "members");
    assert_eq!(batches["batch_ids"], serde_json::json!(["members-000001", "members-000002", "members-000003"]));
    assert_eq!(runs[0]["summary"]["stages"][0]["stage"], "ingest");
}

#[test]
fn a_failed_ingest_exits_1_and_is_recorded_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let o = gold(dir.path(), &["ingest", "--landing", "no-such-landing", "--warehouse", "wh"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no-such-landing"), "{}", stderr(&o));
    let (_, runs) = gold_json(dir.path(), &["runs", "--warehouse", "wh"]);
    let run = &runs["runs"][0];
    assert_eq!(run["status"], "failed");
    assert!(run["message"].as_str().unwrap().contains("no-such-landing"));
}

#[test]
fn wrong_database_credentials_are_a_clear_error_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    gold_ok(dir.path(), &["generate", "--out", "landing", "--members", "20", "--days", "1"]);
    // A project whose models turn the SQL member source on.
    std::fs::create_dir(dir.path().join("models")).unwrap();
    let sources = reference::models::SOURCES.replace("active = false", "active = true");
    std::fs::write(dir.path().join("models/sources.toml"), sources).unwrap();
    // An unreachable server is a transient error; no retries here.
    std::fs::write(dir.path().join("gold.toml"), "[build]\nretries = 0\n").unwrap();
    let run = |url: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gold"))
            .args(["ingest", "--landing", "landing", "--date", "2024-12-29", "--warehouse", "wh"])
            .current_dir(dir.path())
            .env("GOLD_MEMBERS_DB_URL", url)
            .output()
            .unwrap()
    };
    let o = run("postgres://gold:s3cret@127.0.0.1:1/test");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("members_db") && err.contains("127.0.0.1:1") && !err.contains("s3cret"), "{err}");
    if let Ok(pg) = std::env::var("GOLD_TEST_POSTGRES_URL") {
        let mut bad = url::Url::parse(&pg).unwrap();
        bad.set_username("no_such_user").unwrap();
        bad.set_password(Some("s3cret")).unwrap();
        let o = run(bad.as_str());
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("no_such_user") && !err.contains("s3cret"), "{err}");
    }
    // With the embedded default (legacy.db), the same models ingest.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gold"))
        .args(["ingest", "--landing", "landing", "--date", "2024-12-29", "--warehouse", "wh"])
        .current_dir(dir.path())
        .env_remove("GOLD_MEMBERS_DB_URL")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.path().join("wh/bronze_members_db/_delta_log").is_dir());
}
