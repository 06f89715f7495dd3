//! `gold report`: one self-contained HTML file with SVG charts of the gold
//! layer, for a compliance officer.
//!
//! [`render`] reads the aggregates and the fraud tables at the versions of
//! one run's state, through [`query::run`] (so a role that may not see PII
//! reads masked views, as in `gold sql`), and draws six charts with
//! plotters: the data-quality scorecard, the claim volume and denial
//! trend, prompt-pay compliance against its thresholds, the loss ratio by
//! plan, the fraud-score distribution and the top 20 risky providers with
//! their reasons. The page has no script and no network reference: every
//! chart is inline SVG. It names the run and every table version it shows.
//!
//! ```no_run
//! # async fn run(warehouse: &storage::Warehouse, state: std::collections::BTreeMap<String, i64>) -> report::Result<()> {
//! let source = report::Source { warehouse, state, origin: "run 3 (build, 2025-01-04)".into(), masking: None, referral_threshold: 0.97 };
//! let report = report::render(&source).await?;
//! std::fs::write("report.html", &report.html).unwrap();
//! # Ok(())
//! # }
//! ```

mod chart;

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{Map, Value};
use storage::Warehouse;

use chart::{Bars, HBars};

/// Errors of the report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A query of the report failed (not for a missing table: that
    /// section says it has no data).
    #[error("report section {section}: {source}")]
    Query {
        section: &'static str,
        #[source]
        source: Box<query::Error>,
    },
    /// Drawing a chart failed.
    #[error("report chart {chart}: {reason}")]
    Chart { chart: &'static str, reason: String },
}

impl Error {
    /// Whether the user can fix this.
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::Query { source, .. } => source.is_user_error(),
            Self::Chart { .. } => false,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the report shows: the warehouse at one run's table versions.
pub struct Source<'a> {
    pub warehouse: &'a Warehouse,
    /// Table versions (a run's state).
    pub state: BTreeMap<String, i64>,
    /// Which run the state is, for the page ("run 3 (build, 2025-01-04)").
    pub origin: String,
    /// The role's masking, when it may not see PII.
    pub masking: Option<&'a query::Masking>,
    /// The fraud score at or above which a claim is referred.
    pub referral_threshold: f64,
}

/// A rendered report.
#[derive(Debug)]
pub struct Report {
    pub html: String,
    /// The charts' element ids, in page order.
    pub charts: Vec<&'static str>,
    /// The tables read and their versions.
    pub versions: BTreeMap<String, i64>,
    /// Sections drawn without data, and why (a table not built yet).
    pub without_data: Vec<(&'static str, String)>,
}

type Rows = Vec<Map<String, Value>>;

struct Page<'a> {
    source: &'a Source<'a>,
    body: String,
    charts: Vec<&'static str>,
    versions: BTreeMap<String, i64>,
    without_data: Vec<(&'static str, String)>,
}

impl Page<'_> {
    /// The rows of `sql`, or why there are none (a table it reads does not
    /// exist in the state).
    async fn rows(&mut self, section: &'static str, sql: &str) -> Result<std::result::Result<Rows, String>> {
        let versions = query::Versions::State { state: self.source.state.clone(), origin: self.source.origin.clone() };
        match query::run(self.source.warehouse, sql, &versions, self.source.masking).await {
            Ok(result) => {
                self.versions.extend(result.versions);
                let json =
                    query::to_json(&result.batches).map_err(|e| Error::Query { section, source: Box::new(e) })?;
                Ok(Ok(match json {
                    Value::Array(rows) => rows
                        .into_iter()
                        .filter_map(|r| match r {
                            Value::Object(m) => Some(m),
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                }))
            }
            Err(query::Error::NoTable { table, reason }) => Ok(Err(format!("table {table} {reason}"))),
            Err(e) => Err(Error::Query { section, source: Box::new(e) }),
        }
    }

    /// One section: a heading, a note, the chart (or a note that there is
    /// no data) and an optional table.
    fn section(
        &mut self,
        id: &'static str,
        title: &str,
        note: &str,
        svg: std::result::Result<String, String>,
        table: &str,
    ) {
        self.charts.push(id);
        let _ = write!(self.body, "<section><h2>{}</h2><p class=\"note\">{}</p>", esc(title), esc(note));
        let _ = write!(self.body, "<figure class=\"chart\" id=\"{id}\">");
        match svg {
            Ok(svg) => self.body.push_str(&svg),
            Err(reason) => {
                let _ = write!(self.body, "{}", chart::no_data(&reason));
                self.without_data.push((id, reason));
            }
        }
        let _ = write!(self.body, "<figcaption>{}</figcaption></figure>{table}</section>", esc(title));
    }
}

fn num(row: &Map<String, Value>, key: &str) -> Option<f64> {
    match row.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn text(row: &Map<String, Value>, key: &str) -> String {
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

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_string(), |v| format!("{:.1}%", v * 100.0))
}

/// `text` escaped for HTML.
pub(crate) fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// An HTML table of `rows` (already formatted cells).
fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut t = String::from("<table><thead><tr>");
    for h in head {
        let _ = write!(t, "<th>{}</th>", esc(h));
    }
    t.push_str("</tr></thead><tbody>");
    for r in rows {
        t.push_str("<tr>");
        for c in r {
            let _ = write!(t, "<td>{}</td>", esc(c));
        }
        t.push_str("</tr>");
    }
    t.push_str("</tbody></table>");
    t
}

/// The chart `draw` makes of `rows`, or why there is none: the reason the
/// rows could not be read, or `empty` when there are none.
fn drawn(
    chart: &'static str,
    rows: &std::result::Result<Rows, String>,
    empty: &str,
    draw: impl FnOnce(&Rows) -> std::result::Result<String, String>,
) -> Result<std::result::Result<String, String>> {
    match rows {
        Ok(rows) if !rows.is_empty() => draw(rows).map(Ok).map_err(|reason| Error::Chart { chart, reason }),
        Ok(_) => Ok(Err(empty.to_string())),
        Err(e) => Ok(Err(e.clone())),
    }
}

/// Renders the report of `source`.
pub async fn render(source: &Source<'_>) -> Result<Report> {
    let mut page =
        Page { source, body: String::new(), charts: Vec::new(), versions: BTreeMap::new(), without_data: Vec::new() };

    // 1. The data-quality scorecard.
    let id = "chart-dq-scorecard";
    let rows = page
        .rows(
            id,
            "SELECT table_name, CAST(sum(rows_evaluated) AS DOUBLE) AS evaluated, CAST(sum(rows_failed) AS DOUBLE) AS failed \
             FROM gold_dq_scorecard WHERE rows_evaluated > 0 AND action <> 'count' GROUP BY table_name ORDER BY table_name",
        )
        .await?;
    let worst = page
        .rows(
            id,
            "SELECT table_name, rule, action, CAST(sum(rows_evaluated) AS DOUBLE) AS evaluated, \
             CAST(sum(rows_failed) AS DOUBLE) AS failed FROM gold_dq_scorecard WHERE action <> 'count' \
             GROUP BY table_name, rule, action \
             HAVING sum(rows_failed) > 0 ORDER BY CAST(sum(rows_failed) AS DOUBLE) / CAST(sum(rows_evaluated) AS DOUBLE) DESC, \
             table_name, rule LIMIT 12",
        )
        .await?;
    let svg = drawn(id, &rows, "no data-quality results yet", |rows| {
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
    })?;
    let worst_rows: Vec<Vec<String>> = worst
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let (e, f) = (num(r, "evaluated").unwrap_or(0.0), num(r, "failed").unwrap_or(0.0));
            vec![
                text(r, "table_name"),
                text(r, "rule"),
                text(r, "action"),
                format!("{f:.0} of {e:.0}"),
                pct(Some(1.0 - f / e.max(1.0))),
            ]
        })
        .collect();
    page.section(
        id,
        "Data-quality scorecard",
        "Share of rule checks passed per silver table, over every run (gold_dq_scorecard; duplicate counts are not rule checks and are left out); the rules that failed most are listed below.",
        svg,
        &table(&["table", "rule", "action", "failed", "pass rate"], &worst_rows),
    );

    // 2. Claim volume and denial trend.
    let id = "chart-claims-trend";
    let rows = page
        .rows(
            id,
            "SELECT claim_month, CAST(sum(claims) AS DOUBLE) AS claims, \
             CAST(sum(denied) AS DOUBLE) / CAST(nullif(sum(decided), 0) AS DOUBLE) AS denial_rate \
             FROM gold_claim_outcomes WHERE claim_month > 0 GROUP BY claim_month ORDER BY claim_month",
        )
        .await?;
    let svg = drawn(id, &rows, "no claims yet", |rows| {
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
    })?;
    let trend: Vec<Vec<String>> = rows
        .unwrap_or_default()
        .iter()
        .map(|r| {
            vec![
                month(num(r, "claim_month")),
                format!("{:.0}", num(r, "claims").unwrap_or(0.0)),
                pct(num(r, "denial_rate")),
            ]
        })
        .collect();
    page.section(
        id,
        "Claim volume and denial trend",
        "Claims received per month (bars) and the share of decided claims denied (line, below), from gold_claim_outcomes.",
        svg,
        &table(&["month", "claims", "denial rate"], &trend),
    );

    // 3. Prompt-pay compliance.
    let id = "chart-prompt-pay";
    let rows = page
        .rows(
            id,
            "SELECT line_of_business, claim_month, share_within_30, threshold_30, share_within_90, threshold_90, met, \
             due_30, due_90 FROM gold_prompt_pay ORDER BY line_of_business, claim_month",
        )
        .await?;
    let svg = drawn(id, &rows, "no clean claims yet", |rows| {
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
    })?;
    let pp: Vec<Vec<String>> = rows
        .unwrap_or_default()
        .iter()
        .map(|r| {
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
        })
        .collect();
    page.section(
        id,
        "Prompt-pay compliance",
        "Share of clean claims paid within 30 days of receipt (bars; MA is Medicare Advantage, Comm. commercial) against the regulatory threshold (red ticks: Medicaid 90%, Medicare Advantage 95%), from gold_prompt_pay. A claim still inside its window is not yet due.",
        svg,
        &table(&["line of business", "month", "within 30 days", "threshold", "within 90 days", "threshold", "status"], &pp),
    );

    // 4. Loss ratio by plan.
    let id = "chart-loss-ratio";
    let rows = page
        .rows(
            id,
            "SELECT plan_type, CAST(sum(paid_amount) AS DOUBLE) AS paid, CAST(sum(premium_earned) AS DOUBLE) AS premium, \
             max(minimum_ratio) AS minimum FROM gold_loss_ratio GROUP BY plan_type ORDER BY plan_type",
        )
        .await?;
    let ratio = |r: &Map<String, Value>| match (num(r, "paid"), num(r, "premium")) {
        (Some(p), Some(q)) if q > 0.0 => Some(p / q),
        _ => None,
    };
    let svg = drawn(id, &rows, "no premiums or paid claims yet", |rows| {
        Bars {
            labels: rows.iter().map(|r| text(r, "plan_type")).collect(),
            values: rows.iter().map(|r| ratio(r).unwrap_or(0.0)).collect(),
            marks: rows.iter().map(|r| num(r, "minimum")).collect(),
            line: None,
            y_desc: "paid claims / earned premium",
            y_max: None,
            label_every: 1,
            threshold_at: None,
        }
        .draw()
    })?;
    let lr: Vec<Vec<String>> = rows
        .unwrap_or_default()
        .iter()
        .map(|r| {
            vec![
                text(r, "plan_type"),
                format!("{:.2}", num(r, "paid").unwrap_or(0.0)),
                format!("{:.2}", num(r, "premium").unwrap_or(0.0)),
                pct(ratio(r)),
                pct(num(r, "minimum")),
            ]
        })
        .collect();
    page.section(
        id,
        "Loss ratio by plan",
        "Paid claims over earned premium per plan, over every month (bars), against the MLR minimum (red ticks: 85% Medicaid and Medicare Advantage, 80% commercial), from gold_loss_ratio.",
        svg,
        &table(&["plan", "paid", "premium earned", "loss ratio", "minimum"], &lr),
    );

    // 5. The fraud-score distribution.
    let id = "chart-fraud-scores";
    let rows = page
        .rows(
            id,
            "SELECT least(CAST(floor(score * 20) AS INT), 19) AS bin, CAST(count(*) AS DOUBLE) AS claims \
             FROM gold_fraud_scores GROUP BY least(CAST(floor(score * 20) AS INT), 19) ORDER BY bin",
        )
        .await?;
    let referrals = page
        .rows(
            id,
            "SELECT pattern, CAST(sum(referred_claims) AS DOUBLE) AS claims, CAST(sum(referred_amount) AS DOUBLE) AS amount \
             FROM gold_fwa_referrals GROUP BY pattern ORDER BY claims DESC, pattern LIMIT 10",
        )
        .await?;
    let svg = drawn(id, &rows, "no fraud scores yet", |rows| {
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
    })?;
    let refs: Vec<Vec<String>> = referrals
        .unwrap_or_default()
        .iter()
        .map(|r| {
            vec![
                text(r, "pattern"),
                format!("{:.0}", num(r, "claims").unwrap_or(0.0)),
                format!("{:.2}", num(r, "amount").unwrap_or(0.0)),
            ]
        })
        .collect();
    page.section(
        id,
        "Fraud-score distribution",
        &format!(
            "Claims per score band of 0.05 (log scale), from gold_fraud_scores; the red line is the referral threshold {}. Referrals by top reason, from gold_fwa_referrals, below.",
            source.referral_threshold
        ),
        svg,
        &table(&["referred for", "claims", "billed amount"], &refs),
    );

    // 6. The top 20 risky providers.
    let id = "chart-top-providers";
    let rows = page
        .rows(
            id,
            "SELECT provider_id, score, reason_1, reason_2, reason_3, model_version FROM gold_provider_risk \
             ORDER BY score DESC, provider_id LIMIT 20",
        )
        .await?;
    let svg = drawn(id, &rows, "no provider risk scores yet", |rows| {
        HBars {
            labels: rows.iter().map(|r| text(r, "provider_id")).collect(),
            values: rows.iter().map(|r| num(r, "score").unwrap_or(0.0)).collect(),
            x_desc: "provider risk score",
            x_max: Some(1.0),
        }
        .draw()
    })?;
    let top: Vec<Vec<String>> = rows
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, r)| {
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
        })
        .collect();
    page.section(
        id,
        "Top 20 risky providers",
        "Providers ranked by risk score, from gold_provider_risk, with the reasons behind each score and the model that scored it.",
        svg,
        &table(&["rank", "provider", "score", "reasons", "model"], &top),
    );

    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>gold report: {origin}</title><style>{CSS}</style></head><body>\
         <h1>gold report</h1><p class=\"origin\">The warehouse as {origin} left it.</p>",
        origin = esc(&source.origin)
    );
    html.push_str(&page.body);
    let versions: Vec<Vec<String>> = page.versions.iter().map(|(t, v)| vec![t.clone(), v.to_string()]).collect();
    let _ = writeln!(
        html,
        "<section><h2>Tables and versions shown</h2>{}</section></body></html>",
        table(&["table", "Delta version"], &versions)
    );
    Ok(Report { html, charts: page.charts, versions: page.versions, without_data: page.without_data })
}

const CSS: &str = "body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}\
h1{margin-bottom:0}.origin{color:#555}section{margin:2em 0}.note{color:#555;font-size:0.9em}\
figure{margin:0}figcaption{display:none}svg{max-width:100%;height:auto}\
table{border-collapse:collapse;font-size:0.85em;margin-top:0.8em}\
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}";
