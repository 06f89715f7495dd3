//! The 10,000-member insurer: distributions, referential integrity, and the
//! injected defects and fraud really being in the files that list them.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use chrono::{Datelike, NaiveDate};

use crate::support::{Csv, all_lines, all_rows, config, day_folders, defects, generate, official_icd};

const MEMBERS: u64 = 10_000;

#[test]
fn ten_thousand_member_insurer_is_realistic_and_its_truth_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let summary = generate(&config(dir.path(), MEMBERS, 7, 11));
    let root = dir.path();
    assert_eq!(day_folders(root).len(), 7);
    assert!(summary.defects > 0 && summary.fraud_labels > 0, "defects and fraud are injected: {summary:?}");

    every_day_has_the_full_member_extract(root);
    distributions_follow_the_spec(root);
    referential_integrity_holds_apart_from_listed_defects(root);
    listed_defects_are_in_the_files(root);
    fraud_labels_are_in_the_claims(root);
}

fn every_day_has_the_full_member_extract(root: &Path) {
    for (date, dir) in day_folders(root) {
        let csv = Csv::read(&dir.join("members.csv"));
        assert_eq!(
            csv.header,
            [
                "MemberID",
                "Name",
                "DOB",
                "Gender",
                "Region",
                "PlanType",
                "EffectiveDate",
                "Email",
                "IsActive",
                "LastUpdated"
            ]
        );
        let ids: HashSet<&str> = csv.rows.iter().map(|r| r[0].as_str()).collect();
        assert!(ids.len() as u64 > MEMBERS * 85 / 100, "{date}: only {} members in the extract", ids.len());
        let active: HashSet<&str> = csv.rows.iter().map(|r| r[8].as_str()).collect();
        assert!(
            active.contains("1.0") && active.contains("0.0") && active.contains(""),
            "{date}: IsActive values {active:?}"
        );
    }
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn distributions_follow_the_spec(root: &Path) {
    let patients = all_rows(root, "patients.csv");
    let mut first: HashMap<String, Vec<String>> = HashMap::new();
    for (_, _, header, row) in &patients {
        assert_eq!(
            header[..],
            [
                "patient_id",
                "first_name",
                "last_name",
                "age",
                "sex",
                "region",
                "bmi",
                "smoker",
                "children",
                "charges",
                "insurance_plan",
                "coverage_start_date",
                "timestamp"
            ]
        );
        first.entry(row[0].clone()).or_insert_with(|| row.clone());
    }
    let clean: Vec<&Vec<String>> =
        first.values().filter(|r| r[3].parse::<f64>().is_ok() && r[6].parse::<f64>().is_ok()).collect();
    let ages: Vec<f64> = clean.iter().map(|r| r[3].parse().unwrap()).collect();
    let bmis: Vec<f64> = clean.iter().map(|r| r[6].parse().unwrap()).collect();
    let children: Vec<f64> = clean.iter().map(|r| r[8].parse().unwrap()).collect();
    let age = mean(&ages);
    assert!((age - 45.0).abs() <= 2.0, "age mean {age}");
    assert!(ages.iter().all(|a| (18.0..=86.0).contains(a)), "ages outside 18-85");
    let bmi = mean(&bmis);
    assert!((bmi - 28.0).abs() <= 1.0, "bmi mean {bmi}");
    assert!(bmis.iter().all(|b| (16.0..=50.0).contains(b)), "bmi outside 16-50");
    let kids = mean(&children);
    assert!((kids - 1.2).abs() <= 0.15, "children mean {kids}");
    // Smoking depends on age: more smokers among the young.
    let smoke = |lo: f64, hi: f64| {
        let group: Vec<_> = clean.iter().filter(|r| (lo..hi).contains(&r[3].parse::<f64>().unwrap())).collect();
        group.iter().filter(|r| r[7] == "yes").count() as f64 / group.len() as f64
    };
    assert!(smoke(18.0, 30.0) > smoke(65.0, 90.0) + 0.05, "smoking should fall with age");
    // Premiums rise with smoking.
    let charges = |smoker: &str| {
        mean(&clean.iter().filter(|r| r[7] == smoker).map(|r| r[9].parse::<f64>().unwrap()).collect::<Vec<_>>())
    };
    assert!(charges("yes") > charges("no") * 1.5, "smokers pay more");
    let regions: HashSet<&str> = first.values().map(|r| r[5].as_str()).collect();
    assert_eq!(regions, HashSet::from(["NORTHEAST", "NORTHWEST", "SOUTHEAST", "SOUTHWEST"]));

    let patients_n = first.len() as f64;
    let ehr_claims: HashSet<String> =
        all_rows(root, "claims.csv").into_iter().map(|(_, _, _, r)| r[0].clone()).collect();
    let events: HashSet<String> =
        all_rows(root, "medical_events.csv").into_iter().map(|(_, _, _, r)| r[0].clone()).collect();
    let claims_per_patient = ehr_claims.len() as f64 / patients_n;
    let events_per_patient = events.len() as f64 / patients_n;
    assert!((2.0..=5.0).contains(&claims_per_patient), "claims per patient {claims_per_patient}");
    assert!((3.0..=8.0).contains(&events_per_patient), "events per patient {events_per_patient}");
}

/// IDs that appear in any member extract, patient file or provider record.
struct Known {
    members: HashSet<String>,
    patients: HashSet<String>,
    providers: HashSet<String>,
}

fn known_ids(root: &Path) -> Known {
    let members = all_rows(root, "members.csv").into_iter().map(|(_, _, _, r)| r[0].clone()).collect();
    let patients = all_rows(root, "patients.csv").into_iter().map(|(_, _, _, r)| r[0].clone()).collect();
    let providers = all_lines(root, "providers.json")
        .into_iter()
        .filter_map(|(_, _, l)| serde_json::from_str::<serde_json::Value>(&l).ok())
        .map(|v| v["ProviderID"].as_str().expect("ProviderID").to_string())
        .collect();
    Known { members, patients, providers }
}

fn referential_integrity_holds_apart_from_listed_defects(root: &Path) {
    let known = known_ids(root);
    let defects = defects(root);
    let listed =
        |file: &str, row: usize, kind: &str| defects.get(&(file.to_string(), row)).is_some_and(|(k, _)| k == kind);
    assert!(known.patients.is_subset(&known.members), "every patient is a member");

    let mut checked = 0;
    for (file, row, header, r) in all_rows(root, "claims_batch.csv") {
        let (m, p) = (
            header.iter().position(|h| h == "MemberID").unwrap(),
            header.iter().position(|h| h == "ProviderID").unwrap(),
        );
        assert!(
            known.members.contains(&r[m]) || listed(&file, row, "unknown_member"),
            "{file}:{row} unknown member {} not listed",
            r[m]
        );
        assert!(
            known.providers.contains(&r[p]) || listed(&file, row, "unknown_provider"),
            "{file}:{row} unknown provider {} not listed",
            r[p]
        );
        checked += 1;
    }
    for (file, row, line) in all_lines(root, "claims_stream.json") {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            assert!(listed(&file, row, "malformed_json"), "{file}:{row} malformed line not listed");
            continue;
        };
        let (m, p) = (v["MemberID"].as_str().unwrap(), v["ProviderID"].as_str().unwrap());
        assert!(known.members.contains(m) || listed(&file, row, "unknown_member"), "{file}:{row} unknown member {m}");
        assert!(
            known.providers.contains(p) || listed(&file, row, "unknown_provider"),
            "{file}:{row} unknown provider {p}"
        );
        checked += 1;
    }
    for source in ["claims.csv", "medical_events.csv"] {
        for (file, row, _, r) in all_rows(root, source) {
            assert!(
                known.patients.contains(&r[1]) || listed(&file, row, "unknown_member"),
                "{file}:{row} unknown patient {}",
                r[1]
            );
            checked += 1;
        }
    }
    assert!(checked > 100_000, "checked only {checked} rows");
}

fn parses_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

fn listed_defects_are_in_the_files(root: &Path) {
    let official = official_icd();
    let known = known_ids(root);
    let defects = defects(root);
    let mut seen_kinds = HashSet::new();
    let mut files: HashMap<String, Csv> = HashMap::new();
    for ((file, row), (kind, column)) in &defects {
        seen_kinds.insert(kind.clone());
        let day = parses_date(file.split('/').next().unwrap()).expect("day folder");
        let path = root.join(file);
        if file.ends_with(".json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            let line = lines[row - 1];
            let v = serde_json::from_str::<serde_json::Value>(line);
            match kind.as_str() {
                "malformed_json" => assert!(v.is_err(), "{file}:{row} parses"),
                "exact_duplicate" => assert_eq!(line, lines[row - 2], "{file}:{row}"),
                _ => {
                    let v = v.unwrap_or_else(|e| panic!("{file}:{row}: {e}"));
                    match kind.as_str() {
                        "invalid_icd" => assert!(
                            v["ICD10Codes"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .any(|c| !official.contains(&c.as_str().unwrap().replace('.', ""))),
                            "{file}:{row}"
                        ),
                        "unknown_member" => {
                            assert!(!known.members.contains(v["MemberID"].as_str().unwrap()), "{file}:{row}")
                        }
                        "unknown_provider" => {
                            assert!(!known.providers.contains(v["ProviderID"].as_str().unwrap()), "{file}:{row}")
                        }
                        "missing_amount" => assert!(v["Amount"].is_null(), "{file}:{row}"),
                        "wrong_type" => {
                            assert!(v["Amount"].as_str().is_some_and(|s| s.parse::<f64>().is_err()), "{file}:{row}")
                        }
                        "future_date" => {
                            assert!(parses_date(v["ClaimDate"].as_str().unwrap()).unwrap() > day, "{file}:{row}")
                        }
                        other => panic!("unexpected defect {other} in {file}"),
                    }
                }
            }
            continue;
        }
        let csv = files.entry(file.clone()).or_insert_with(|| Csv::read(&path));
        if kind == "extra_column" {
            assert_eq!(*row, 0);
            assert_eq!(csv.header.last().unwrap(), column, "{file}: extra column");
            continue;
        }
        let r = &csv.rows[row - 1];
        let value = |name: &str| r[csv.col(name)].as_str();
        match kind.as_str() {
            "exact_duplicate" => assert_eq!(r, &csv.rows[row - 2], "{file}:{row}"),
            "conflicting_duplicate" => {
                let prev = &csv.rows[row - 2];
                assert_eq!(r[0], prev[0], "{file}:{row} same key");
                assert_ne!(r, prev, "{file}:{row} differs");
            }
            "invalid_icd" => {
                let codes = if csv.header.contains(&"ICD10Codes".to_string()) {
                    value("ICD10Codes")
                } else {
                    value("diagnosis_code")
                };
                assert!(codes.split(';').any(|c| !official.contains(&c.replace('.', ""))), "{file}:{row} {codes}");
            }
            "unknown_member" => {
                let id =
                    if csv.header.contains(&"MemberID".to_string()) { value("MemberID") } else { value("patient_id") };
                assert!(!known.members.contains(id), "{file}:{row} {id}");
            }
            "unknown_provider" => assert!(!known.providers.contains(value("ProviderID")), "{file}:{row}"),
            "missing_amount" => assert_eq!(r[csv.col(column)], "", "{file}:{row}"),
            "wrong_type" => {
                let v = &r[csv.col(column)];
                let parses = v.parse::<f64>().is_ok() || parses_date(v).is_some() || v == "1.0" || v == "0.0";
                assert!(!parses, "{file}:{row} {column}={v} parses");
            }
            "wrong_case" => {
                let v = &r[csv.col(column)];
                let canonical = [
                    "M",
                    "F",
                    "O",
                    "MALE",
                    "FEMALE",
                    "submitted",
                    "approved",
                    "denied",
                    "paid",
                    "Professional",
                    "Institutional",
                    "Outpatient",
                ];
                assert!(
                    !canonical.contains(&v.as_str()) && canonical.iter().any(|c| c.eq_ignore_ascii_case(v)),
                    "{file}:{row} {column}={v}"
                );
            }
            "future_date" => assert!(parses_date(&r[csv.col(column)]).unwrap() > day, "{file}:{row}"),
            "service_after_claim" => {
                let (claim, service) =
                    (parses_date(value("ClaimDate")).unwrap(), parses_date(value("ServiceDate")).unwrap());
                assert!(service > claim && service <= day, "{file}:{row} claim {claim} service {service}");
            }
            other => panic!("unexpected defect {other} in {file}"),
        }
    }
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
        "extra_column",
    ] {
        assert!(seen_kinds.contains(kind), "no {kind} defect injected");
    }
}

fn fraud_labels_are_in_the_claims(root: &Path) {
    let labels = Csv::read(&root.join("_truth/fraud_labels.csv"));
    assert_eq!(labels.header, ["claim_id", "provider_id", "pattern", "intensity"]);
    let mut claims: HashMap<String, Vec<String>> = HashMap::new();
    let mut all = Vec::new();
    for (_, _, header, r) in all_rows(root, "claims_batch.csv") {
        assert_eq!(
            &header[..13],
            [
                "ClaimID",
                "MemberID",
                "ProviderID",
                "ClaimDate",
                "ServiceDate",
                "Amount",
                "Status",
                "ICD10Codes",
                "CPTCodes",
                "ClaimType",
                "SubmissionChannel",
                "Notes",
                "IngestTimestamp"
            ]
        );
        claims.entry(r[0].clone()).or_insert_with(|| r.clone());
        all.push(r);
    }
    let day0 = &day_folders(root)[0].1;
    let members = Csv::read(&day0.join("members.csv"));
    let ended: HashMap<&str, NaiveDate> = members
        .rows
        .iter()
        .filter(|r| r[8] == "0.0")
        .map(|r| (r[0].as_str(), NaiveDate::parse_from_str(&r[9][..10], "%Y-%m-%d").unwrap()))
        .collect();
    let mut patterns: HashMap<String, usize> = HashMap::new();
    let mut intensities = HashSet::new();
    let mut ring_members = HashSet::new();
    let mut ring_providers = HashSet::new();
    let mut checks: HashMap<String, (usize, usize)> = HashMap::new();
    for l in &labels.rows {
        let (id, provider, pattern) = (&l[0], &l[1], l[2].as_str());
        *patterns.entry(pattern.to_string()).or_default() += 1;
        intensities.insert(l[3].clone());
        let c = claims.get(id).unwrap_or_else(|| panic!("labelled claim {id} is in no batch file"));
        if c[2] != *provider {
            continue; // an unknown_provider defect replaced the ID in this row
        }
        let cpt: Vec<&str> = c[8].split(';').collect();
        let service = NaiveDate::parse_from_str(&c[4], "%Y-%m-%d").ok();
        let holds = match pattern {
            "upcoding" => cpt.iter().any(|c| ["99214", "99215"].contains(c)),
            "excessive_services" => cpt.len() >= 4,
            "unbundling" => {
                cpt.iter().all(|c| ["82947", "84132", "82565", "84295", "82310", "93005", "93010"].contains(c))
            }
            "weekend_spike" => service.is_some_and(|d| d.weekday().number_from_monday() >= 6),
            "duplicate_billing" => {
                all.iter().any(|o| o[0] != *id && o[1] == c[1] && o[2] == c[2] && o[4] == c[4] && o[8] == c[8])
            }
            "billing_after_coverage_end" => match (ended.get(c[1].as_str()), service) {
                (Some(end), Some(d)) => d > *end,
                _ => false,
            },
            "collusion_ring" => {
                ring_members.insert(c[1].clone());
                ring_providers.insert(c[2].clone());
                true
            }
            _ => true,
        };
        let tally = checks.entry(pattern.to_string()).or_insert((0usize, 0usize));
        tally.0 += 1;
        tally.1 += usize::from(!holds);
    }
    // A defect injected into the same row (a future date, an unknown
    // member) can hide a pattern; the pattern must show in nearly all rows.
    for (pattern, (n, failed)) in &checks {
        assert!(*failed * 10 <= *n, "{pattern}: {failed} of {n} labelled claims do not show the pattern");
    }
    for p in [
        "phantom_billing",
        "upcoding",
        "unbundling",
        "duplicate_billing",
        "excessive_services",
        "amount_outlier",
        "weekend_spike",
        "billing_after_coverage_end",
        "collusion_ring",
    ] {
        assert!(patterns.get(p).copied().unwrap_or(0) > 0, "no {p} labels: {patterns:?}");
    }
    assert_eq!(intensities, HashSet::from(["low".to_string(), "medium".to_string(), "high".to_string()]));
    assert!(ring_members.len() <= 50, "the collusion ring shares a small set of members, got {}", ring_members.len());
    assert!((2..=5).contains(&ring_providers.len()), "the ring is a few providers, got {}", ring_providers.len());

    // Camouflage: no single amount threshold finds all fraud without
    // flagging most honest claims.
    let fraud: HashSet<&String> = labels.rows.iter().map(|l| &l[0]).collect();
    let amounts = |f: bool| -> Vec<f64> {
        claims.iter().filter(|(id, _)| fraud.contains(id) == f).filter_map(|(_, c)| c[5].parse::<f64>().ok()).collect()
    };
    let (bad, good) = (amounts(true), amounts(false));
    let min_fraud = bad.iter().cloned().fold(f64::MAX, f64::min);
    let honest_above = good.iter().filter(|a| **a >= min_fraud).count() as f64 / good.len() as f64;
    assert!(honest_above > 0.5, "an amount threshold at {min_fraud} separates fraud too easily ({honest_above})");
}
