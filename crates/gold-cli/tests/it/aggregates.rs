//! The regulatory aggregates: each one recomputed here, in plain Rust, from
//! the rows of the tables it summarises (read with plain SELECTs), on a
//! 30-day landing built by two nightly builds, and compared number for
//! number.
//!
//! The builds run once for every test here ([`warehouse`]), which reads
//! every query of [`QUERIES`] then; each test recomputes one aggregate.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::OnceLock;

use chrono::{Datelike, NaiveDate};
use serde_json::{Map, Value};

use crate::{gold_json, gold_ok};

type Row = Map<String, Value>;
/// A referral group (provider, pattern, reasons) and its claims, billed
/// cents and scores.
type Referrals = BTreeMap<(Option<String>, String, String), (i64, i64, Vec<f64>)>;
/// A scorecard group (run, date, table, rule, action) and its batches,
/// rows evaluated and rows failed.
type Scorecard = BTreeMap<(i64, String, String, String, String), (BTreeSet<String>, i64, i64)>;

/// The rows of `sql`, as the auditor (who sees everything) reads them.
#[track_caller]
fn rows(dir: &Path, sql: &str) -> Vec<Row> {
    let (code, doc) = gold_json(dir, &["--warehouse", "wh", "sql", sql, "--role", "auditor"]);
    assert_eq!(code, Some(0), "{sql}: {doc}");
    doc["rows"].as_array().unwrap().iter().map(|r| r.as_object().unwrap().clone()).collect()
}

// A NULL is left out of a JSON row, so every getter takes a missing key as NULL.
fn s(r: &Row, k: &str) -> Option<String> {
    r.get(k).and_then(Value::as_str).map(str::to_string)
}
fn i(r: &Row, k: &str) -> Option<i64> {
    r.get(k).and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
}
fn f(r: &Row, k: &str) -> Option<f64> {
    r.get(k).and_then(Value::as_f64)
}
fn b(r: &Row, k: &str) -> Option<bool> {
    r.get(k).and_then(Value::as_bool)
}

#[track_caller]
fn same_f(actual: Option<f64>, expected: Option<f64>, what: &str) {
    match (actual, expected) {
        (None, None) => {}
        (Some(a), Some(e)) => assert!((a - e).abs() <= 1e-9 * e.abs().max(1.0), "{what}: {a} != {e}"),
        _ => panic!("{what}: {actual:?} != {expected:?}"),
    }
}

#[track_caller]
fn same_keys<K: Ord + std::fmt::Debug, A, B>(table: &str, actual: &BTreeMap<K, A>, expected: &BTreeMap<K, B>) {
    let a: BTreeSet<&K> = actual.keys().collect();
    let e: BTreeSet<&K> = expected.keys().collect();
    assert_eq!(a, e, "{table}: the groups differ");
    assert!(!a.is_empty(), "{table} is empty");
}

fn ratio(n: i64, d: i64) -> Option<f64> {
    (d != 0).then(|| n as f64 / d as f64)
}

/// The first instant (µs since 1970, UTC) of the last day of month `m`
/// (yyyymm), and that day.
fn month_end(m: i64) -> (i64, NaiveDate) {
    let (y, mo) = ((m / 100) as i32, (m % 100) as u32);
    let next = if mo == 12 { NaiveDate::from_ymd_opt(y + 1, 1, 1) } else { NaiveDate::from_ymd_opt(y, mo + 1, 1) };
    let last = next.unwrap().pred_opt().unwrap();
    (last.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_micros(), last)
}

fn yyyymm(date: &str) -> i64 {
    let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
    i64::from(d.year()) * 100 + i64::from(d.month())
}

fn plan_or_unknown(v: Option<&(Option<String>, Option<String>)>) -> (String, String) {
    let (p, r) = v.cloned().unwrap_or((None, None));
    (p.unwrap_or_else(|| "unknown".into()), r.unwrap_or_else(|| "unknown".into()))
}

struct Version {
    id: Option<String>,
    plan: Option<String>,
    region: Option<String>,
    inferred: bool,
    active: Option<bool>,
    from: i64,
    to: i64,
}

/// The claims, with amounts in cents.
const FACTS: &str = "SELECT claim_id, provider_id, member_sk, service_month, claim_date_key, status, \
     CAST(billed_amount * 100 AS BIGINT) AS billed, CAST(paid_amount * 100 AS BIGINT) AS paid, \
     is_clean_claim, days_to_payment FROM fact_claims";
/// Every version of every member, its interval in µs.
const MEMBERS: &str = "SELECT member_sk, member_id, plan_type, region, is_inferred, is_active, \
     CAST(valid_from AS BIGINT) AS vf, CAST(valid_to AS BIGINT) AS vt FROM dim_members";
/// Each member version's plan and region, by surrogate key.
const MEMBER_SKS: &str = "SELECT member_sk, plan_type, region FROM dim_members";
/// Every version of every patient (the premiums), in cents.
const PATIENTS: &str = "SELECT patient_id, is_inferred, CAST(charges * 100 AS BIGINT) AS charges, \
     CAST(coverage_start_date AS VARCHAR) AS coverage, CAST(valid_from AS BIGINT) AS vf, \
     CAST(valid_to AS BIGINT) AS vt FROM dim_patients";
const EVENTS: &str = "SELECT event_month FROM fact_medical_events";
/// The live silver claims, in cents, with their service (or claim) day.
const SILVER_CLAIMS: &str = "SELECT provider_id, status, CAST(amount * 100 AS BIGINT) AS cents, \
     CAST(coalesce(service_date, claim_date) AS VARCHAR) AS day FROM silver_claims \
     WHERE NOT coalesce(_is_deleted, false)";
const FRAUD_SCORES: &str = "SELECT claim_id, provider_id, score, reason_1, reason_2, reason_3 FROM gold_fraud_scores";
const DQ_RESULTS: &str = "SELECT run_id, CAST(logical_date AS VARCHAR) AS day, \"table\", rule, action, batch_id, \
     rows_evaluated, rows_failed FROM dq_results";
const PROVIDER_MONTHLY_SUMMARY: &str = "SELECT provider_id, service_month, status, claims, missing_amount, \
     CAST(billed_amount * 100 AS BIGINT) AS b, CAST(paid_amount * 100 AS BIGINT) AS p \
     FROM gold_provider_monthly_summary";
const CLAIM_OUTCOMES: &str = "SELECT * FROM gold_claim_outcomes";
const PROMPT_PAY: &str = "SELECT *, CAST(as_of_date AS VARCHAR) AS as_of FROM gold_prompt_pay";
const MEMBER_MONTHS: &str = "SELECT month, plan_type, region, members, members_with_premium, \
     CAST(premium_earned * 100 AS BIGINT) AS premium FROM gold_member_months";
const LOSS_RATIO: &str = "SELECT month, plan_type, region, members, paid_claims, \
     CAST(paid_amount * 100 AS BIGINT) AS paid, CAST(premium_earned * 100 AS BIGINT) AS premium, loss_ratio, \
     minimum_ratio, meets_minimum FROM gold_loss_ratio";
const UTILIZATION: &str = "SELECT * FROM gold_utilization";
const FWA_REFERRALS: &str = "SELECT provider_id, pattern, reasons, referred_claims, \
     CAST(referred_amount * 100 AS BIGINT) AS amount, mean_score, max_score FROM gold_fwa_referrals";
const DQ_SCORECARD: &str = "SELECT *, CAST(logical_date AS VARCHAR) AS day FROM gold_dq_scorecard";

/// Every query the tests read, run once after the builds.
const QUERIES: [&str; 16] = [
    FACTS,
    MEMBERS,
    MEMBER_SKS,
    PATIENTS,
    EVENTS,
    SILVER_CLAIMS,
    FRAUD_SCORES,
    DQ_RESULTS,
    PROVIDER_MONTHLY_SUMMARY,
    CLAIM_OUTCOMES,
    PROMPT_PAY,
    MEMBER_MONTHS,
    LOSS_RATIO,
    UTILIZATION,
    FWA_REFERRALS,
    DQ_SCORECARD,
];

/// The rows of every query of [`QUERIES`] on the built warehouse.
struct Built {
    rows: HashMap<&'static str, Vec<Row>>,
}

impl Built {
    /// The rows of `sql`, one of [`QUERIES`].
    #[track_caller]
    fn rows(&self, sql: &str) -> &[Row] {
        self.rows.get(sql).unwrap_or_else(|| panic!("add the query to QUERIES: {sql}"))
    }
}

/// Generates a 30-day landing, runs two nightly builds over it, and reads
/// every query of [`QUERIES`]; the folder is gone when it returns.
fn build() -> Built {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    gold_ok(d, &["generate", "--out", "landing", "--members", "500", "--days", "30", "--seed", "11"]);
    // Two nightly builds: the second is incremental, and the dimensions
    // have history by then.
    for date in ["2025-01-12", "2025-01-27"] {
        let (code, doc) = gold_json(d, &["build", "--landing", "landing", "--date", date, "--warehouse", "wh"]);
        assert_eq!(code, Some(0), "{doc}");
        let last = doc["stages"].as_array().unwrap().last().unwrap();
        assert_eq!(last["stage"], "aggregates", "{doc}");
    }
    Built { rows: QUERIES.iter().map(|sql| (*sql, rows(d, sql))).collect() }
}

/// The built warehouse's rows, built by the first test to ask; a failed
/// build fails every test with its message, without building again.
fn warehouse() -> &'static Built {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        std::panic::catch_unwind(build).map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        })
    });
    built.as_ref().unwrap_or_else(|message| panic!("the two nightly builds failed: {message}"))
}

/// Every version of every member.
fn members(w: &Built) -> Vec<Version> {
    w.rows(MEMBERS)
        .iter()
        .map(|r| Version {
            id: s(r, "member_id"),
            plan: s(r, "plan_type"),
            region: s(r, "region"),
            inferred: b(r, "is_inferred").unwrap(),
            active: b(r, "is_active"),
            from: i(r, "vf").unwrap(),
            to: i(r, "vt").unwrap(),
        })
        .collect()
}

/// Each member version's (plan, region), by surrogate key.
fn member_of(w: &Built) -> HashMap<i64, (Option<String>, Option<String>)> {
    w.rows(MEMBER_SKS).iter().map(|r| (i(r, "member_sk").unwrap(), (s(r, "plan_type"), s(r, "region")))).collect()
}

/// gold_member_months's rows by (month, plan, region).
fn member_months(w: &Built) -> BTreeMap<(i64, String, String), Row> {
    w.rows(MEMBER_MONTHS)
        .iter()
        .map(|r| ((i(r, "month").unwrap(), s(r, "plan_type").unwrap(), s(r, "region").unwrap()), r.clone()))
        .collect()
}

#[test]
fn the_builds_leave_claims_events_and_members_with_history() {
    let w = warehouse();
    let (facts, events, sks) = (w.rows(FACTS), w.rows(EVENTS), w.rows(MEMBER_SKS));
    let members = members(w);
    assert!(facts.len() > 1000 && events.len() > 1000, "{} claims, {} events", facts.len(), events.len());
    assert!(members.len() > sks.iter().filter(|r| i(r, "member_sk") != Some(-1)).count() / 2);
    assert!(
        members.iter().map(|m| &m.id).collect::<BTreeSet<_>>().len() < members.len(),
        "some member has several versions"
    );
}

#[test]
fn gold_provider_monthly_summary_matches_silver_claims() {
    let w = warehouse();
    let silver = w.rows(SILVER_CLAIMS);
    assert_eq!(silver.len(), w.rows(FACTS).len(), "one fact per silver claim");
    let mut expected: BTreeMap<(String, i64, String), [i64; 4]> = BTreeMap::new();
    for r in silver {
        let Some(p) = s(r, "provider_id").filter(|p| !p.is_empty()) else { continue };
        let month = s(r, "day").map_or(-1, |day| yyyymm(&day));
        let status = s(r, "status").unwrap();
        let cents = i(r, "cents");
        let e = expected.entry((p, month, status.clone())).or_default();
        e[0] += 1;
        e[1] += i64::from(cents.is_none());
        e[2] += cents.unwrap_or(0);
        e[3] += if status == "paid" { cents.unwrap_or(0) } else { 0 };
    }
    let actual: BTreeMap<(String, i64, String), [i64; 4]> = w
        .rows(PROVIDER_MONTHLY_SUMMARY)
        .iter()
        .map(|r| {
            let key = (s(r, "provider_id").unwrap(), i(r, "service_month").unwrap(), s(r, "status").unwrap());
            (key, [i(r, "claims").unwrap(), i(r, "missing_amount").unwrap(), i(r, "b").unwrap(), i(r, "p").unwrap()])
        })
        .collect();
    same_keys("gold_provider_monthly_summary", &actual, &expected);
    assert_eq!(actual, expected, "gold_provider_monthly_summary");
}

#[test]
fn gold_claim_outcomes_matches_fact_claims() {
    let w = warehouse();
    let member_of = member_of(w);
    let mut expected: BTreeMap<(String, String, i64), [i64; 4]> = BTreeMap::new();
    for r in w.rows(FACTS) {
        let (plan, region) = plan_or_unknown(member_of.get(&i(r, "member_sk").unwrap()));
        let key = i(r, "claim_date_key").unwrap();
        let month = if key > 0 { key / 100 } else { -1 };
        let status = s(r, "status").unwrap_or_default();
        let e = expected.entry((plan, region, month)).or_default();
        e[0] += 1;
        e[1] += i64::from(status == "approved" || status == "paid");
        e[2] += i64::from(status == "rejected");
        e[3] += i64::from(status == "submitted" || status == "pending");
    }
    let actual: BTreeMap<(String, String, i64), &Row> = w
        .rows(CLAIM_OUTCOMES)
        .iter()
        .map(|r| ((s(r, "plan_type").unwrap(), s(r, "region").unwrap(), i(r, "claim_month").unwrap()), r))
        .collect();
    same_keys("gold_claim_outcomes", &actual, &expected);
    for (k, [claims, approved, denied, open]) in &expected {
        let r = actual[k];
        let got = [i(r, "claims"), i(r, "approved"), i(r, "denied"), i(r, "open"), i(r, "decided")];
        assert_eq!(got, [Some(*claims), Some(*approved), Some(*denied), Some(*open), Some(approved + denied)], "{k:?}");
        same_f(f(r, "approval_rate"), ratio(*approved, approved + denied), "approval_rate");
        same_f(f(r, "denial_rate"), ratio(*denied, approved + denied), "denial_rate");
    }
}

/// The day of a `yyyymmdd` date key.
fn day_of_key(key: i64) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt((key / 10000) as i32, (key / 100 % 100) as u32, (key % 100) as u32)
}

/// gold_prompt_pay's counts per (line of business, month), recomputed
/// from the clean claims as of the newest claim date: clean claims,
/// rejected, paid on an unknown day, due and paid within 30 days, due and
/// paid within 90 days.
fn prompt_pay_counts(w: &Built, as_of: NaiveDate) -> BTreeMap<(String, i64), [i64; 7]> {
    let member_of = member_of(w);
    let mut expected: BTreeMap<(String, i64), [i64; 7]> = BTreeMap::new();
    for r in w.rows(FACTS).iter().filter(|r| b(r, "is_clean_claim") == Some(true)) {
        let key = i(r, "claim_date_key").unwrap();
        if key <= 0 {
            continue;
        }
        let (plan, _) = plan_or_unknown(member_of.get(&i(r, "member_sk").unwrap()));
        let lob = match plan.as_str() {
            "Medicaid" | "Medicare Advantage" => plan.clone(),
            _ => "Commercial".to_string(),
        };
        let age = (as_of - day_of_key(key).unwrap()).num_days();
        let status = s(r, "status").unwrap_or_default();
        let paid_days = i(r, "days_to_payment").filter(|_| status == "paid");
        let unknown_day = status == "paid" && paid_days.is_none();
        let measured = status != "rejected" && !unknown_day;
        let e = expected.entry((lob, key / 100)).or_default();
        e[0] += 1;
        e[1] += i64::from(status == "rejected");
        e[2] += i64::from(unknown_day);
        e[3] += i64::from(measured && (paid_days.is_some() || age >= 30));
        e[4] += i64::from(paid_days.is_some_and(|d| d <= 30));
        e[5] += i64::from(measured && (paid_days.is_some() || age >= 90));
        e[6] += i64::from(paid_days.is_some_and(|d| d <= 90));
    }
    expected
}

#[test]
fn gold_prompt_pay_matches_fact_claims() {
    let w = warehouse();
    let as_of_key = w.rows(FACTS).iter().filter_map(|r| i(r, "claim_date_key")).filter(|k| *k > 0).max().unwrap();
    let as_of = day_of_key(as_of_key).unwrap();
    let expected = prompt_pay_counts(w, as_of);
    let actual: BTreeMap<(String, i64), &Row> = w
        .rows(PROMPT_PAY)
        .iter()
        .map(|r| ((s(r, "line_of_business").unwrap(), i(r, "claim_month").unwrap()), r))
        .collect();
    same_keys("gold_prompt_pay", &actual, &expected);
    let thresholds = |lob: &str| match lob {
        "Medicaid" => (Some(0.90), Some(0.99)),
        "Medicare Advantage" => (Some(0.95), None),
        _ => (None, None),
    };
    for ((lob, month), e) in &expected {
        let r = actual[&(lob.clone(), *month)];
        assert_eq!(s(r, "as_of"), Some(as_of.to_string()));
        let cols =
            ["clean_claims", "rejected", "paid_date_unknown", "due_30", "paid_within_30", "due_90", "paid_within_90"];
        let got: Vec<i64> = cols.iter().map(|c| i(r, c).unwrap()).collect();
        assert_eq!(got, e.to_vec(), "gold_prompt_pay {lob} {month}");
        let (t30, t90) = thresholds(lob);
        same_f(f(r, "threshold_30"), t30, "threshold_30");
        same_f(f(r, "threshold_90"), t90, "threshold_90");
        let (s30, s90) = (ratio(e[4], e[3]), ratio(e[6], e[5]));
        same_f(f(r, "share_within_30"), s30, "share_within_30");
        same_f(f(r, "share_within_90"), s90, "share_within_90");
        let met = |share: Option<f64>, t: Option<f64>| Some(share? >= t?);
        let (m30, m90) = (met(s30, t30), met(s90, t90));
        assert_eq!((b(r, "met_30"), b(r, "met_90")), (m30, m90), "{lob} {month}");
        let all = if m30.is_none() && m90.is_none() { None } else { Some(m30.unwrap_or(true) && m90.unwrap_or(true)) };
        assert_eq!(b(r, "met"), all, "{lob} {month}");
    }
    assert!(actual.keys().any(|(lob, _)| lob == "Medicaid"), "Medicaid claims are measured");
}

#[test]
fn gold_member_months_matches_dim_members_and_dim_patients() {
    let w = warehouse();
    let (patients, members) = (w.rows(PATIENTS), members(w));
    let months: BTreeSet<i64> = w
        .rows(FACTS)
        .iter()
        .filter_map(|r| i(r, "service_month"))
        .chain(w.rows(EVENTS).iter().filter_map(|r| i(r, "event_month")))
        .filter(|m| *m > 0)
        .collect();
    let mut expected: BTreeMap<(i64, String, String), [i64; 3]> = BTreeMap::new();
    for &m in &months {
        let (at, last) = month_end(m);
        let enrolled = members
            .iter()
            .filter(|v| v.from <= at && at < v.to && !v.inferred && v.active != Some(false) && v.id.is_some());
        for v in enrolled {
            let premium = patients.iter().find(|p| {
                s(p, "patient_id") == v.id
                    && i(p, "vf").unwrap() <= at
                    && at < i(p, "vt").unwrap()
                    && b(p, "is_inferred") == Some(false)
                    && i(p, "charges").is_some()
                    && s(p, "coverage").is_none_or(|c| c <= last.to_string())
            });
            let key = (
                m,
                v.plan.clone().unwrap_or_else(|| "unknown".into()),
                v.region.clone().unwrap_or_else(|| "unknown".into()),
            );
            let e = expected.entry(key).or_default();
            e[0] += 1;
            if let Some(p) = premium {
                e[1] += 1;
                e[2] += i(p, "charges").unwrap();
            }
        }
    }
    let actual = member_months(w);
    same_keys("gold_member_months", &actual, &expected);
    for (k, [n, with, charges]) in &expected {
        let r = &actual[k];
        assert_eq!((i(r, "members"), i(r, "members_with_premium")), (Some(*n), Some(*with)), "{k:?}");
        // A twelfth of the yearly premiums, to the cent.
        let premium = i(r, "premium").unwrap();
        assert!((premium * 12 - charges).abs() <= 12, "{k:?}: premium {premium} cents for yearly {charges}");
    }
}

#[test]
fn gold_loss_ratio_matches_fact_claims_and_gold_member_months() {
    let w = warehouse();
    let (member_of, member_months) = (member_of(w), member_months(w));
    let mut paid: BTreeMap<(i64, String, String), [i64; 2]> = BTreeMap::new();
    for r in w.rows(FACTS).iter().filter(|r| i(r, "service_month").unwrap() > 0) {
        let (plan, region) = plan_or_unknown(member_of.get(&i(r, "member_sk").unwrap()));
        let e = paid.entry((i(r, "service_month").unwrap(), plan, region)).or_default();
        e[0] += i64::from(s(r, "status").as_deref() == Some("paid"));
        e[1] += i(r, "paid").unwrap_or(0);
    }
    let keys: BTreeMap<(i64, String, String), ()> =
        paid.keys().chain(member_months.keys()).map(|k| (k.clone(), ())).collect();
    let actual: BTreeMap<(i64, String, String), &Row> = w
        .rows(LOSS_RATIO)
        .iter()
        .map(|r| ((i(r, "month").unwrap(), s(r, "plan_type").unwrap(), s(r, "region").unwrap()), r))
        .collect();
    same_keys("gold_loss_ratio", &actual, &keys);
    for k in keys.keys() {
        let r = actual[k];
        let [count, cents] = paid.get(k).copied().unwrap_or_default();
        let members = member_months.get(k).map_or(0, |m| i(m, "members").unwrap());
        let premium = member_months.get(k).map_or(0, |m| i(m, "premium").unwrap());
        assert_eq!(
            (i(r, "members"), i(r, "paid_claims"), i(r, "paid"), i(r, "premium")),
            (Some(members), Some(count), Some(cents), Some(premium)),
            "gold_loss_ratio {k:?}"
        );
        let minimum = if k.1 == "Medicaid" || k.1 == "Medicare Advantage" { 0.85 } else { 0.80 };
        same_f(f(r, "minimum_ratio"), Some(minimum), "minimum_ratio");
        let lr = ratio(cents, premium);
        same_f(f(r, "loss_ratio"), lr, &format!("loss_ratio {k:?}"));
        assert_eq!(b(r, "meets_minimum"), lr.map(|x| x >= minimum), "{k:?}");
    }
    let minimums: BTreeSet<String> =
        actual.values().filter_map(|r| f(r, "minimum_ratio")).map(|m| format!("{m}")).collect();
    assert_eq!(minimums.len(), 2, "both the 80% and the 85% minimum apply: {minimums:?}");
}

#[test]
fn gold_utilization_matches_gold_member_months_claims_and_events() {
    let w = warehouse();
    let mut expected: BTreeMap<i64, [i64; 3]> = BTreeMap::new();
    for (k, r) in &member_months(w) {
        expected.entry(k.0).or_default()[0] += i(r, "members").unwrap();
    }
    for r in w.rows(FACTS).iter().filter(|r| i(r, "service_month").unwrap() > 0) {
        expected.entry(i(r, "service_month").unwrap()).or_default()[1] += 1;
    }
    for r in w.rows(EVENTS).iter().filter(|r| i(r, "event_month").unwrap() > 0) {
        expected.entry(i(r, "event_month").unwrap()).or_default()[2] += 1;
    }
    let actual: BTreeMap<i64, &Row> = w.rows(UTILIZATION).iter().map(|r| (i(r, "month").unwrap(), r)).collect();
    same_keys("gold_utilization", &actual, &expected);
    for (m, [n, claims, events]) in &expected {
        let r = actual[m];
        assert_eq!((i(r, "members"), i(r, "claims"), i(r, "events")), (Some(*n), Some(*claims), Some(*events)), "{m}");
        let per = |x: i64| (*n != 0).then(|| x as f64 * 1000.0 / *n as f64);
        same_f(f(r, "claims_per_1000"), per(*claims), "claims_per_1000");
        same_f(f(r, "events_per_1000"), per(*events), "events_per_1000");
    }
}

#[test]
fn gold_fwa_referrals_matches_gold_fraud_scores_at_the_scoring_threshold() {
    let w = warehouse();
    let scoring: toml::Value = toml::from_str(include_str!("../../../../models/scoring.toml")).unwrap();
    let threshold = scoring["scores"]["referral_threshold"].as_float().unwrap();
    let billed: HashMap<String, Option<i64>> =
        w.rows(FACTS).iter().map(|r| (s(r, "claim_id").unwrap(), i(r, "billed"))).collect();
    let name = |r: &Row, k: &str| s(r, k).map(|x| x.split(" (").next().unwrap().to_string());
    let mut expected: Referrals = BTreeMap::new();
    for r in w.rows(FRAUD_SCORES) {
        let score = f(r, "score").unwrap();
        if score < threshold {
            continue;
        }
        let reasons: Vec<String> = ["reason_1", "reason_2", "reason_3"].iter().filter_map(|k| name(r, k)).collect();
        let key = (s(r, "provider_id"), name(r, "reason_1").unwrap_or_else(|| "none".into()), reasons.join(" + "));
        let e = expected.entry(key).or_default();
        e.0 += 1;
        e.1 += billed[&s(r, "claim_id").unwrap()].unwrap_or(0);
        e.2.push(score);
    }
    let actual: BTreeMap<(Option<String>, String, String), &Row> = w
        .rows(FWA_REFERRALS)
        .iter()
        .map(|r| ((s(r, "provider_id"), s(r, "pattern").unwrap(), s(r, "reasons").unwrap()), r))
        .collect();
    same_keys("gold_fwa_referrals", &actual, &expected);
    for (k, (n, cents, scores)) in &expected {
        let r = actual[k];
        assert_eq!((i(r, "referred_claims"), i(r, "amount")), (Some(*n), Some(*cents)), "{k:?}");
        let mean = scores.iter().sum::<f64>() / scores.len() as f64;
        assert!((f(r, "mean_score").unwrap() - mean).abs() < 1e-12, "{k:?}");
        same_f(f(r, "max_score"), scores.iter().copied().reduce(f64::max), "max_score");
    }
}

#[test]
fn gold_dq_scorecard_matches_dq_results() {
    let w = warehouse();
    let mut expected: Scorecard = BTreeMap::new();
    for r in w.rows(DQ_RESULTS) {
        let key = (
            i(r, "run_id").unwrap(),
            s(r, "day").unwrap(),
            s(r, "table").unwrap(),
            s(r, "rule").unwrap(),
            s(r, "action").unwrap(),
        );
        let e = expected.entry(key).or_default();
        e.0.extend(s(r, "batch_id"));
        e.1 += i(r, "rows_evaluated").unwrap_or(0);
        e.2 += i(r, "rows_failed").unwrap_or(0);
    }
    let actual: BTreeMap<(i64, String, String, String, String), &Row> = w
        .rows(DQ_SCORECARD)
        .iter()
        .map(|r| {
            let key = (
                i(r, "run_id").unwrap(),
                s(r, "day").unwrap(),
                s(r, "table_name").unwrap(),
                s(r, "rule").unwrap(),
                s(r, "action").unwrap(),
            );
            (key, r)
        })
        .collect();
    same_keys("gold_dq_scorecard", &actual, &expected);
    for (k, (batches, evaluated, failed)) in &expected {
        let r = actual[k];
        assert_eq!(
            (i(r, "batches"), i(r, "rows_evaluated"), i(r, "rows_failed")),
            (Some(batches.len() as i64), Some(*evaluated), Some(*failed)),
            "{k:?}"
        );
        same_f(f(r, "pass_rate"), ratio(*failed, *evaluated).map(|x| 1.0 - x), "pass_rate");
    }
    let runs: BTreeSet<i64> = actual.keys().map(|k| k.0).collect();
    assert_eq!(runs.len(), 2, "both builds' results are scored: {runs:?}");
}
