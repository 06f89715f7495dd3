//! A generated insurer with injected defects, through bronze and silver.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use ingest::SourceCatalog;
use silver::{SilverCatalog, SilverReport};
use storage::Warehouse;

use testkit::{date, rows, strings};

use crate::support::{bronze_per_batch, build, lineage, lists, versions};

/// The bronze table and silver table a landing file feeds.
fn tables_of(file: &str) -> (&'static str, &'static str) {
    let name = file.rsplit('/').next().unwrap();
    match name {
        "members.csv" => ("bronze_members", "silver_members"),
        "providers.json" => ("bronze_providers", "silver_providers"),
        "diagnosis_ref.csv" => ("bronze_diagnosis_ref", "silver_diagnosis_ref"),
        "patients.csv" => ("bronze_patients", "silver_patients"),
        "claims.csv" => ("bronze_ehr_claims", "silver_claims"),
        "medical_events.csv" => ("bronze_medical_events", "silver_medical_events"),
        n if n.starts_with("claims_batch") => ("bronze_claims_batch", "silver_claims"),
        n if n.starts_with("claims_stream") => ("bronze_claims_stream", "silver_claims"),
        other => panic!("unexpected landing file {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_landing_every_row_accounted_for_and_every_defect_caught() {
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    let config = synth::Config { members: 400, days: 3, seed: 17, defect_rate: 0.05, ..synth::Config::new(&landing) };
    synth::generate(&config, &mut |_, _| {}).await.unwrap();
    let wh_dir = dir.path().join("warehouse");
    let warehouse = Warehouse::open(wh_dir.to_str().unwrap()).unwrap();
    let sources = SourceCatalog::default_catalog().unwrap();
    let silver = SilverCatalog::default_catalog().unwrap();
    let last = date("2024-12-31");
    let report = build(&warehouse, 1, &sources, &silver, &landing, last).await.unwrap();

    // 1. Accounting, per table and batch, from the tables themselves.
    every_row_accounted_for(&warehouse, &silver, &report, &landing).await;
    // 2. Every injected defect is caught.
    let defect_rows = every_defect_caught(&warehouse, &silver, &landing).await;
    // 3. No row without a defect is quarantined.
    no_clean_row_quarantined(&warehouse, &silver, &defect_rows).await;

    // 4. Re-running writes nothing new.
    let before = versions(&wh_dir);
    let again = build(&warehouse, 2, &sources, &silver, &landing, last).await.unwrap();
    assert!(again.tables.iter().all(|t| t.version.is_none() && t.batches.is_empty()), "{:?}", again.tables);
    assert_eq!(versions(&wh_dir), before, "a rerun writes no new Delta version");
}

/// Accounting, per table and batch, from the tables themselves:
/// rows in lineage + unreleased quarantine + duplicates + dropped = bronze.
async fn every_row_accounted_for(warehouse: &Warehouse, silver: &SilverCatalog, report: &SilverReport, landing: &Path) {
    let dq = rows(warehouse, silver::DQ_RESULTS_TABLE).await;
    let (dq_table, dq_batch, dq_rule, dq_failed) =
        (strings(&dq, "table"), strings(&dq, "batch_id"), strings(&dq, "rule"), strings(&dq, "rows_failed"));
    let counted = |table: &str, batch: &str, rule: &str| -> u64 {
        (0..dq_rule.len())
            .filter(|&i| {
                dq_table[i].as_deref() == Some(table)
                    && dq_batch[i].as_deref() == Some(batch)
                    && dq_rule[i].as_deref() == Some(rule)
            })
            .map(|i| dq_failed[i].as_ref().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    let mut checked = 0;
    for model in silver.tables() {
        let table = model.table.as_str();
        let silver_rows = rows(warehouse, table).await;
        let entries = lineage(&silver_rows);
        let quarantine = rows(warehouse, &model.quarantine_table()).await;
        let (q_batch, q_released) = (strings(&quarantine, "_batch_id"), strings(&quarantine, "_released_at"));
        for source in &model.sources {
            for (batch, bronze) in bronze_per_batch(warehouse, &source.bronze).await {
                let in_lineage = entries.iter().filter(|e| e.batch == batch).count() as u64;
                let quarantined = (0..q_batch.len())
                    .filter(|&i| q_batch[i].as_deref() == Some(batch.as_str()) && q_released[i].is_none())
                    .count() as u64;
                let dups = counted(table, &batch, "exact_duplicate");
                let dropped = counted(table, &batch, "dropped");
                assert_eq!(
                    in_lineage + quarantined + dups + dropped,
                    bronze,
                    "{table} batch {batch}: silver {in_lineage} + quarantined {quarantined} + duplicates {dups} + dropped {dropped} = bronze"
                );
                let acct = report
                    .tables
                    .iter()
                    .find(|t| t.table == table)
                    .unwrap()
                    .batches
                    .iter()
                    .find(|b| b.batch_id == batch)
                    .unwrap();
                assert_eq!(
                    (acct.accepted, acct.quarantined, acct.duplicates, acct.dropped),
                    (in_lineage, quarantined, dups, dropped),
                    "{table} {batch}: the report agrees"
                );
                checked += 1;
            }
        }
        // One row per key, and no lineage entry twice.
        let keys: Vec<Vec<Option<String>>> = model.key.iter().map(|k| strings(&silver_rows, k)).collect();
        let distinct: HashSet<Vec<Option<String>>> =
            (0..keys[0].len()).map(|i| keys.iter().map(|k| k[i].clone()).collect()).collect();
        assert_eq!(distinct.len(), keys[0].len(), "{table}: one row per key");
        let places: HashSet<(String, i64)> = entries.iter().map(|e| (e.file.clone(), e.row)).collect();
        assert_eq!(places.len(), entries.len(), "{table}: every bronze row once in lineage");
    }
    // One batch per source and day folder holding its files.
    let mut day_batches = HashSet::new();
    for day in std::fs::read_dir(landing).unwrap().flatten() {
        if !day.path().is_dir() || day.file_name().to_string_lossy().starts_with('_') {
            continue;
        }
        for file in std::fs::read_dir(day.path()).unwrap().flatten() {
            day_batches.insert((tables_of(&file.file_name().to_string_lossy()).0, day.file_name()));
        }
    }
    assert_eq!(checked, day_batches.len(), "every bronze source had one batch per day folder");
}

/// Every injected defect is caught: quarantined, counted (as a
/// duplicate or dropped, so absent from lineage), or flagged.
/// Returns the rows with a defect, by file and row.
async fn every_defect_caught(warehouse: &Warehouse, silver: &SilverCatalog, landing: &Path) -> HashSet<(String, i64)> {
    let defects = std::fs::read_to_string(landing.join("_truth/defects.csv")).unwrap();
    let mut reader = csv::Reader::from_reader(defects.as_bytes());
    // Per silver table: (file, row) -> warnings in lineage, and (file, row)
    // -> failed rules in quarantine.
    type ByPlace = HashMap<(String, i64), Vec<String>>;
    let mut by_table: HashMap<&str, (ByPlace, ByPlace)> = HashMap::new();
    for model in silver.tables() {
        let silver_rows = rows(warehouse, &model.table).await;
        let flagged = lineage(&silver_rows).into_iter().map(|e| ((e.file, e.row), e.warnings)).collect();
        let quarantine = rows(warehouse, &model.quarantine_table()).await;
        let failed = lists(&quarantine, "_failed_rules");
        let places = strings(&quarantine, "_source_file").into_iter().zip(strings(&quarantine, "_source_row"));
        let quarantined =
            places.zip(failed).map(|((f, r), rules)| ((f.unwrap(), r.unwrap().parse().unwrap()), rules)).collect();
        by_table.insert(model.table.as_str(), (flagged, quarantined));
    }
    let mut caught: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    let mut missed = Vec::new();
    let mut defect_rows = HashSet::new();
    for record in reader.records() {
        let record = record.unwrap();
        let (file, row, kind) = (record[0].to_string(), record[1].parse::<i64>().unwrap(), record[2].to_string());
        let (_, table) = tables_of(&file);
        defect_rows.insert((file.clone(), row));
        let (flagged, quarantined) = &by_table[table];
        let place = (file.clone(), row);
        let c = caught.entry(kind.clone()).or_default();
        if quarantined.contains_key(&place) {
            c.0 += 1;
        } else if !flagged.contains_key(&place) {
            c.1 += 1;
        } else if !flagged[&place].is_empty() {
            c.2 += 1;
        } else {
            missed.push(format!("{kind} at {file}:{row} ({table})"));
        }
    }
    assert!(missed.is_empty(), "{} defects not caught: {:#?}", missed.len(), missed);
    for kind in [
        "exact_duplicate",
        "conflicting_duplicate",
        "invalid_icd",
        "unknown_member",
        "unknown_provider",
        "missing_amount",
        "malformed_json",
        "wrong_case",
        "wrong_type",
        "future_date",
        "service_after_claim",
    ] {
        assert!(
            caught.get(kind).is_some_and(|c| c.0 + c.1 + c.2 > 0),
            "the landing has {kind} defects, caught: {caught:?}"
        );
    }
    defect_rows
}

/// No row without a defect is quarantined, except an orphan whose
/// parent's own row was quarantined for a defect.
async fn no_clean_row_quarantined(warehouse: &Warehouse, silver: &SilverCatalog, defect_rows: &HashSet<(String, i64)>) {
    for model in silver.tables() {
        let quarantine = rows(warehouse, &model.quarantine_table()).await;
        let failed = lists(&quarantine, "_failed_rules");
        let places: Vec<(String, i64)> = strings(&quarantine, "_source_file")
            .into_iter()
            .zip(strings(&quarantine, "_source_row"))
            .map(|(f, r)| (f.unwrap(), r.unwrap().parse().unwrap()))
            .collect();
        let mut held_parents: HashMap<&str, (String, HashSet<String>)> = HashMap::new();
        for p in &model.parents {
            let parent = silver.table(&p.table).unwrap();
            let keys =
                strings(&rows(warehouse, &parent.quarantine_table()).await, &p.key).into_iter().flatten().collect();
            held_parents.insert(p.name.as_str(), (p.column.clone(), keys));
        }
        let warn: HashSet<&str> =
            model.expectations.iter().filter(|e| e.action == silver::Action::Warn).map(|e| e.name.as_str()).collect();
        for (i, place) in places.iter().enumerate() {
            if defect_rows.contains(place) {
                continue;
            }
            let orphan_of_defect = failed[i].iter().any(|r| held_parents.contains_key(r.as_str()))
                && failed[i].iter().all(|r| {
                    warn.contains(r.as_str())
                        || held_parents.get(r.as_str()).is_some_and(|(column, keys)| {
                            strings(&quarantine, column)[i].as_ref().is_some_and(|k| keys.contains(k))
                        })
                });
            assert!(
                orphan_of_defect,
                "{}: {place:?} has no defect but was quarantined for {:?}",
                model.table, failed[i]
            );
        }
    }
}
