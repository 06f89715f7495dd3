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
//! The page is a table of sections (`sections.rs`): each names its chart,
//! the query behind it, how it is drawn and the table printed under it,
//! and [`render`] walks that table in page order. A section whose table is
//! not in the run's state, or holds no rows, says so instead of a chart
//! ([`Report::without_data`]).
//!
//! ```no_run
//! # async fn run(warehouse: &storage::Warehouse, state: std::collections::BTreeMap<String, i64>) -> report::Result<()> {
//! let source = report::Source { warehouse, state, origin: "run 3 (build, 2025-01-04)".into(), masking: None, referral_threshold: 0.97 };
//! let report = report::render(&source).await?;
//! std::fs::write("report.html", &report.html).unwrap();
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod chart;
mod page;
mod sections;

use std::collections::BTreeMap;

use storage::Warehouse;

/// Errors of the report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A query of the report failed (not for a missing table: that
    /// section says it has no data).
    #[error("report section {section}: {source}")]
    Query {
        /// The section's chart id.
        section: &'static str,
        /// Why the query failed.
        #[source]
        source: Box<query::Error>,
    },
    /// Drawing a chart failed.
    #[error("report chart {chart}: {source}")]
    Chart {
        /// The chart's id.
        chart: &'static str,
        /// What plotters reported.
        #[source]
        source: Box<chart::DrawError>,
    },
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
    /// The warehouse to read.
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
    /// The page: one self-contained HTML document.
    pub html: String,
    /// The charts' element ids, in page order.
    pub charts: Vec<&'static str>,
    /// The tables read and their versions.
    pub versions: BTreeMap<String, i64>,
    /// Sections drawn without data, and why (a table not built yet).
    pub without_data: Vec<(&'static str, String)>,
}

/// Renders the report of `source`: every section of the page in order,
/// then the tables and versions it showed.
pub async fn render(source: &Source<'_>) -> Result<Report> {
    let mut page = page::Page::new(source);
    for section in &sections::SECTIONS {
        page.add(section).await?;
    }
    Ok(page.finish())
}
