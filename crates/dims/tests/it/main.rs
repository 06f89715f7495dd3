//! The dims stage over a generated insurer: bronze, silver, then the SCD2
//! dimensions, checked for the SCD2 invariants.

use std::collections::{BTreeMap, HashSet};

use deltalake::arrow::array::RecordBatch;
use storage::Warehouse;
use testkit::stages::through_dims;
use testkit::{count, date, rows, run, texts};

/// One current row per live key, none for a deleted one; no two versions
/// of a key overlap; surrogate keys are unique.
#[track_caller]
fn check_invariants(dim: &[RecordBatch], key: &str, sk: &str, live: &HashSet<String>) {
    let (keys, sks) = (texts(dim, key), texts(dim, sk));
    let (from, to, current, deleted) =
        (texts(dim, "valid_from"), texts(dim, "valid_to"), texts(dim, "is_current"), texts(dim, "is_deleted"));
    assert_eq!(sks.iter().collect::<HashSet<_>>().len(), sks.len(), "surrogate keys are unique");
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        by_key.entry(k).or_default().push(i);
    }
    for (k, mut versions) in by_key {
        let open: Vec<&usize> = versions.iter().filter(|&&i| current[i] == "true" && deleted[i] != "true").collect();
        assert_eq!(open.len(), usize::from(live.contains(k)), "{k}: one current version per live key");
        versions.sort_by(|&a, &b| from[a].cmp(&from[b]));
        for w in versions.windows(2) {
            assert!(
                to[w[0]] <= from[w[1]],
                "{k}: versions overlap: {} .. {} and {} ..",
                from[w[0]],
                to[w[0]],
                from[w[1]]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_dimensions_build_from_a_generated_landing_and_keep_the_invariants() {
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    testkit::stages::generate(&landing, 300, 4, 5).await;
    let warehouse = Warehouse::open(dir.path().join("wh").to_str().unwrap()).unwrap();

    // Day by day, as the nightly build runs.
    let mut versions_seen = 0;
    let mut merged = BTreeMap::new();
    for (i, day) in ["2024-12-29", "2024-12-30", "2024-12-31", "2025-01-01"].iter().enumerate() {
        let reports = through_dims(&warehouse, &run(i as i64 + 1, date(day)), &landing).await;
        assert_eq!(reports.len(), 3);
        for r in &reports {
            let before = merged.insert(r.table.clone(), r.source_version);
            if i == 0 {
                assert!(r.version.is_some(), "{day}: {} built from its silver table: {r:?}", r.table);
            } else if before == Some(r.source_version) {
                assert!(r.version.is_none(), "{day}: {} is up to date with an unchanged silver table: {r:?}", r.table);
            }
        }
        for (dim, source, key, sk) in [
            ("dim_members", "silver_members", "member_id", "member_sk"),
            ("dim_patients", "silver_patients", "patient_id", "patient_sk"),
            ("dim_providers", "silver_providers", "provider_id", "provider_sk"),
        ] {
            let silver = rows(&warehouse, source).await;
            let live: HashSet<String> = texts(&silver, key)
                .into_iter()
                .zip(texts(&silver, "_is_deleted"))
                .filter(|(_, d)| d != "true")
                .map(|(k, _)| k)
                .collect();
            assert!(!live.is_empty(), "{day}: {source} has live keys");
            let rows = rows(&warehouse, dim).await;
            check_invariants(&rows, key, sk, &live);
            if dim == "dim_members" {
                versions_seen = versions_seen.max(count(&rows) - live.len());
            }
        }
    }
    assert!(versions_seen > 0, "members changed over four days, so dim_members holds closed versions");

    // A rerun of the last day writes no new version of any dimension.
    let again = through_dims(&warehouse, &run(9, date("2025-01-01")), &landing).await;
    assert!(again.iter().all(|r| r.version.is_none()), "{again:?}");
}
