//! Sixty nights of a small insurer's steady flow: every table keeps its
//! whole log (no commit file is cleaned up, however old), is checkpointed
//! every ten commits, keeps a bounded number of active files however many
//! nights append to it, and the incremental year equals a full refresh of
//! facts, scores and aggregates.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, SystemTime};

use deltalake::arrow::array::RecordBatch;
use pipeline::{BuildRequest, Models, Stage};
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

/// The most active files any table may hold in these sixty nights: each
/// night appends one or a few files to most tables, so without compaction
/// the appended tables would hold sixty and more.
const MAX_ACTIVE_FILES: usize = 2 * COMPACT_AT + 10;

/// The active files of `name`.
async fn active_files(warehouse: &Warehouse, name: &str) -> usize {
    let table = warehouse.load(&TableName::new(name).unwrap()).await.unwrap().unwrap();
    table.snapshot().unwrap().log_data().iter().count()
}

/// Checks every table's layout bounds after night `night`.
async fn assert_layout(warehouse: &Warehouse, root: &Path, night: usize) {
    for (table, _) in warehouse.tables().await.unwrap() {
        let (commits, checkpoints) = log_files(&root.join(&table));
        let latest = *commits.last().unwrap();
        let since = latest - checkpoints.last().copied().unwrap_or(0);
        assert!(latest < 10 || since <= 10, "night {night}, {table}: {since} commits since a checkpoint");
        let files = active_files(warehouse, &table).await;
        assert!(files <= MAX_ACTIVE_FILES, "night {night}, {table}: {files} active files");
        let small = small_files(warehouse, &table).await;
        assert!(small < COMPACT_AT + 10, "night {night}, {table}: a partition holds {small} small files");
    }
}

/// Every row of the facts, scores and aggregates, by table, without the
/// `run_id` column that names the run that wrote a row.
async fn derived_content(warehouse: &Warehouse) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for (table, _) in warehouse.tables().await.unwrap() {
        let derived = ["fact_", "bridge_", "gold_"].iter().any(|p| table.starts_with(p));
        if !derived || table == scoring::MODELS {
            continue;
        }
        let batches: Vec<RecordBatch> = testkit::rows(warehouse, &table)
            .await
            .into_iter()
            .map(|b| {
                let keep: Vec<usize> =
                    (0..b.num_columns()).filter(|&i| b.schema().field(i).name() != "run_id").collect();
                b.project(&keep).unwrap()
            })
            .collect();
        out.insert(table, testkit::content(&batches));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_nights_keep_bounded_layouts_and_equal_a_full_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    let config = synth::Config {
        members: 150,
        days: 60,
        seed: 17,
        claims_per_member_year: Some(12.0),
        ..synth::Config::new(&landing)
    };
    synth::generate(&config, &mut |_, _| {}).await.unwrap();
    let root = dir.path().join("wh");
    let warehouse = Warehouse::open(root.to_str().unwrap()).unwrap();
    let models = Models::defaults().unwrap();
    let mut compacted = 0;
    let mut last = None;
    for night in 1..=60usize {
        let day = config.start_date + chrono::Duration::days(night as i64 - 1);
        let done = pipeline::build(&warehouse, &models, &BuildRequest::nightly(&landing, Some(day))).await.unwrap();
        let compact = done.stages.0.iter().find(|s| s.stage == Stage::Compact).unwrap();
        compacted +=
            compact.doc["tables"].as_array().unwrap().iter().filter(|t| !t["upkeep"]["compacted"].is_null()).count();
        if night == 30 {
            // Half the nights now look three months old: past delta-rs's
            // default log retention of 30 days.
            age_logs(&root, 90);
        }
        if night % 10 == 0 {
            assert_layout(&warehouse, &root, night).await;
        }
        last = Some(day);
    }
    assert!(compacted > 0, "sixty nights of appends compact some table");
    for (table, _) in warehouse.tables().await.unwrap() {
        let (commits, _) = log_files(&root.join(&table));
        let latest = *commits.last().unwrap();
        assert_eq!(commits, (0..=latest).collect::<Vec<_>>(), "{table}: every commit file stays");
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

    // The incremental year equals a full refresh of what derives from silver.
    let incremental = derived_content(&warehouse).await;
    assert!(incremental.get("gold_fraud_scores").is_some_and(|rows| !rows.is_empty()), "the year was scored");
    let refresh = BuildRequest {
        only: vec![Stage::Facts, Stage::Score, Stage::Aggregates],
        full_refresh: true,
        ..BuildRequest::nightly(&landing, last)
    };
    pipeline::build(&warehouse, &models, &refresh).await.unwrap();
    let full = derived_content(&warehouse).await;
    assert_eq!(incremental.keys().collect::<Vec<_>>(), full.keys().collect::<Vec<_>>());
    for (table, rows) in &incremental {
        assert_eq!(rows.len(), full[table].len(), "{table}: same row count");
        assert!(rows == &full[table], "{table}: the full refresh gives the incremental year's content");
    }
}
