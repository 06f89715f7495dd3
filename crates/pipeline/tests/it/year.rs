//! Many nights in a row: every table keeps its whole log (no commit file
//! is cleaned up, however old), is checkpointed every ten commits, and no
//! partition keeps piling up small files (24 nights append about 190 to
//! `_gold_ingest_files` alone).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, SystemTime};

use pipeline::{BuildRequest, Models};
use storage::{COMPACT_AT, COMPACT_TARGET, TableName, Warehouse};

/// The versions of the commit files in `table`'s `_delta_log`, and the
/// versions of its checkpoints, read from the folder itself.
fn log_files(table: &Path) -> (Vec<u64>, Vec<u64>) {
    let (mut commits, mut checkpoints) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(table.join("_delta_log")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let version = name.get(..20).and_then(|v| v.parse::<u64>().ok());
        match version {
            Some(v) if name.ends_with(".json") => commits.push(v),
            Some(v) if name.contains(".checkpoint") => checkpoints.push(v),
            _ => {}
        }
    }
    commits.sort();
    checkpoints.sort();
    (commits, checkpoints)
}

/// Makes every log file of the warehouse look `days` older.
fn age_logs(wh: &Path, days: u64) {
    let then = SystemTime::now() - Duration::from_secs(days * 86_400);
    for table in std::fs::read_dir(wh).unwrap() {
        let log = table.unwrap().path().join("_delta_log");
        for entry in std::fs::read_dir(&log).into_iter().flatten() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::File::options().write(true).open(&path).unwrap().set_modified(then).unwrap();
            }
        }
    }
}

/// The most files below the compaction size that one partition of
/// `name` holds.
async fn small_files(warehouse: &Warehouse, name: &str) -> usize {
    let table = warehouse.load(&TableName::new(name).unwrap()).await.unwrap().unwrap();
    let mut per_partition: HashMap<String, usize> = HashMap::new();
    for file in table.snapshot().unwrap().log_data().iter() {
        if (file.size() as u64) < COMPACT_TARGET {
            let partition: BTreeMap<_, _> = file.partition_values_map().into_iter().collect();
            *per_partition.entry(format!("{partition:?}")).or_default() += 1;
        }
    }
    per_partition.into_values().max().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nightly_builds_keep_every_commit_checkpoint_every_ten_and_compact_small_files() {
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    testkit::stages::generate(&landing, 250, 24, 17).await;
    let root = dir.path().join("wh");
    let warehouse = Warehouse::open(root.to_str().unwrap()).unwrap();
    let models = Models::defaults().unwrap();
    let mut days: Vec<String> = std::fs::read_dir(&landing)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.len() == 10 && n.starts_with("20"))
        .collect();
    days.sort();
    assert_eq!(days.len(), 24);
    let mut compacted = 0;
    for (night, day) in days.iter().enumerate() {
        let request = BuildRequest::nightly(&landing, Some(testkit::date(day)));
        let done = pipeline::build(&warehouse, &models, &request).await.unwrap();
        let compact = done.stages.0.iter().find(|s| s.stage == pipeline::Stage::Compact).unwrap();
        compacted +=
            compact.doc["tables"].as_array().unwrap().iter().filter(|t| !t["upkeep"]["compacted"].is_null()).count();
        if night == 11 {
            // Half the nights now look three months old: past delta-rs's
            // default log retention of 30 days.
            age_logs(&root, 90);
        }
    }
    assert!(compacted > 0, "24 nights of appends compact some table");
    for (table, _) in warehouse.tables().await.unwrap() {
        let (commits, checkpoints) = log_files(&root.join(&table));
        let latest = *commits.last().unwrap();
        assert_eq!(commits, (0..=latest).collect::<Vec<_>>(), "{table}: every commit file stays");
        let since = latest - checkpoints.last().copied().unwrap_or(0);
        assert!(latest < 10 || since <= 10, "{table}: {since} commits since its last checkpoint {checkpoints:?}");
        // Compacted after ingest; the stages after it add a few files.
        let small = small_files(&warehouse, &table).await;
        assert!(small < COMPACT_AT + 10, "{table}: a partition holds {small} small files");
        let loaded = warehouse.load(&TableName::new(&table).unwrap()).await.unwrap().unwrap();
        let snapshot = loaded.snapshot().unwrap();
        let config = snapshot.metadata().configuration();
        assert_eq!(config.get("delta.checkpointInterval").map(String::as_str), Some("10"), "{table}");
        assert_eq!(config.get("delta.enableExpiredLogCleanup").map(String::as_str), Some("false"), "{table}");
    }
    // The first night is still there to travel to.
    let runs = storage::Ledger::new(&warehouse).runs().await.unwrap();
    let first = runs.iter().min_by_key(|r| r.run_id).unwrap();
    for (table, version) in &first.state {
        warehouse.load_version(&TableName::new(table).unwrap(), *version).await.unwrap();
    }
}
