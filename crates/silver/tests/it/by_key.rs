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

/// The `yyyymm` of a `yyyy-mm-dd` date.
fn month_of(date: &str) -> Option<u32> {
    let (y, m) = (date.get(..4)?.parse::<u32>().ok()?, date.get(5..7)?.parse::<u32>().ok()?);
    Some(y * 100 + m)
}

/// The months of each data file's first and last `claim_date`, by path.
type FileMonths = std::collections::HashMap<String, (u32, u32)>;

/// Per data file of `table`'s log: the months of its first and last
/// `claim_date` (from the add action's statistics), and, per commit,
/// the files it removed.
fn files_by_commit(wh: &Path, table: &str) -> (FileMonths, Vec<Vec<String>>) {
    let log = wh.join(table).join("_delta_log");
    let mut versions: Vec<u64> = std::fs::read_dir(&log)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".json")?.parse::<u64>().ok())
        .collect();
    versions.sort();
    let (mut months, mut removed) = (std::collections::HashMap::new(), Vec::new());
    for v in versions {
        let mut gone = Vec::new();
        for line in std::fs::read_to_string(log.join(format!("{v:020}.json"))).unwrap().lines() {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(add) = action.get("add") {
                let stats: serde_json::Value = serde_json::from_str(add["stats"].as_str().unwrap()).unwrap();
                let (lo, hi) = (stats["minValues"]["claim_date"].as_str(), stats["maxValues"]["claim_date"].as_str());
                let range = (lo.and_then(month_of).unwrap_or(0), hi.and_then(month_of).unwrap_or(0));
                months.insert(add["path"].as_str().unwrap().to_string(), range);
            }
            if let Some(remove) = action.get("remove") {
                gone.push(remove["path"].as_str().unwrap().to_string());
            }
        }
        removed.push(gone);
    }
    (months, removed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_night_rewrites_the_files_of_its_claims_months_and_leaves_settled_months_alone() {
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    // Five months of a steady flow; the first night takes four of them.
    let config = synth::Config {
        members: 200,
        days: 124,
        seed: 23,
        start_date: testkit::date("2025-01-01"),
        claims_per_member_year: Some(12.0),
        ..synth::Config::new(&landing)
    };
    synth::generate(&config, &mut |_, _| {}).await.unwrap();
    let wh_dir = dir.path().join("wh");
    let wh = Warehouse::open(wh_dir.to_str().unwrap()).unwrap();
    let (sources, models) = (stages::sources(), SilverCatalog::default_catalog().unwrap());
    let days = ["2025-04-30", "2025-05-01", "2025-05-02", "2025-05-03", "2025-05-04"];
    for (i, day) in days.iter().enumerate() {
        build(&wh, i as i64 + 1, &sources, &models, &landing, testkit::date(day)).await.unwrap();
        if i < 2 {
            // The first night writes the table whole, the second splits it
            // by month.
            continue;
        }
        assert!(last_commit(&wh_dir, "silver_claims").contains(r#""operation":"MERGE""#), "{day}: by key");
        // The months of the claims this night changed, from silver itself.
        let claims = rows(&wh, "silver_claims").await;
        let updated = testkit::texts(&claims, "_updated_at");
        let newest = updated.iter().max().unwrap().clone();
        let dates = testkit::strings(&claims, "claim_date");
        let touched: std::collections::BTreeSet<u32> = updated
            .iter()
            .zip(&dates)
            .filter(|(u, _)| **u == newest)
            .map(|(_, d)| d.as_deref().and_then(month_of).unwrap_or(0))
            .collect();
        let (months, removed) = files_by_commit(&wh_dir, "silver_claims");
        let gone = removed.last().unwrap();
        assert!(!gone.is_empty(), "{day}: the night replaced files");
        for path in gone {
            let (lo, hi) = months[path];
            assert!(
                lo == hi && touched.contains(&lo),
                "{day}: {path} holds months {lo}..{hi}; the night's: {touched:?}"
            );
        }
        let all_months: std::collections::BTreeSet<u32> =
            dates.iter().map(|d| d.as_deref().and_then(month_of).unwrap_or(0)).collect();
        assert!(all_months.len() >= touched.len() + 3, "{day}: settled months {all_months:?} beside {touched:?}");
    }
}
