//! Operate and audit: nightly builds, rebuild --as-of, rollback, diff,
//! history, concurrent builds and builds killed part-way.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use storage::{RowSet, TableName, Warehouse};

use crate::{gold, gold_json, gold_ok, stderr};

const DAYS: [&str; 5] = ["2024-12-29", "2024-12-30", "2024-12-31", "2025-01-01", "2025-01-02"];

fn generate(dir: &Path) {
    gold_ok(dir, &["generate", "--out", "landing", "--members", "250", "--days", "5", "--seed", "11"]);
}

fn build(dir: &Path, warehouse: &str, day: &str) -> serde_json::Value {
    let (code, doc) = gold_json(dir, &["--warehouse", warehouse, "build", "--landing", "landing", "--date", day]);
    assert_eq!(code, Some(0), "build {day}: {doc}");
    doc
}

/// Every table's version as the ledger recorded it for run `run`.
fn state_of(dir: &Path, warehouse: &str, run: i64) -> BTreeMap<String, i64> {
    let (_, doc) = gold_json(dir, &["--warehouse", warehouse, "runs"]);
    let r = doc["runs"].as_array().unwrap().iter().find(|r| r["run_id"] == run).expect("run in the ledger").clone();
    r["state"].as_object().expect("state recorded").iter().map(|(t, v)| (t.clone(), v.as_i64().unwrap())).collect()
}

/// The content of every table at the latest version, or at `state`'s
/// versions, by table, as (rows, content hash), leaving out `exclude`d
/// columns. Read with the storage layer, not through the CLI.
fn contents(root: &Path, state: Option<&BTreeMap<String, i64>>, exclude: &[&str]) -> BTreeMap<String, (usize, String)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let w = Warehouse::open(&root.display().to_string()).unwrap();
        let mut out = BTreeMap::new();
        let tables = w.tables().await.unwrap();
        for (table, latest) in tables {
            if table.starts_with("_gold") {
                continue;
            }
            let version = state.map_or(Some(latest), |s| s.get(&table).copied());
            let Some(version) = version else { continue };
            let batches = w.scan(&TableName::new(&table).unwrap(), Some(version)).await.unwrap();
            let rows = RowSet::from_batches(&batches, exclude).unwrap();
            out.insert(table, (rows.rows.len(), rows.content_hash()));
        }
        out
    })
}

#[test]
fn nightly_builds_rebuild_as_of_a_day_and_roll_back_and_forth() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d);
    let mut runs = Vec::new();
    for day in DAYS {
        runs.push(build(d, "wh", day)["run_id"].as_i64().unwrap());
    }
    let day2 = state_of(d, "wh", runs[1]);
    let day3 = state_of(d, "wh", runs[2]);
    let day5 = state_of(d, "wh", runs[4]);
    for table in ["bronze_claims_batch", "silver_claims", "dim_members", "fact_claims", "gold_fraud_scores"] {
        assert!(day3.contains_key(table), "day 3's state names {table}: {day3:?}");
    }
    let live_before = contents(&d.join("wh"), None, &[]);

    // Rebuild day 3 into another folder: every table matches day 3's run.
    let (code, doc) = gold_json(d, &["--warehouse", "wh", "rebuild", "--as-of", DAYS[2], "--out", "rb3"]);
    assert_eq!(code, Some(0), "rebuild: {doc}");
    assert_eq!(doc["run_id"], runs[2]);
    assert_eq!(doc["all_match"], true, "{doc}");
    let compared: Vec<&str> = doc["tables"].as_array().unwrap().iter().map(|t| t["table"].as_str().unwrap()).collect();
    for table in ["silver_claims", "dim_members", "dim_providers", "fact_claims", "gold_fraud_scores", "dq_results"] {
        assert!(compared.contains(&table), "rebuild compares {table}: {compared:?}");
    }
    for t in doc["tables"].as_array().unwrap() {
        assert_eq!(t["live_hash"], t["rebuilt_hash"], "{t}");
    }
    // Independently: the rebuilt tables hold day 3's content, not day 5's.
    let rebuilt = contents(&d.join("rb3"), None, &[]);
    let live3 = contents(&d.join("wh"), Some(&day3), &[]);
    let live5 = contents(&d.join("wh"), Some(&day5), &[]);
    assert_eq!(rebuilt["fact_claims"], live3["fact_claims"]);
    assert_ne!(rebuilt["fact_claims"], live5["fact_claims"], "day 5 has more claims than day 3");
    assert!(live3["fact_claims"].0 > 0);
    // The live warehouse was only read.
    assert_eq!(contents(&d.join("wh"), None, &[]), live_before);
    assert_eq!(gold_json(d, &["--warehouse", "wh", "runs"]).1["runs"].as_array().unwrap().len(), 5);
    // A second rebuild refuses to write over the first.
    let o = gold(d, &["--warehouse", "wh", "rebuild", "--as-of", DAYS[2], "--out", "rb3"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));

    // Roll back to day 2: every table shows day 2's content.
    let (code, doc) = gold_json(d, &["--warehouse", "wh", "rollback", "--to-run", &runs[1].to_string()]);
    assert_eq!(code, Some(0), "rollback: {doc}");
    let rollback_run = doc["run_id"].as_i64().unwrap();
    assert!(!doc["restored"].as_array().unwrap().is_empty());
    let now = contents(&d.join("wh"), None, &[]);
    let live2 = contents(&d.join("wh"), Some(&day2), &[]);
    for (table, content) in &live2 {
        assert_eq!(&now[table], content, "{table} is back at day 2");
    }
    // A table day 2 did not have yet is empty.
    for (table, (rows, _)) in &now {
        if !live2.contains_key(table) {
            assert_eq!(*rows, 0, "{table} did not exist at day 2");
        }
    }
    // And `gold sql`, which reads the last successful run's versions (the
    // rollback's), counts day 2's claims.
    let sql_count = || {
        let o = Command::new(env!("CARGO_BIN_EXE_gold"))
            .args(["--warehouse", "wh", "sql", "SELECT count(*) AS n FROM fact_claims", "--format", "csv"])
            .current_dir(d)
            .env_remove("GOLD_WAREHOUSE")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).lines().nth(1).unwrap().parse::<usize>().unwrap()
    };
    assert_eq!(sql_count(), live2["fact_claims"].0, "gold sql shows day 2's claims");
    // Nothing was deleted: day 5's versions still read.
    assert_eq!(contents(&d.join("wh"), Some(&day5), &[]), live5);
    let (_, runs_doc) = gold_json(d, &["--warehouse", "wh", "runs"]);
    let last = runs_doc["runs"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "rollback");
    assert_eq!(last["status"], "succeeded");

    // Roll back the rollback: day 5's content again.
    let (code, doc) = gold_json(d, &["--warehouse", "wh", "rollback", "--to-run", &runs[4].to_string()]);
    assert_eq!(code, Some(0), "rollback of the rollback: {doc}");
    assert_eq!(contents(&d.join("wh"), None, &[]), live5);
    assert_eq!(sql_count(), live5["fact_claims"].0, "gold sql shows day 5's claims again");
    assert!(rollback_run < doc["run_id"].as_i64().unwrap());

    // Back to day 2 and build day 3 again: the same silver, dimensions and
    // facts as the first day 3 (the rollback reset every exactly-once
    // marker, so day 3 is ingested and processed again, once). Only the
    // lineage columns naming the run differ: run_id, and the batch_id of
    // a dimension row inferred by a run ("inferred@<run>").
    gold_ok(d, &["--warehouse", "wh", "rollback", "--to-run", &runs[1].to_string()]);
    build(d, "wh", DAYS[2]);
    let again = contents(&d.join("wh"), None, &["run_id", "batch_id"]);
    let first = contents(&d.join("wh"), Some(&day3), &["run_id", "batch_id"]);
    for table in
        ["bronze_claims_batch", "silver_claims", "silver_members", "dim_members", "dim_providers", "fact_claims"]
    {
        assert_eq!(again[table], first[table], "{table} after the rollback and a new day 3");
    }

    // Diff: day 2 → day 3 of fact_claims adds the claims of day 3.
    let from = day2["fact_claims"].to_string();
    let to = day3["fact_claims"].to_string();
    let (code, doc) =
        gold_json(d, &["--warehouse", "wh", "diff", "--table", "fact_claims", "--from", &from, "--to", &to]);
    assert_eq!(code, Some(0), "{doc}");
    let (added, removed, changed) =
        (doc["added"].as_u64().unwrap(), doc["removed"].as_u64().unwrap(), doc["changed"].as_u64().unwrap());
    assert!(added > 0, "{doc}");
    assert_eq!(
        doc["rows_after"].as_u64().unwrap() - doc["rows_before"].as_u64().unwrap(),
        added - removed,
        "the counts add up"
    );
    assert_eq!(doc["key"][0], "claim_id");
    let _ = changed;
    // A version against itself has no differences.
    let (_, same) = gold_json(d, &["--warehouse", "wh", "diff", "--table", "fact_claims", "--from", &to, "--to", &to]);
    assert_eq!(
        (same["added"].as_u64(), same["removed"].as_u64(), same["changed"].as_u64()),
        (Some(0), Some(0), Some(0))
    );

    // History: one table's versions name their runs; the run view lists
    // the commits of each run.
    let (code, doc) = gold_json(d, &["--warehouse", "wh", "history", "dim_members"]);
    assert_eq!(code, Some(0));
    let versions = doc["versions"].as_array().unwrap();
    assert!(versions.iter().any(|v| v["operation"] == "RESTORE"), "rollbacks are RESTOREs");
    assert!(versions.iter().all(|v| v["gold"]["gold.run_id"].is_i64()), "every version names its run");
    let (_, doc) = gold_json(d, &["--warehouse", "wh", "history"]);
    let first_run = &doc["runs"][0];
    assert!(first_run["commits"].as_array().unwrap().iter().any(|c| c["table"] == "fact_claims"));
    let text = gold_ok(d, &["--warehouse", "wh", "history", "fact_claims"]);
    assert!(text.contains("RESTORE") && text.contains("rollback"), "{text}");
}

/// Starts a build that stops at `point`, and returns once it has.
fn start_paused(dir: &Path, warehouse: &str, day: &str, point: &str) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gold"))
        .args(["--warehouse", warehouse, "build", "--landing", "landing", "--date", day])
        .current_dir(dir)
        .env_remove("GOLD_WAREHOUSE")
        .env("RUST_LOG", "warn")
        .env("GOLD_FAILPOINT", point)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = lines.next().unwrap_or_else(|| panic!("the build ended before {point}")).unwrap();
        if line.contains(&format!("failpoint {point}")) {
            break;
        }
    }
    child
}

/// A build that catches up several day folders replays them one landing
/// day at a time: its dimensions hold the same SCD2 history as the nightly
/// builds of those days, not only the last extract's, and a rebuild of it
/// replays the same rounds.
#[test]
fn a_build_that_catches_up_five_days_gives_the_dimensions_their_nightly_history() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d);
    let stages = ["--only", "ingest,silver,dims"];
    let build_to = |warehouse: &str, day: &str| {
        let mut args = vec!["--warehouse", warehouse, "build", "--landing", "landing", "--date", day];
        args.extend(stages);
        let (code, doc) = gold_json(d, &args);
        assert_eq!(code, Some(0), "build {day} into {warehouse}: {doc}");
        doc
    };
    for day in DAYS {
        build_to("nightly", day);
    }
    let doc = build_to("catchup", DAYS[4]);
    let stage = |name: &str| doc["stages"].as_array().unwrap().iter().find(|s| s["stage"] == name).unwrap().clone();
    let days = |name: &str| -> Vec<String> {
        stage(name)["rounds"].as_array().unwrap().iter().map(|r| r["day"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(days("silver"), DAYS, "one silver round per landing day: {doc}");
    assert_eq!(days("dims"), DAYS, "the dimensions merge after each round: {doc}");

    // Each silver table was processed day by day: the same rows as the
    // nightly builds left (`_updated_at` is the run's clock, which differs).
    let nightly = contents(&d.join("nightly"), None, &["_updated_at"]);
    let catchup = contents(&d.join("catchup"), None, &["_updated_at"]);
    for table in
        ["silver_members", "silver_patients", "silver_providers", "dim_members", "dim_patients", "dim_providers"]
    {
        assert_eq!(catchup.get(table), nightly.get(table), "{table}: the catch-up equals the nightly builds");
    }
    // And the history is there: members changed during the five days.
    let (dim_rows, _) = &catchup["dim_members"];
    let (members, _) = &catchup["silver_members"];
    assert!(dim_rows > members, "dim_members holds {dim_rows} versions of {members} members");

    // A rebuild of the catch-up run replays the same rounds.
    let (code, doc) = gold_json(d, &["--warehouse", "catchup", "rebuild", "--as-of", DAYS[4], "--out", "rb"]);
    assert_eq!(code, Some(0), "rebuild: {doc}");
    assert_eq!(doc["all_match"], true, "{doc}");

    // A catch-up killed between the first day's silver and its dimensions:
    // the next build merges that day first, then replays the rest, and
    // ends with the same history.
    let mut paused = start_paused(d, "killed", DAYS[4], "silver-round");
    paused.kill().unwrap();
    paused.wait().unwrap();
    build_to("killed", DAYS[4]);
    let recovered = contents(&d.join("killed"), None, &["_updated_at"]);
    for table in ["silver_members", "dim_members", "dim_patients", "dim_providers"] {
        assert_eq!(
            recovered.get(table),
            nightly.get(table),
            "{table}: the recovered catch-up equals the nightly builds"
        );
    }
}

#[test]
fn a_second_build_refuses_while_one_runs_and_killed_builds_recover() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d);
    // The reference: two days built without trouble.
    build(d, "clean", DAYS[0]);
    build(d, "clean", DAYS[1]);
    let clean = contents(&d.join("clean"), None, &["run_id"]);

    for point in ["after-ingest", "dims-merged", "facts-written"] {
        let wh = format!("wh-{point}");
        build(d, &wh, DAYS[0]);
        let mut paused = start_paused(d, &wh, DAYS[1], point);
        // While it holds the warehouse, another build refuses.
        let o = gold(d, &["--warehouse", &wh, "build", "--landing", "landing", "--date", DAYS[1]]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("busy") && stderr(&o).contains("still running"), "{}", stderr(&o));
        // SIGKILL, then the next build completes the day.
        paused.kill().unwrap();
        paused.wait().unwrap();
        build(d, &wh, DAYS[1]);
        let (_, doc) = gold_json(d, &["--warehouse", &wh, "runs"]);
        let runs = doc["runs"].as_array().unwrap();
        let statuses: Vec<&str> = runs.iter().map(|r| r["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["succeeded", "failed", "succeeded"], "{point}: {doc}");
        assert!(runs[1]["message"].as_str().unwrap().contains("abandoned"), "{}", runs[1]);
        // Same rows as the clean warehouse: nothing twice, nothing lost.
        // (Scores name the model, whose version names the table versions
        // it was trained on; those differ by the killed run's commits. And
        // `_dim_changes` is the facts stage's cache: a run killed between a
        // dimension's commit and its changes' leaves it short, and the facts
        // stage then rebuilds every fact instead of trusting it.)
        let recovered = contents(&d.join(&wh), None, &["run_id", "model_version"]);
        for (table, content) in &clean {
            if table.starts_with("gold_") || table.starts_with('_') {
                continue;
            }
            assert_eq!(recovered.get(table), Some(content), "{point}: {table}");
        }
        assert_eq!(recovered["gold_fraud_scores"].0, clean["gold_fraud_scores"].0, "{point}: one score per claim");
    }
}

/// Data files of a table folder.
fn parquet_files(table_dir: &Path) -> usize {
    fn walk(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| if p.is_dir() { walk(&p) } else { usize::from(p.extension().is_some_and(|x| x == "parquet")) })
            .sum()
    }
    walk(table_dir)
}

#[test]
fn maintain_compacts_without_changing_rows_and_vacuum_keeps_what_runs_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d);
    let mut runs = Vec::new();
    for day in &DAYS[..3] {
        runs.push(build(d, "wh", day)["run_id"].as_i64().unwrap());
    }
    let before = contents(&d.join("wh"), None, &[]);
    let day1 = state_of(d, "wh", runs[0]);
    let day1_content = contents(&d.join("wh"), Some(&day1), &[]);

    let (code, doc) = gold_json(d, &["--warehouse", "wh", "maintain", "--optimize"]);
    assert_eq!(code, Some(0), "{doc}");
    let tables = doc["tables"].as_array().unwrap();
    let members = tables.iter().find(|t| t["table"] == "dim_members").unwrap();
    assert_eq!(members["optimize"]["zorder"][0], "member_id", "dimensions are Z-ordered on their key: {members}");
    let dq = tables.iter().find(|t| t["table"] == "dq_results").unwrap();
    assert!(
        dq["optimize"]["files_removed"].as_u64().unwrap() > dq["optimize"]["files_added"].as_u64().unwrap(),
        "each run's small file of data-quality results is compacted: {dq}"
    );
    assert_eq!(contents(&d.join("wh"), None, &[]), before, "compaction changes no row");
    let (_, runs_doc) = gold_json(d, &["--warehouse", "wh", "runs"]);
    assert_eq!(runs_doc["runs"].as_array().unwrap().last().unwrap()["kind"], "maintain");

    // Every run ended inside a one-hour window: vacuum keeps every file a
    // run's tables read, so day 1 still reads as it was.
    let files_before = parquet_files(&d.join("wh/dq_results"));
    let (code, doc) = gold_json(d, &["--warehouse", "wh", "maintain", "--vacuum", "--retain-hours", "1"]);
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(parquet_files(&d.join("wh/dq_results")), files_before);
    assert_eq!(contents(&d.join("wh"), Some(&day1), &[]), day1_content);

    // A build after compaction works as before.
    build(d, "wh", DAYS[3]);
    let latest = contents(&d.join("wh"), None, &[]);

    // With no window, only the last run's files stay: the compacted-away
    // small files go, and the current tables read the same.
    let (code, doc) = gold_json(d, &["--warehouse", "wh", "maintain", "--vacuum", "--retain-hours", "0"]);
    assert_eq!(code, Some(0), "{doc}");
    let deleted: u64 =
        doc["tables"].as_array().unwrap().iter().map(|t| t["vacuum"]["files_deleted"].as_u64().unwrap()).sum();
    assert!(deleted > 0, "{doc}");
    assert!(parquet_files(&d.join("wh/dq_results")) < files_before);
    assert_eq!(contents(&d.join("wh"), None, &[]), latest);

    // Flags are checked before anything runs.
    let o = gold(d, &["--warehouse", "wh", "maintain"]);
    assert_eq!(o.status.code(), Some(1));
    let o = gold(d, &["--warehouse", "wh", "maintain", "--optimize", "--table", "no_such_table"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no_such_table"), "{}", stderr(&o));
}

/// Forwards connections on `port` to `target`, starting only after `delay`:
/// a database that is down for a while.
fn late_proxy(port: u16, target: String, delay: std::time::Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = std::net::TcpStream::connect(&target) else { continue };
            let (mut c1, mut s1) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut c2, mut s2) = (client, server);
            std::thread::spawn(move || std::io::copy(&mut c1, &mut s1));
            std::thread::spawn(move || std::io::copy(&mut s2, &mut c2));
        }
    });
}

#[test]
fn a_stage_is_retried_while_its_database_is_down_and_fails_named_when_it_stays_down() {
    let Ok(pg) = std::env::var("GOLD_TEST_POSTGRES_URL") else {
        eprintln!("skipped: GOLD_TEST_POSTGRES_URL is not set (tests/run.sh sets it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let table = format!("members_retry_{}", std::process::id());
    gold_ok(
        d,
        &[
            "generate",
            "--out",
            "landing",
            "--members",
            "30",
            "--days",
            "1",
            "--members-db",
            &pg,
            "--members-table",
            &table,
        ],
    );
    std::fs::create_dir(d.join("models")).unwrap();
    let sources = reference::models::SOURCES
        .replace("active = false", "active = true")
        .replace("table = \"members\"", &format!("table = \"{table}\""));
    std::fs::write(d.join("models/sources.toml"), sources).unwrap();

    // The database answers only after 10.5 s: the first try gives up after
    // the pool's 10 s of connecting, and the retry a second later gets
    // through.
    let pg_url = url::Url::parse(&pg).unwrap();
    let target = format!("{}:{}", pg_url.host_str().unwrap(), pg_url.port().unwrap_or(5432));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut proxied = pg_url.clone();
    proxied.set_port(Some(port)).unwrap();
    late_proxy(port, target, std::time::Duration::from_millis(10_500));
    let build = |url: &str, warehouse: &str| {
        Command::new(env!("CARGO_BIN_EXE_gold"))
            .args([
                "--warehouse",
                warehouse,
                "build",
                "--landing",
                "landing",
                "--date",
                "2024-12-29",
                "--only",
                "ingest",
            ])
            .current_dir(d)
            .env_remove("GOLD_WAREHOUSE")
            .env("GOLD_MEMBERS_DB_URL", url)
            .output()
            .unwrap()
    };
    let o = build(proxied.as_str(), "wh");
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("stage ingest") && err.contains("retry 1 of 3"), "{err}");
    assert!(d.join("wh/bronze_members_db/_delta_log").is_dir());

    // Down for good: one retry (gold.toml), then the stage fails by name.
    std::fs::write(d.join("gold.toml"), "[build]\nretries = 1\n").unwrap();
    let o = build("postgres://postgres@127.0.0.1:1/test", "wh2");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("retry 1 of 1") && !err.contains("retry 2"), "{err}");
    assert!(err.contains("error: stage ingest") && err.contains("members_db"), "{err}");
    let (_, doc) = gold_json(d, &["--warehouse", "wh2", "runs"]);
    assert_eq!(doc["runs"][0]["status"], "failed");
}
