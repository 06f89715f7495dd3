//! The facts stage end to end: landing files through bronze, silver and the
//! dimensions to the star schema, checked as an analyst or auditor would.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use deltalake::arrow::array::RecordBatch;
use facts::{FactOptions, FactsReport};
use storage::Warehouse;
use testkit::stages::through_facts;
use testkit::{content, date, rows, run, texts};

/// `(fact id, column)` of a fact table.
fn by_id(batches: &[RecordBatch], id: &str, column: &str) -> BTreeMap<String, String> {
    texts(batches, id).into_iter().zip(texts(batches, column)).collect()
}

fn report_of<'a>(report: &'a FactsReport, table: &str) -> &'a facts::TableReport {
    report.tables.iter().find(|t| t.table == table).unwrap_or_else(|| panic!("no report for {table}: {report:?}"))
}

/// Every foreign key of the star resolves: the anti-joins are empty.
async fn assert_keys_resolve(warehouse: &Warehouse) {
    let set = |b: &[RecordBatch], c: &str| texts(b, c).into_iter().collect::<HashSet<_>>();
    let claims = rows(warehouse, "fact_claims").await;
    let events = rows(warehouse, "fact_medical_events").await;
    let dates = set(&rows(warehouse, "dim_date").await, "date_key");
    let diagnoses = set(&rows(warehouse, "dim_diagnosis").await, "diagnosis_key");
    for (facts, column, dim, dim_key) in [
        (&claims, "member_sk", "dim_members", "member_sk"),
        (&claims, "patient_sk", "dim_patients", "patient_sk"),
        (&claims, "provider_sk", "dim_providers", "provider_sk"),
        (&events, "patient_sk", "dim_patients", "patient_sk"),
        (&events, "provider_sk", "dim_providers", "provider_sk"),
    ] {
        let keys = set(&rows(warehouse, dim).await, dim_key);
        let dangling: Vec<String> = texts(facts, column).into_iter().filter(|k| !keys.contains(k)).collect();
        assert!(dangling.is_empty(), "{column} -> {dim}: {} dangling, e.g. {:?}", dangling.len(), dangling.first());
    }
    for (facts, column) in [(&claims, "service_date_key"), (&claims, "claim_date_key"), (&events, "event_date_key")] {
        let dangling = texts(facts, column).into_iter().filter(|k| !dates.contains(k)).count();
        assert_eq!(dangling, 0, "{column} -> dim_date");
    }
    let bridge = rows(warehouse, "fact_claim_diagnoses").await;
    for (facts, column) in [(&claims, "primary_diagnosis_key"), (&bridge, "diagnosis_key")] {
        let dangling = texts(facts, column).into_iter().filter(|k| !diagnoses.contains(k)).count();
        assert_eq!(dangling, 0, "{column} -> dim_diagnosis");
    }
    let claim_ids = set(&claims, "claim_id");
    for bridge in ["fact_claim_diagnoses", "fact_claim_procedures"] {
        let orphans =
            texts(&rows(warehouse, bridge).await, "claim_id").into_iter().filter(|c| !claim_ids.contains(c)).count();
        assert_eq!(orphans, 0, "{bridge} -> fact_claims");
    }
}

/// One fact per silver row, and no two with the same id.
async fn assert_grain(warehouse: &Warehouse) {
    for (silver, fact, id) in
        [("silver_claims", "fact_claims", "claim_id"), ("silver_medical_events", "fact_medical_events", "event_id")]
    {
        let s: HashSet<String> = texts(&rows(warehouse, silver).await, id).into_iter().collect();
        let f = texts(&rows(warehouse, fact).await, id);
        let unique: HashSet<String> = f.iter().cloned().collect();
        assert_eq!(unique.len(), f.len(), "{fact}: one row per {id}");
        assert_eq!(unique, s, "{fact}: exactly the ids of {silver}");
    }
}

/// Writes `text` to `rel` in the landing.
fn write(landing: &Path, rel: &str, text: &str) {
    let path = landing.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Writes the enrollment extract of `day`: `members` ([`member`] rows).
fn write_members(landing: &Path, day: &str, members: &[String]) {
    write(landing, &format!("{day}/members.csv"), &format!("{MEMBERS}{}", members.concat()));
}

/// Writes the claims batch of `day`: `claims` ([`claim`] rows).
fn write_claims(landing: &Path, day: &str, claims: &[String]) {
    write(landing, &format!("{day}/claims_batch.csv"), &format!("{CLAIMS}{}", claims.concat()));
}

const MEMBERS: &str = "MemberID,Name,DOB,Gender,Region,PlanType,EffectiveDate,Email,IsActive,LastUpdated\n";
const CLAIMS: &str = "ClaimID,MemberID,ProviderID,ClaimDate,ServiceDate,Amount,Status,ICD10Codes,CPTCodes,ClaimType,SubmissionChannel,Notes,IngestTimestamp\n";
const PROVIDER: &str = r#"{"ProviderID":"1234567893","Name":"Dr Ada","Specialties":["Cardiology"],"Locations":[{"Address":"1 Main St","City":"Boston","State":"MA"}],"IsActive":true,"TIN":"123456789","LastVerified":"2024-06-01"}"#;

fn member(id: &str, name: &str, plan: &str, updated: &str) -> String {
    format!("{id},{name},1980-02-03,F,Northeast,{plan},2020-01-01,{}@example.com,1.0,{updated}\n", name.to_lowercase())
}

fn claim(id: &str, member: &str, service: &str) -> String {
    format!(
        "{id},{member},1234567893,{service},{service},120.50,Paid,E11.9;I10,99213,Professional,EDI,,{service}T09:00:00Z\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_plan_change_rekeys_the_day_2_claim_and_not_the_day_0_claim() {
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    let warehouse = Warehouse::open(dir.path().join("wh").to_str().unwrap()).unwrap();
    // Day 0 is 2025-01-01. On day 2 the extract shows M1 on HMO since
    // December; M2's claim is there to stay untouched.
    write(&landing, "2025-01-03/providers.json", &format!("{PROVIDER}\n"));
    write_members(
        &landing,
        "2025-01-03",
        &[member("M1", "Ann", "HMO", "2024-12-01 08:00:00"), member("M2", "Bo", "PPO", "2024-12-01 08:00:00")],
    );
    write_claims(
        &landing,
        "2025-01-03",
        &[claim("C0", "M1", "2025-01-01"), claim("C2", "M1", "2025-01-03"), claim("C9", "M2", "2025-01-03")],
    );
    let first = through_facts(&warehouse, &run(1, date("2025-01-03")), &landing, FactOptions::default()).await;
    assert_eq!(report_of(&first, "fact_claims").rebuilt, 3);
    let before = rows(&warehouse, "fact_claims").await;
    let sk_before = by_id(&before, "claim_id", "member_sk");
    assert_eq!(sk_before["C0"], sk_before["C2"], "one version of M1 so far");

    // Day 3: the extract says M1 moved to EPO on day 1, a late change.
    write_members(
        &landing,
        "2025-01-04",
        &[member("M1", "Ann", "EPO", "2025-01-02 09:00:00"), member("M2", "Bo", "PPO", "2024-12-01 08:00:00")],
    );
    let late = through_facts(&warehouse, &run(2, date("2025-01-04")), &landing, FactOptions::default()).await;
    let claims = report_of(&late, "fact_claims");
    assert!(!claims.full_refresh && claims.version.is_some(), "{claims:?}");
    assert_eq!(claims.rebuilt, 2, "only M1's claims lie in the changed intervals: {claims:?}");
    assert_eq!(claims.restated, 2);

    let after = rows(&warehouse, "fact_claims").await;
    let sk_after = by_id(&after, "claim_id", "member_sk");
    let dim = rows(&warehouse, "dim_members").await;
    let plan_of: BTreeMap<String, String> = by_id(&dim, "member_sk", "plan_type");
    assert_eq!(sk_after["C0"], sk_before["C0"], "the day-0 claim keeps its version");
    assert_eq!(plan_of[&sk_after["C0"]], "HMO");
    assert_ne!(sk_after["C2"], sk_before["C2"], "the day-2 claim is re-keyed");
    assert_eq!(plan_of[&sk_after["C2"]], "EPO", "to the version valid on day 2");
    assert_eq!(sk_after["C9"], sk_before["C9"]);
    assert_keys_resolve(&warehouse).await;
    assert_grain(&warehouse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_infers_its_member_and_the_late_member_completes_it_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    let warehouse = Warehouse::open(dir.path().join("wh").to_str().unwrap()).unwrap();
    write(&landing, "2025-01-02/providers.json", &format!("{PROVIDER}\n"));
    write_members(&landing, "2025-01-02", &[member("M1", "Ann", "HMO", "2024-12-01 08:00:00")]);
    write_claims(
        &landing,
        "2025-01-02",
        &[claim("C1", "M1", "2025-01-01"), claim("C5", "M5", "2025-01-01"), claim("C7", "M7", "2025-01-01")],
    );
    let first = through_facts(&warehouse, &run(1, date("2025-01-02")), &landing, FactOptions::default()).await;
    assert_eq!(first.inferred["dim_members"], 2, "M5 and M7: {first:?}");
    let fact = rows(&warehouse, "fact_claims").await;
    let sk = by_id(&fact, "claim_id", "member_sk")["C5"].clone();
    assert!(!by_id(&fact, "claim_id", "is_clean_claim")["C5"].contains("true"), "an inferred member is not clean");
    let dim = rows(&warehouse, "dim_members").await;
    let inferred = by_id(&dim, "member_sk", "is_inferred");
    assert_eq!(inferred[&sk], "true", "C5 points at an inferred M5");
    assert_eq!(by_id(&dim, "member_sk", "name")[&sk], "", "whose attributes are unknown");
    assert_eq!(inferred.get("-1").map(String::as_str), Some("true"), "and the unknown row exists");
    assert_keys_resolve(&warehouse).await;

    // M5 arrives the next day.
    write_members(
        &landing,
        "2025-01-03",
        &[member("M1", "Ann", "HMO", "2024-12-01 08:00:00"), member("M5", "Eve", "PPO", "2024-12-20 08:00:00")],
    );
    // And an EHR claim of M5's, whose patient the EHR feed has not sent.
    write(
        &landing,
        "2025-01-03/claims.csv",
        "claim_id,patient_id,claim_amount,claim_date,diagnosis_code,procedure_code,claim_status\nE1,M5,50.00,2025-01-02,E11.9,99213,paid\n",
    );
    let patient_before = by_id(&rows(&warehouse, "fact_claims").await, "claim_id", "patient_sk")["C5"].clone();
    assert_eq!(patient_before, "-1", "an enrollment claim infers no patient");
    through_facts(&warehouse, &run(2, date("2025-01-03")), &landing, FactOptions::default()).await;
    let patient_sk = by_id(&rows(&warehouse, "fact_claims").await, "claim_id", "patient_sk");
    assert_ne!(patient_sk["E1"], "-1", "the EHR claim infers patient M5");
    assert_eq!(patient_sk["C5"], patient_sk["E1"], "and C5, built the day before, is restated to it");
    let dim = rows(&warehouse, "dim_members").await;
    let m5: Vec<usize> =
        texts(&dim, "member_id").iter().enumerate().filter(|(_, k)| *k == "M5").map(|(i, _)| i).collect();
    assert_eq!(m5.len(), 1, "M5's real row replaced the inferred one in place");
    let (sks, names, flags) = (texts(&dim, "member_sk"), texts(&dim, "name"), texts(&dim, "is_inferred"));
    assert_eq!((sks[m5[0]].as_str(), names[m5[0]].as_str(), flags[m5[0]].as_str()), (sk.as_str(), "Eve", "false"));
    let m7: Vec<usize> =
        texts(&dim, "member_id").iter().enumerate().filter(|(_, k)| *k == "M7").map(|(i, _)| i).collect();
    let (current, deleted) = (texts(&dim, "is_current"), texts(&dim, "is_deleted"));
    assert_eq!(m7.len(), 1);
    assert_eq!(
        (flags[m7[0]].as_str(), current[m7[0]].as_str(), deleted[m7[0]].as_str()),
        ("true", "true", "false"),
        "M7, still missing from the extract, stays inferred and current: absence from a snapshot is no delete"
    );
    let fact = rows(&warehouse, "fact_claims").await;
    assert_eq!(by_id(&fact, "claim_id", "member_sk")["C5"], sk, "the fact keeps its key");
    assert_keys_resolve(&warehouse).await;
    assert_grain(&warehouse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_builds_over_five_days_equal_a_full_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    let config = synth::Config { members: 300, days: 5, seed: 11, ..synth::Config::new(&landing) };
    synth::generate(&config, &mut |_, _| {}).await.unwrap();
    let warehouse = Warehouse::open(dir.path().join("wh").to_str().unwrap()).unwrap();
    let tables = [
        "fact_claims",
        "fact_claim_diagnoses",
        "fact_claim_procedures",
        "fact_medical_events",
        "dim_date",
        "dim_diagnosis",
    ];
    let mut incremental_days = 0;
    for (i, offset) in (0..5).enumerate() {
        let date = config.start_date + chrono::Duration::days(offset);
        let report = through_facts(&warehouse, &run(i as i64 + 1, date), &landing, FactOptions::default()).await;
        let claims = report_of(&report, "fact_claims");
        let total = rows(&warehouse, "fact_claims").await.iter().map(RecordBatch::num_rows).sum::<usize>() as u64;
        if i > 0 && !claims.full_refresh {
            incremental_days += 1;
            assert!(claims.rebuilt < total, "{date}: only changed claims are rebuilt ({} of {total})", claims.rebuilt);
        }
        assert_grain(&warehouse).await;
        assert_keys_resolve(&warehouse).await;
    }
    assert_eq!(incremental_days, 4, "days 2 to 5 ran incrementally");
    let unknown: u64 = rows(&warehouse, "fact_claims")
        .await
        .iter()
        .map(|b| texts(std::slice::from_ref(b), "member_sk").iter().filter(|k| *k == "-1").count() as u64)
        .sum();
    let claims_total = rows(&warehouse, "fact_claims").await.iter().map(RecordBatch::num_rows).sum::<usize>() as u64;
    assert!(
        unknown * 100 < claims_total,
        "few claims fall outside their member's versions: {unknown} of {claims_total}"
    );

    let mut incremental = BTreeMap::new();
    for t in tables {
        incremental.insert(t, content(&rows(&warehouse, t).await));
    }
    // A rerun of the last day writes nothing.
    let last = config.start_date + chrono::Duration::days(4);
    let again = through_facts(&warehouse, &run(9, last), &landing, FactOptions::default()).await;
    assert!(again.tables.iter().all(|t| t.version.is_none()), "{again:?}");

    let full = through_facts(&warehouse, &run(10, last), &landing, FactOptions { full_refresh: true }).await;
    assert!(report_of(&full, "fact_claims").full_refresh);
    for t in tables {
        let after = content(&rows(&warehouse, t).await);
        assert!(!after.is_empty(), "{t} has rows");
        assert_eq!(incremental[t].len(), after.len(), "{t}: same row count");
        assert!(incremental[t] == after, "{t}: the full refresh gives the incremental build's content");
    }
}
