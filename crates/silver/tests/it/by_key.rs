//! A night updates a large table by key (rewriting only the files holding
//! the keys its rows touch) and gives the same rows as a night that
//! rewrites the whole table. (That only the touched files are rewritten
//! is storage's test `only_the_files_holding_the_keys_are_replaced`.)

use std::path::Path;

use silver::SilverCatalog;
use storage::Warehouse;
use testkit::{content, rows, stages};

use crate::support::build;

/// The silver tables of a claims landing, compared row by row.
const TABLES: [&str; 5] =
    ["silver_claims", "silver_claim_diagnoses", "silver_claim_procedures", "quarantine_silver_claims", "dq_results"];

/// The text of `table`'s newest commit file.
fn last_commit(wh: &Path, table: &str) -> String {
    let log = wh.join(table).join("_delta_log");
    let last = std::fs::read_dir(&log)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".json")?.parse::<u64>().ok())
        .max()
        .unwrap();
    std::fs::read_to_string(log.join(format!("{last:020}.json"))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nights_by_key_give_the_rows_of_whole_rewrites() {
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    stages::generate(&landing, 300, 5, 23).await;
    let (by_key_dir, whole_dir) = (dir.path().join("by_key"), dir.path().join("whole"));
    let by_key = Warehouse::open(by_key_dir.to_str().unwrap()).unwrap();
    let whole = Warehouse::open(whole_dir.to_str().unwrap()).unwrap();
    let (sources, models) = (stages::sources(), SilverCatalog::default_catalog().unwrap());
    let mut by_key_nights = 0;
    for (i, day) in ["2024-12-29", "2024-12-30", "2024-12-31", "2025-01-01", "2025-01-02"].iter().enumerate() {
        let day = testkit::date(day);
        let id = i as i64 + 1;
        build(&by_key, id, &sources, &models, &landing, day).await.unwrap();
        // A night by key replaces files (a MERGE in the log); a whole
        // rewrite overwrites the table (a WRITE).
        if last_commit(&by_key_dir, "silver_claims").contains(r#""operation":"MERGE""#) {
            by_key_nights += 1;
        }
        // Without one of its derived tables, silver_claims is rewritten
        // whole (and the derived tables with it).
        let _ = std::fs::remove_dir_all(whole_dir.join("silver_claim_procedures"));
        build(&whole, id, &sources, &models, &landing, day).await.unwrap();
        assert!(
            !last_commit(&whole_dir, "silver_claims").contains(r#""operation":"MERGE""#),
            "{day}: rewritten whole, not by key"
        );
        for t in TABLES {
            assert_eq!(content(&rows(&by_key, t).await), content(&rows(&whole, t).await), "{day}: {t}");
        }
    }
    assert_eq!(by_key_nights, 4, "every night after the first updates by key");
}
