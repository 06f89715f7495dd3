//! A generated three-day landing, ingested whole: counts, metadata,
//! rescued rows, exactly-once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ingest::SourceCatalog;
use storage::Warehouse;

use crate::support::{SEED, count, date, generate, ingest, latest_version, rows, strings};

/// Data rows of every file of a source, counted without the engine: CSV
/// lines minus the header (the generator writes no embedded newlines),
/// NDJSON non-blank lines.
fn source_lines(landing: &Path, file_name: &str) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(landing).unwrap() {
        let path = entry.unwrap().path().join(file_name);
        if let Ok(text) = std::fs::read_to_string(&path) {
            let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
            n += if file_name.ends_with(".csv") { lines.saturating_sub(1) } else { lines };
        }
    }
    n
}

/// A generated landing, an empty warehouse and the shipped sources.
struct Fixture {
    _dir: tempfile::TempDir,
    landing: PathBuf,
    wh_dir: PathBuf,
    warehouse: Warehouse,
    catalog: SourceCatalog,
}

async fn fixture(members: u64, days: u32) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (landing, wh_dir) = (dir.path().join("landing"), dir.path().join("wh"));
    generate(&landing, members, days, SEED).await;
    let warehouse = Warehouse::open(wh_dir.to_str().unwrap()).unwrap();
    Fixture { _dir: dir, landing, wh_dir, warehouse, catalog: SourceCatalog::default_catalog().unwrap() }
}

#[tokio::test]
async fn bronze_counts_equal_source_counts_and_a_rerun_adds_nothing() {
    let Fixture { _dir: _keep, landing, wh_dir, warehouse, catalog } = fixture(400, 3).await;
    let last = date("2024-12-31");

    let report = ingest(&warehouse, 1, &catalog, &landing, last).await.unwrap();
    assert_eq!(report.days.len(), 3);
    let files: HashMap<&str, &str> = HashMap::from([
        ("members", "members.csv"),
        ("providers", "providers.json"),
        ("diagnosis_ref", "diagnosis_ref.csv"),
        ("claims_batch", "claims_batch.csv"),
        ("claims_stream", "claims_stream.json"),
        ("patients", "patients.csv"),
        ("ehr_claims", "claims.csv"),
        ("medical_events", "medical_events.csv"),
    ]);
    for s in &report.sources {
        let expected = source_lines(&landing, files[s.source.as_str()]);
        assert!(expected > 0, "{}: the landing has rows", s.source);
        assert_eq!(
            (s.rows_read as usize, s.rows_written as usize),
            (expected, expected),
            "{}: rows read and written equal source rows",
            s.source
        );
        let bronze = rows(&warehouse, &s.table).await;
        assert_eq!(count(&bronze), expected, "{}: bronze rows", s.table);
        for meta in ["_batch_id", "_ingested_at", "_source_file", "_source_row", "_ingest_date"] {
            assert!(strings(&bronze, meta).iter().all(Option::is_some), "{}.{meta} is never NULL", s.table);
        }
        let places: std::collections::HashSet<(Option<String>, Option<String>)> =
            strings(&bronze, "_source_file").into_iter().zip(strings(&bronze, "_source_row")).collect();
        assert_eq!(places.len(), expected, "{}: every (file, row) once", s.table);
        let log = std::fs::read_to_string(wh_dir.join(&s.table).join("_delta_log/00000000000000000000.json")).unwrap();
        // Not partitioned, so that the nightly compaction can merge its
        // daily files.
        assert!(log.contains(r#""partitionColumns":[]"#), "{}: not partitioned", s.table);
    }

    // Malformed stream lines are kept raw, with the parse error.
    let stream = rows(&warehouse, "bronze_claims_stream").await;
    let (rescued, errors, places) = (
        strings(&stream, "_rescued_data"),
        strings(&stream, "_error"),
        strings(&stream, "_source_file").into_iter().zip(strings(&stream, "_source_row")).collect::<Vec<_>>(),
    );
    let defects = std::fs::read_to_string(landing.join("_truth/defects.csv")).unwrap();
    let mut malformed = 0;
    for line in defects.lines().filter(|l| l.contains(",malformed_json,") && l.contains("claims_stream")) {
        let mut f = line.split(',');
        let (file, row) = (f.next().unwrap().to_string(), f.next().unwrap().to_string());
        let i = places
            .iter()
            .position(|(pf, pr)| pf.as_deref() == Some(file.as_str()) && pr.as_deref() == Some(row.as_str()))
            .expect("malformed line is in bronze");
        let raw = std::fs::read_to_string(landing.join(&file))
            .unwrap()
            .lines()
            .nth(row.parse::<usize>().unwrap() - 1)
            .unwrap()
            .to_string();
        assert_eq!(rescued[i].as_deref(), Some(raw.as_str()));
        assert!(errors[i].as_deref().unwrap().starts_with("malformed JSON"), "{:?}", errors[i]);
        malformed += 1;
    }
    assert!(malformed > 0, "the landing has malformed lines");

    // The later file with an extra column: its values are rescued as JSON.
    let batch = rows(&warehouse, "bronze_claims_batch").await;
    let files_col = strings(&batch, "_source_file");
    let rescued = strings(&batch, "_rescued_data");
    let drift: Vec<_> =
        files_col.iter().zip(&rescued).filter(|(f, _)| f.as_deref() == Some("2024-12-30/claims_batch.csv")).collect();
    assert!(
        !drift.is_empty() && drift.iter().all(|(_, r)| r.as_deref().is_some_and(|r| r.contains("PlaceOfService"))),
        "extra column values are rescued"
    );

    // Run it again: nothing new, no new Delta version anywhere.
    let versions: Vec<_> = report.sources.iter().map(|s| latest_version(&wh_dir, &s.table)).collect();
    let checkpoint = latest_version(&wh_dir, "_gold_ingest_files");
    let again = ingest(&warehouse, 2, &catalog, &landing, last).await.unwrap();
    assert!(
        again.sources.iter().all(|s| s.read.is_empty() && s.rows_written == 0 && s.bronze_version.is_none()),
        "{:?}",
        again.sources
    );
    assert!(again.sources.iter().all(|s| s.warnings.is_empty()), "a rerun repeats no warnings");
    assert_eq!(report.sources.iter().map(|s| latest_version(&wh_dir, &s.table)).collect::<Vec<_>>(), versions);
    assert_eq!(latest_version(&wh_dir, "_gold_ingest_files"), checkpoint);
}

#[tokio::test]
async fn later_days_wait_for_their_date_and_missing_sources_are_warnings() {
    let Fixture { _dir: _keep, landing, warehouse, catalog, .. } = fixture(150, 3).await;

    let first = ingest(&warehouse, 1, &catalog, &landing, date("2024-12-29")).await.unwrap();
    assert_eq!(first.days, [date("2024-12-29")]);
    let members_day1 = count(&rows(&warehouse, "bronze_members").await);
    let second = ingest(&warehouse, 2, &catalog, &landing, date("2024-12-31")).await.unwrap();
    assert_eq!(second.days.len(), 3);
    let members = second.sources.iter().find(|s| s.source == "members").unwrap();
    assert_eq!(members.read.len(), 2, "only the two new day folders are read");
    assert_eq!(members.already_ingested, 1);
    assert_eq!(count(&rows(&warehouse, "bronze_members").await), members_day1 + members.rows_written as usize);
    let diagnosis = second.sources.iter().find(|s| s.source == "diagnosis_ref").unwrap();
    assert!(
        diagnosis.warnings.iter().any(|w| w.starts_with("2024-12-30: no file matches")),
        "{:?}",
        diagnosis.warnings
    );
    // One batch per new day folder, oldest first, each holding only its
    // day's file: silver replays a catch-up day by day from them.
    assert_eq!(members.batch_ids, ["members-000002", "members-000003"]);
    assert_eq!(members.batch_id.as_deref(), Some("members-000003"));
    let bronze = rows(&warehouse, "bronze_members").await;
    let (batch_ids, files) = (strings(&bronze, "_batch_id"), strings(&bronze, "_source_file"));
    let mut pairs: Vec<(String, String)> =
        batch_ids.into_iter().zip(files).map(|(b, f)| (b.unwrap(), f.unwrap())).collect();
    pairs.sort();
    pairs.dedup();
    assert_eq!(
        pairs,
        [
            ("members-000001".to_string(), "2024-12-29/members.csv".to_string()),
            ("members-000002".to_string(), "2024-12-30/members.csv".to_string()),
            ("members-000003".to_string(), "2024-12-31/members.csv".to_string()),
        ]
    );

    // The same landing spelled as a `./`-relative path is the same landing:
    // nothing is read twice (`gold demo --out ./x` once re-read it all).
    let cwd = std::env::current_dir().unwrap();
    let up = "../".repeat(cwd.components().count() - 1);
    let relative = std::path::Path::new(".").join(up).join(landing.strip_prefix("/").unwrap());
    let third = ingest(&warehouse, 3, &catalog, &relative, date("2024-12-31")).await.unwrap();
    assert!(third.sources.iter().all(|s| s.read.is_empty() && s.rows_written == 0), "{:?}", third.sources);
}

#[tokio::test]
async fn a_bronze_table_created_partitioned_by_ingest_date_keeps_that_layout() {
    let Fixture { _dir: _keep, landing, wh_dir, warehouse, catalog } = fixture(150, 3).await;
    ingest(&warehouse, 1, &catalog, &landing, date("2024-12-29")).await.unwrap();
    // The table as an older gold created it: partitioned by ingest date.
    let name = storage::TableName::new("bronze_members").unwrap();
    let day1 = rows(&warehouse, "bronze_members").await;
    std::fs::remove_dir_all(wh_dir.join("bronze_members")).unwrap();
    let run = testkit::run(1, date("2024-12-29"));
    let commit = storage::Commit::new(&run, "ingest").partitioned_by(&["_ingest_date"]);
    warehouse.append(&name, day1.clone(), &commit).await.unwrap();

    let later = ingest(&warehouse, 2, &catalog, &landing, date("2024-12-31")).await.unwrap();
    let members = later.sources.iter().find(|s| s.source == "members").unwrap();
    assert!(members.rows_written > 0);
    assert_eq!(count(&rows(&warehouse, "bronze_members").await), count(&day1) + members.rows_written as usize);
    assert_eq!(warehouse.partition_columns(&name).await.unwrap(), Some(vec!["_ingest_date".to_string()]));
    let last = latest_version(&wh_dir, "bronze_members").unwrap();
    let log = std::fs::read_to_string(wh_dir.join(format!("bronze_members/_delta_log/{last:020}.json"))).unwrap();
    assert!(log.contains("_ingest_date=2024-12-31"), "the new day lands in its own partition: {log}");
}

#[tokio::test]
async fn a_changed_file_is_refused_and_nothing_is_committed() {
    let Fixture { _dir: _keep, landing, wh_dir, warehouse, catalog } = fixture(100, 2).await;
    ingest(&warehouse, 1, &catalog, &landing, date("2024-12-29")).await.unwrap();
    let before = latest_version(&wh_dir, "bronze_members");

    let changed = landing.join("2024-12-29/claims.csv");
    let mut text = std::fs::read_to_string(&changed).unwrap();
    text.push_str("EC9999999999,M00000001,10.00,2024-12-29,I10,99213,paid\n");
    std::fs::write(&changed, text).unwrap();
    let err = ingest(&warehouse, 2, &catalog, &landing, date("2024-12-30")).await.unwrap_err();
    assert!(err.is_user_error() && err.to_string().contains("2024-12-29/claims.csv"), "{err}");
    assert_eq!(latest_version(&wh_dir, "bronze_members"), before, "day 2 was not ingested either");
}

#[tokio::test]
async fn a_lost_checkpoint_commit_is_completed_from_bronze_without_rereading() {
    let Fixture { _dir: _keep, landing, wh_dir, warehouse, catalog } = fixture(100, 2).await;
    let first = ingest(&warehouse, 1, &catalog, &landing, date("2024-12-30")).await.unwrap();
    let counts: Vec<usize> = futures_counts(&warehouse, &first).await;

    // As if every run had stopped right after its bronze commits.
    std::fs::remove_dir_all(wh_dir.join("_gold_ingest_files")).unwrap();
    let again = ingest(&warehouse, 2, &catalog, &landing, date("2024-12-30")).await.unwrap();
    assert!(again.sources.iter().all(|s| s.read.is_empty()), "nothing is read twice: {:?}", again.sources);
    assert_eq!(futures_counts(&warehouse, &first).await, counts);
    let checkpoint = rows(&warehouse, "_gold_ingest_files").await;
    assert_eq!(
        count(&checkpoint),
        first.sources.iter().map(|s| s.read.len()).sum::<usize>(),
        "the checkpoint lists every file again"
    );
}

async fn futures_counts(warehouse: &Warehouse, report: &ingest::IngestReport) -> Vec<usize> {
    let mut out = Vec::new();
    for s in &report.sources {
        out.push(count(&rows(warehouse, &s.table).await));
    }
    out
}
