//! The report over a small hand-built warehouse: every section drawn from
//! its gold table, and a section without data when its table is missing
//! from the run's state or holds no rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, BooleanArray, Decimal128Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use storage::{Commit, TableName, Warehouse};

const CHARTS: [&str; 6] = [
    "chart-dq-scorecard",
    "chart-claims-trend",
    "chart-prompt-pay",
    "chart-loss-ratio",
    "chart-fraud-scores",
    "chart-top-providers",
];

fn text(values: &[Option<&str>]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

fn int(values: &[i64]) -> ArrayRef {
    Arc::new(Int64Array::from(values.to_vec()))
}

fn double(values: &[Option<f64>]) -> ArrayRef {
    Arc::new(Float64Array::from(values.to_vec()))
}

/// Amounts in cents, as `DECIMAL(18, 2)`.
fn money(cents: &[i128]) -> ArrayRef {
    Arc::new(Decimal128Array::from(cents.to_vec()).with_precision_and_scale(18, 2).unwrap())
}

/// The gold tables the report reads, each as one batch.
fn tables() -> Vec<(&'static str, RecordBatch)> {
    let s = |v: &[&str]| text(&v.iter().map(|s| Some(*s)).collect::<Vec<_>>());
    let batch = |cols: Vec<(&str, ArrayRef)>| RecordBatch::try_from_iter(cols).unwrap();
    vec![
        (
            "gold_dq_scorecard",
            batch(vec![
                (
                    "table_name",
                    s(&["silver_claims", "silver_claims", "silver_members", "silver_members", "silver_providers"]),
                ),
                ("rule", s(&["amount_positive", "duplicates", "dob_valid", "id_format", "npi_valid"])),
                ("action", s(&["warn", "count", "quarantine", "drop", "fail"])),
                ("rows_evaluated", int(&[1000, 1000, 400, 400, 0])),
                ("rows_failed", int(&[25, 3, 4, 0, 0])),
            ]),
        ),
        (
            "gold_claim_outcomes",
            batch(vec![
                ("claim_month", Arc::new(Int32Array::from(vec![202411, 202412, 202412, 202501, 0])) as ArrayRef),
                ("claims", int(&[120, 300, 80, 45, 7])),
                ("denied", int(&[12, 20, 9, 0, 1])),
                ("decided", int(&[100, 250, 70, 0, 5])),
            ]),
        ),
        (
            "gold_prompt_pay",
            batch(vec![
                ("line_of_business", s(&["Commercial", "Medicaid", "Medicaid", "Medicare Advantage"])),
                ("claim_month", Arc::new(Int32Array::from(vec![202412, 202411, 202412, 202412])) as ArrayRef),
                ("share_within_30", double(&[Some(0.81), Some(0.93), Some(0.87), None])),
                ("threshold_30", double(&[None, Some(0.9), Some(0.9), Some(0.95)])),
                ("share_within_90", double(&[Some(0.97), Some(0.995), Some(0.98), None])),
                ("threshold_90", double(&[None, Some(0.99), Some(0.99), None])),
                ("met", Arc::new(BooleanArray::from(vec![None, Some(true), Some(false), None])) as ArrayRef),
                ("due_30", int(&[40, 100, 90, 0])),
                ("due_90", int(&[30, 80, 60, 0])),
            ]),
        ),
        (
            "gold_loss_ratio",
            batch(vec![
                ("plan_type", s(&["HMO", "Medicaid", "Medicaid", "PPO"])),
                ("paid_amount", money(&[812_345, 1_200_000, 950_050, 10_000])),
                ("premium_earned", money(&[1_000_000, 1_300_000, 1_000_000, 0])),
                ("minimum_ratio", double(&[Some(0.8), Some(0.85), Some(0.85), Some(0.8)])),
            ]),
        ),
        (
            "gold_fraud_scores",
            batch(vec![("score", double(&[0.01, 0.02, 0.04, 0.11, 0.26, 0.5, 0.51, 0.73, 0.96, 0.98, 1.0].map(Some)))]),
        ),
        (
            "gold_fwa_referrals",
            batch(vec![
                ("pattern", s(&["upcoding", "unbundling", "upcoding"])),
                ("referred_claims", int(&[3, 1, 2])),
                ("referred_amount", money(&[123_456, 9_900, 50_000])),
            ]),
        ),
        (
            "gold_provider_risk",
            batch(vec![
                ("provider_id", s(&["P-003", "P-001", "P-002"])),
                ("score", double(&[Some(0.42), Some(0.91), Some(0.91)])),
                ("reason_1", text(&[Some("many claims"), Some("high amounts"), None])),
                ("reason_2", text(&[None, Some("odd hours"), None])),
                ("reason_3", text(&[None, Some("<rare> & \"new\" codes"), None])),
                ("model_version", s(&["m1", "m1", "m1"])),
            ]),
        ),
    ]
}

/// A warehouse holding `tables`, and its state (each table at version 0).
async fn warehouse(
    dir: &std::path::Path,
    tables: Vec<(&'static str, RecordBatch)>,
) -> (Warehouse, BTreeMap<String, i64>) {
    let warehouse = Warehouse::open(dir.to_str().unwrap()).unwrap();
    let run = testkit::run(1, testkit::date("2025-01-04"));
    let mut state = BTreeMap::new();
    for (name, batch) in tables {
        let version =
            warehouse.append(&TableName::new(name).unwrap(), vec![batch], &Commit::new(&run, "test")).await.unwrap();
        state.insert(name.to_string(), version);
    }
    (warehouse, state)
}

async fn render(warehouse: &Warehouse, state: BTreeMap<String, i64>) -> report::Report {
    let source = report::Source {
        warehouse,
        state,
        origin: "run 1 (build, 2025-01-04)".into(),
        masking: None,
        referral_threshold: 0.95,
    };
    report::render(&source).await.unwrap()
}

#[tokio::test]
async fn every_section_draws_its_chart_from_a_built_warehouse() {
    let dir = tempfile::tempdir().unwrap();
    let (warehouse, state) = warehouse(dir.path(), tables()).await;
    let report = render(&warehouse, state.clone()).await;
    assert_eq!(report.charts, CHARTS);
    assert!(report.without_data.is_empty(), "{:?}", report.without_data);
    assert_eq!(report.versions, state);
    let html = &report.html;
    assert!(html.starts_with("<!DOCTYPE html>\n") && html.ends_with("</body></html>\n"));
    let mut at = 0;
    for id in CHARTS {
        let found =
            html[at..].find(&format!("<figure class=\"chart\" id=\"{id}\"><svg")).unwrap_or_else(|| panic!("{id}"));
        at += found;
    }
    assert_eq!(html.matches("<svg").count(), CHARTS.len());
    for cell in [
        "<td>silver_claims</td><td>amount_positive</td><td>warn</td><td>25 of 1000</td><td>97.5%</td>",
        "<td>2024-12</td><td>380</td><td>9.1%</td>",
        "<td>Medicaid</td><td>2024-12</td><td>87.0% of 90</td><td>90.0%</td><td>98.0% of 60</td><td>99.0%</td><td>NOT MET</td>",
        "<td>Commercial</td><td>2024-12</td><td>81.0% of 40</td><td>—</td><td>97.0% of 30</td><td>—</td><td>no threshold</td>",
        "<td>Medicare Advantage</td><td>2024-12</td><td>— of 0</td><td>95.0%</td><td>— of 0</td><td>—</td><td>nothing due yet</td>",
        "<td>PPO</td><td>100.00</td><td>0.00</td><td>—</td><td>80.0%</td>",
        "<td>upcoding</td><td>5</td><td>1734.56</td>",
        "<td>1</td><td>P-001</td><td>0.910</td><td>high amounts; odd hours; &lt;rare&gt; &amp; &quot;new&quot; codes</td><td>m1</td>",
        "the red line is the referral threshold 0.95.",
        "<td>gold_provider_risk</td><td>0</td>",
    ] {
        assert!(html.contains(cell), "{cell}");
    }
    assert!(!html.contains("duplicates"), "duplicate counts are not rule checks");
}

#[tokio::test]
async fn a_table_missing_from_the_state_leaves_its_section_without_data() {
    let dir = tempfile::tempdir().unwrap();
    let (warehouse, mut state) = warehouse(dir.path(), tables()).await;
    state.remove("gold_provider_risk");
    state.remove("gold_fwa_referrals");
    let report = render(&warehouse, state).await;
    assert_eq!(report.charts, CHARTS, "every section stays on the page");
    assert_eq!(
        report.without_data,
        vec![(
            "chart-top-providers",
            "table gold_provider_risk does not exist as of run 1 (build, 2025-01-04)".to_string()
        )]
    );
    assert!(report.html.contains("No data: table gold_provider_risk does not exist as of run 1 (build, 2025-01-04)"));
    assert!(!report.html.contains("referred for"), "no referral table without gold_fwa_referrals");
    assert!(!report.versions.contains_key("gold_provider_risk"));
}

#[tokio::test]
async fn an_empty_table_says_what_it_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let mut tables = tables();
    for (name, batch) in &mut tables {
        if *name == "gold_loss_ratio" {
            *batch = batch.slice(0, 0);
        }
    }
    let (warehouse, state) = warehouse(dir.path(), tables).await;
    let report = render(&warehouse, state).await;
    assert_eq!(report.without_data, vec![("chart-loss-ratio", "no premiums or paid claims yet".to_string())]);
    assert_eq!(report.html.matches("<svg").count(), CHARTS.len(), "a no-data note is an SVG too");
}
