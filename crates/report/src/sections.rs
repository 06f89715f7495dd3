//! The sections of the page, in page order: for each, its chart id, title
//! and note, the query behind its chart, how the chart is drawn, and the
//! table printed under it (of the chart's rows, or of a query of its own).
//!
//! Every query reads the gold tables through `query::run`, so a role that
//! may not see PII reads masked views. Sums are cast to `DOUBLE` in SQL
//! and values read back from JSON as numbers or numeric text ([`num`]), so
//! integers, decimals and floats all draw alike.

use serde_json::{Map, Value};

use crate::Source;
use crate::chart::{Bars, DrawError, HBars};

/// One row of a query, column → value.
pub(crate) type Row = Map<String, Value>;

/// One section of the report.
pub(crate) struct Section {
    /// The chart's element id.
    pub(crate) id: &'static str,
    /// The heading (and the chart's caption).
    pub(crate) title: &'static str,
    /// The note under the heading; `{threshold}` stands for the referral
    /// threshold.
    pub(crate) note: &'static str,
    /// The query of the chart's rows.
    pub(crate) sql: &'static str,
    /// Why there is no chart when the query gives no rows.
    pub(crate) empty: &'static str,
    /// The chart of the rows (never called without rows).
    pub(crate) draw: fn(&[Row], &Source<'_>) -> Result<String, DrawError>,
    /// The table under the chart.
    pub(crate) table: Table,
}

/// The table under a section's chart (nothing when it has no rows).
pub(crate) struct Table {
    /// Its own query, or `None` for the chart's rows.
    pub(crate) sql: Option<&'static str>,
    /// The column headings.
    pub(crate) head: &'static [&'static str],
    /// The cells of the `i`-th row.
    pub(crate) row: fn(usize, &Row) -> Vec<String>,
}

/// The page's sections, in order.
pub(crate) const SECTIONS: [Section; 6] = [
    Section {
        id: "chart-dq-scorecard",
        title: "Data-quality scorecard",
        note: "Share of rule checks passed per silver table, over every run (gold_dq_scorecard; duplicate counts are not rule checks and are left out); the rules that failed most are listed below.",
        sql: "SELECT table_name, CAST(sum(rows_evaluated) AS DOUBLE) AS evaluated, CAST(sum(rows_failed) AS DOUBLE) AS failed \
              FROM gold_dq_scorecard WHERE rows_evaluated > 0 AND action <> 'count' GROUP BY table_name ORDER BY table_name",
        empty: "no data-quality results yet",
        draw: dq_chart,
        table: Table {
            sql: Some(
                "SELECT table_name, rule, action, CAST(sum(rows_evaluated) AS DOUBLE) AS evaluated, \
                 CAST(sum(rows_failed) AS DOUBLE) AS failed FROM gold_dq_scorecard WHERE action <> 'count' \
                 GROUP BY table_name, rule, action \
                 HAVING sum(rows_failed) > 0 ORDER BY CAST(sum(rows_failed) AS DOUBLE) / CAST(sum(rows_evaluated) AS DOUBLE) DESC, \
                 table_name, rule LIMIT 12",
            ),
            head: &["table", "rule", "action", "failed", "pass rate"],
            row: dq_row,
        },
    },
    Section {
        id: "chart-claims-trend",
        title: "Claim volume and denial trend",
        note: "Claims received per month (bars) and the share of decided claims denied (line, below), from gold_claim_outcomes.",
        sql: "SELECT claim_month, CAST(sum(claims) AS DOUBLE) AS claims, \
              CAST(sum(denied) AS DOUBLE) / CAST(nullif(sum(decided), 0) AS DOUBLE) AS denial_rate \
              FROM gold_claim_outcomes WHERE claim_month > 0 GROUP BY claim_month ORDER BY claim_month",
        empty: "no claims yet",
        draw: claims_chart,
        table: Table { sql: None, head: &["month", "claims", "denial rate"], row: claims_row },
    },
    Section {
        id: "chart-prompt-pay",
        title: "Prompt-pay compliance",
        note: "Share of clean claims paid within 30 days of receipt (bars; MA is Medicare Advantage, Comm. commercial) against the regulatory threshold (red ticks: Medicaid 90%, Medicare Advantage 95%), from gold_prompt_pay. A claim still inside its window is not yet due.",
        sql: "SELECT line_of_business, claim_month, share_within_30, threshold_30, share_within_90, threshold_90, met, \
              due_30, due_90 FROM gold_prompt_pay ORDER BY line_of_business, claim_month",
        empty: "no clean claims yet",
        draw: prompt_pay_chart,
        table: Table {
            sql: None,
            head: &[
                "line of business",
                "month",
                "within 30 days",
                "threshold",
                "within 90 days",
                "threshold",
                "status",
            ],
            row: prompt_pay_row,
        },
    },
    Section {
        id: "chart-loss-ratio",
        title: "Loss ratio by plan",
        note: "Paid claims over earned premium per plan, over every month (bars), against the MLR minimum (red ticks: 85% Medicaid and Medicare Advantage, 80% commercial), from gold_loss_ratio.",
        sql: "SELECT plan_type, CAST(sum(paid_amount) AS DOUBLE) AS paid, CAST(sum(premium_earned) AS DOUBLE) AS premium, \
              max(minimum_ratio) AS minimum FROM gold_loss_ratio GROUP BY plan_type ORDER BY plan_type",
        empty: "no premiums or paid claims yet",
        draw: loss_ratio_chart,
        table: Table {
            sql: None,
            head: &["plan", "paid", "premium earned", "loss ratio", "minimum"],
            row: loss_ratio_row,
        },
    },
    Section {
        id: "chart-fraud-scores",
        title: "Fraud-score distribution",
        note: "Claims per score band of 0.05 (log scale), from gold_fraud_scores; the red line is the referral threshold {threshold}. Referrals by top reason, from gold_fwa_referrals, below.",
        sql: "SELECT least(CAST(floor(score * 20) AS INT), 19) AS bin, CAST(count(*) AS DOUBLE) AS claims \
              FROM gold_fraud_scores GROUP BY least(CAST(floor(score * 20) AS INT), 19) ORDER BY bin",
        empty: "no fraud scores yet",
        draw: fraud_chart,
        table: Table {
            sql: Some(
                "SELECT pattern, CAST(sum(referred_claims) AS DOUBLE) AS claims, CAST(sum(referred_amount) AS DOUBLE) AS amount \
                 FROM gold_fwa_referrals GROUP BY pattern ORDER BY claims DESC, pattern LIMIT 10",
            ),
            head: &["referred for", "claims", "billed amount"],
            row: referral_row,
        },
    },
    Section {
        id: "chart-top-providers",
        title: "Top 20 risky providers",
        note: "Providers ranked by risk score, from gold_provider_risk, with the reasons behind each score and the model that scored it.",
        sql: "SELECT provider_id, score, reason_1, reason_2, reason_3, model_version FROM gold_provider_risk \
              ORDER BY score DESC, provider_id LIMIT 20",
        empty: "no provider risk scores yet",
        draw: providers_chart,
        table: Table { sql: None, head: &["rank", "provider", "score", "reasons", "model"], row: provider_row },
    },
];

/// The share of rule checks passed per silver table.
fn dq_chart(rows: &[Row], _: &Source<'_>) -> Result<String, DrawError> {
    HBars {
        labels: rows.iter().map(|r| text(r, "table_name")).collect(),
        values: rows
            .iter()
            .map(|r| 1.0 - num(r, "failed").unwrap_or(0.0) / num(r, "evaluated").unwrap_or(1.0).max(1.0))
            .collect(),
        x_desc: "rule checks passed (share)",
        x_max: Some(1.0),
    }
    .draw()
}

/// A rule that failed: table, rule, action, failures and pass rate.
fn dq_row(_: usize, r: &Row) -> Vec<String> {
    let (e, f) = (num(r, "evaluated").unwrap_or(0.0), num(r, "failed").unwrap_or(0.0));
    vec![
        text(r, "table_name"),
        text(r, "rule"),
        text(r, "action"),
        format!("{f:.0} of {e:.0}"),
        pct(Some(1.0 - f / e.max(1.0))),
    ]
}

/// Claims per month (bars) and the denial rate (line, below).
fn claims_chart(rows: &[Row], _: &Source<'_>) -> Result<String, DrawError> {
    Bars {
        labels: rows.iter().map(|r| month(num(r, "claim_month"))).collect(),
        values: rows.iter().map(|r| num(r, "claims").unwrap_or(0.0)).collect(),
        marks: Vec::new(),
        line: Some(("denial rate", rows.iter().map(|r| num(r, "denial_rate")).collect())),
        y_desc: "claims received",
        y_max: None,
        label_every: 1,
        threshold_at: None,
    }
    .draw()
}

/// A month: claims and denial rate.
fn claims_row(_: usize, r: &Row) -> Vec<String> {
    vec![month(num(r, "claim_month")), format!("{:.0}", num(r, "claims").unwrap_or(0.0)), pct(num(r, "denial_rate"))]
}

/// The share paid within 30 days per line of business and month, against
/// its threshold.
fn prompt_pay_chart(rows: &[Row], _: &Source<'_>) -> Result<String, DrawError> {
    Bars {
        labels: rows
            .iter()
            .map(|r| format!("{} {}", lob_short(&text(r, "line_of_business")), month(num(r, "claim_month"))))
            .collect(),
        values: rows.iter().map(|r| num(r, "share_within_30").unwrap_or(0.0)).collect(),
        marks: rows.iter().map(|r| num(r, "threshold_30")).collect(),
        line: None,
        y_desc: "clean claims paid within 30 days",
        y_max: Some(1.0),
        label_every: 1,
        threshold_at: None,
    }
    .draw()
}

/// A line of business and month: the shares paid within 30 and 90 days,
/// their thresholds and whether they were met.
fn prompt_pay_row(_: usize, r: &Row) -> Vec<String> {
    let met = match (r.get("met"), num(r, "threshold_30").or(num(r, "threshold_90"))) {
        (Some(Value::Bool(true)), _) => "met",
        (Some(Value::Bool(false)), _) => "NOT MET",
        (_, Some(_)) => "nothing due yet",
        (_, None) => "no threshold",
    };
    vec![
        text(r, "line_of_business"),
        month(num(r, "claim_month")),
        format!("{} of {:.0}", pct(num(r, "share_within_30")), num(r, "due_30").unwrap_or(0.0)),
        pct(num(r, "threshold_30")),
        format!("{} of {:.0}", pct(num(r, "share_within_90")), num(r, "due_90").unwrap_or(0.0)),
        pct(num(r, "threshold_90")),
        met.to_string(),
    ]
}

/// Paid over earned premium, when there is premium.
fn loss_ratio(r: &Row) -> Option<f64> {
    match (num(r, "paid"), num(r, "premium")) {
        (Some(p), Some(q)) if q > 0.0 => Some(p / q),
        _ => None,
    }
}

/// The loss ratio per plan, against its minimum.
fn loss_ratio_chart(rows: &[Row], _: &Source<'_>) -> Result<String, DrawError> {
    Bars {
        labels: rows.iter().map(|r| text(r, "plan_type")).collect(),
        values: rows.iter().map(|r| loss_ratio(r).unwrap_or(0.0)).collect(),
        marks: rows.iter().map(|r| num(r, "minimum")).collect(),
        line: None,
        y_desc: "paid claims / earned premium",
        y_max: None,
        label_every: 1,
        threshold_at: None,
    }
    .draw()
}

/// A plan: paid, premium earned, loss ratio and minimum.
fn loss_ratio_row(_: usize, r: &Row) -> Vec<String> {
    vec![
        text(r, "plan_type"),
        format!("{:.2}", num(r, "paid").unwrap_or(0.0)),
        format!("{:.2}", num(r, "premium").unwrap_or(0.0)),
        pct(loss_ratio(r)),
        pct(num(r, "minimum")),
    ]
}

/// Claims per score band of 0.05 (log scale), with the referral threshold.
fn fraud_chart(rows: &[Row], source: &Source<'_>) -> Result<String, DrawError> {
    let mut counts = [0.0; 20];
    for r in rows {
        if let Some(b) = num(r, "bin") {
            counts[(b as usize).min(19)] = num(r, "claims").unwrap_or(0.0);
        }
    }
    Bars {
        labels: (0..20).map(|i| format!("{:.2}–{:.2}", i as f64 / 20.0, (i + 1) as f64 / 20.0)).collect(),
        values: counts.iter().map(|c| (c + 1.0).log10()).collect(),
        marks: Vec::new(),
        line: None,
        y_desc: "claims (log10 of count + 1)",
        y_max: None,
        label_every: 4,
        // Band i spans x = i-0.5..i+0.5 and scores i/20..(i+1)/20.
        threshold_at: Some(source.referral_threshold * 20.0 - 0.5),
    }
    .draw()
}

/// A referral pattern: claims referred and their billed amount.
fn referral_row(_: usize, r: &Row) -> Vec<String> {
    vec![
        text(r, "pattern"),
        format!("{:.0}", num(r, "claims").unwrap_or(0.0)),
        format!("{:.2}", num(r, "amount").unwrap_or(0.0)),
    ]
}

/// The riskiest providers' scores, the riskiest at the top.
fn providers_chart(rows: &[Row], _: &Source<'_>) -> Result<String, DrawError> {
    HBars {
        labels: rows.iter().map(|r| text(r, "provider_id")).collect(),
        values: rows.iter().map(|r| num(r, "score").unwrap_or(0.0)).collect(),
        x_desc: "provider risk score",
        x_max: Some(1.0),
    }
    .draw()
}

/// The `i`-th riskiest provider: rank, id, score, reasons and model.
fn provider_row(i: usize, r: &Row) -> Vec<String> {
    vec![
        (i + 1).to_string(),
        text(r, "provider_id"),
        format!("{:.3}", num(r, "score").unwrap_or(0.0)),
        [text(r, "reason_1"), text(r, "reason_2"), text(r, "reason_3")]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
        text(r, "model_version"),
    ]
}

/// Column `key` as a number: a JSON number, or text that parses as one.
fn num(row: &Row, key: &str) -> Option<f64> {
    match row.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Column `key` as text, `""` for NULL.
fn text(row: &Row, key: &str) -> String {
    match row.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

/// A line of business, short enough for an axis label.
fn lob_short(lob: &str) -> &str {
    match lob {
        "Medicare Advantage" => "MA",
        "Commercial" => "Comm.",
        other => other,
    }
}

/// `yyyymm` as `yyyy-mm`.
fn month(v: Option<f64>) -> String {
    v.map(|m| m as i64).map_or_else(String::new, |m| format!("{}-{:02}", m / 100, m % 100))
}

/// A share as a percentage with one decimal, `—` for none.
fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_string(), |v| format!("{:.1}%", v * 100.0))
}
