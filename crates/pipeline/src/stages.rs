//! One function per stage: runs it for a run, and returns its report, the
//! JSON document of the run summary and the table versions it wrote.

use std::path::Path;

use serde_json::json;
use storage::{RunContext, Warehouse};

use crate::{Error, Models, Stage, StageError};

/// A table version a run wrote, as the ledger records it. In JSON, the
/// array `[table, version, rows written]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableWritten {
    /// The table.
    pub table: String,
    /// The Delta version written.
    pub version: i64,
    /// The rows that version wrote.
    pub rows: i64,
}

impl TableWritten {
    /// `table` at `version`, which wrote `rows` rows.
    pub fn new(table: impl Into<String>, version: i64, rows: i64) -> Self {
        Self { table: table.into(), version, rows }
    }
}

impl serde::Serialize for TableWritten {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.table, self.version, self.rows).serialize(s)
    }
}

/// One day's silver round of a build that caught up several landing days.
#[derive(Clone, Debug)]
pub struct SilverRound {
    /// The landing day, or `None` for the run's own round.
    pub day: Option<chrono::NaiveDate>,
}

/// What a stage did, for people: the command line renders it.
#[derive(Debug)]
#[non_exhaustive]
pub enum StageReport {
    /// The ingest stage.
    Ingest(ingest::IngestReport),
    /// The silver stage, with its rounds (one per landing day when a build
    /// caught up several days).
    Silver {
        /// Every round's report, absorbed into one.
        report: silver::SilverReport,
        /// The rounds, oldest first.
        rounds: Vec<SilverRound>,
    },
    /// The dims stage: one report per dimension.
    Dims(Vec<dims::DimReport>),
    /// The facts stage.
    Facts(facts::FactsReport),
    /// The score stage.
    Score(scoring::ScoreReport),
    /// The aggregates stage.
    Aggregates(Vec<aggregates::AggregateReport>),
}

/// A stage that ran.
#[derive(Debug)]
pub struct StageDone {
    /// Which stage.
    pub stage: Stage,
    /// Its JSON document in the run summary.
    pub doc: serde_json::Value,
    /// The table versions it wrote.
    pub tables: Vec<TableWritten>,
    /// Its report.
    pub report: StageReport,
}

fn failed(stage: Stage) -> impl FnOnce(StageError) -> Error {
    move |source| Error::Stage { stage, source: Box::new(source) }
}

/// The ingest stage: bronze from the landing folder, up to the run's date.
pub(crate) async fn ingest(
    warehouse: &Warehouse,
    run: &RunContext,
    catalog: &ingest::SourceCatalog,
    landing: &Path,
) -> Result<StageDone, Error> {
    let started = std::time::Instant::now();
    let options = ingest::IngestOptions { landing, up_to: run.clock.logical_date() };
    let report =
        ingest::ingest(warehouse, run, catalog, &options).await.map_err(|e| failed(Stage::Ingest)(e.into()))?;
    let (read, written, rescued) = report.totals();
    let doc = json!({
        "stage": "ingest",
        "seconds": started.elapsed().as_secs_f64(),
        "days": report.days,
        "rows_read": read,
        "rows_written": written,
        "rows_rescued": rescued,
        "sources": report.sources,
    });
    let tables = report.table_versions().into_iter().map(|(t, v, r)| TableWritten::new(t, v, r)).collect();
    Ok(StageDone { stage: Stage::Ingest, doc, tables, report: StageReport::Ingest(report) })
}

/// A dims stage's tables for the ledger: (table, version, rows written).
pub(crate) fn dims_tables(reports: &[dims::DimReport]) -> Vec<TableWritten> {
    reports
        .iter()
        .filter_map(|r| {
            let m = &r.metrics;
            r.version.map(|v| TableWritten::new(&r.table, v as i64, (m.inserted + m.closed + m.deleted) as i64))
        })
        .collect()
}

/// The dims stage alone: every dimension whose silver table has a new
/// version.
pub(crate) async fn dims(
    warehouse: &Warehouse,
    run: &RunContext,
    catalog: &dims::DimCatalog,
) -> Result<StageDone, Error> {
    let started = std::time::Instant::now();
    let reports = dims::build_dims(warehouse, run, catalog).await.map_err(|e| failed(Stage::Dims)(e.into()))?;
    let doc = json!({"stage": "dims", "seconds": started.elapsed().as_secs_f64(), "dims": reports});
    Ok(StageDone { stage: Stage::Dims, doc, tables: dims_tables(&reports), report: StageReport::Dims(reports) })
}

/// The facts stage: the facts whose silver rows or dimension intervals
/// changed, or all of them on a full refresh.
pub(crate) async fn facts(
    warehouse: &Warehouse,
    run: &RunContext,
    catalog: &dims::DimCatalog,
    options: facts::FactOptions,
) -> Result<StageDone, Error> {
    let started = std::time::Instant::now();
    let report =
        facts::build_facts(warehouse, run, catalog, options).await.map_err(|e| failed(Stage::Facts)(e.into()))?;
    let tables = report
        .tables
        .iter()
        .filter_map(|t| t.version.map(|v| TableWritten::new(&t.table, v, t.rebuilt as i64)))
        .collect();
    let doc = json!({"stage": "facts", "seconds": started.elapsed().as_secs_f64(), "facts": report});
    Ok(StageDone { stage: Stage::Facts, doc, tables, report: StageReport::Facts(report) })
}

/// The score stage: the model current at the run's date (trained first if
/// none is, or it is stale, when `training` allows) applied to every claim
/// and provider.
pub(crate) async fn score(
    warehouse: &Warehouse,
    run: &RunContext,
    config: &scoring::ScoringConfig,
    training: scoring::Training,
) -> Result<StageDone, Error> {
    let started = std::time::Instant::now();
    let report = scoring::score(warehouse, run, config, training).await.map_err(|e| failed(Stage::Score)(e.into()))?;
    let mut tables = Vec::new();
    if let Some(v) = report.trained.as_ref().and_then(|t| t.table_version) {
        tables.push(TableWritten::new(scoring::MODELS, v, 1));
    }
    if let Some(v) = report.claims_version {
        tables.push(TableWritten::new(scoring::FRAUD_SCORES, v, report.claims_scored as i64));
    }
    if let Some(v) = report.providers_version {
        tables.push(TableWritten::new(scoring::PROVIDER_RISK, v, report.providers_scored as i64));
    }
    let doc = json!({"stage": "score", "seconds": started.elapsed().as_secs_f64(), "score": report});
    Ok(StageDone { stage: Stage::Score, doc, tables, report: StageReport::Score(report) })
}

/// The aggregates stage: every SQL model whose query or input tables
/// changed, materialised as its gold_ table.
pub(crate) async fn aggregates(warehouse: &Warehouse, run: &RunContext, models: &Models) -> Result<StageDone, Error> {
    let started = std::time::Instant::now();
    let params = aggregates::Params::default().with("referral_threshold", models.scoring.scores.referral_threshold);
    let reports = aggregates::build_aggregates(warehouse, run, &models.aggregates, &params)
        .await
        .map_err(|e| failed(Stage::Aggregates)(e.into()))?;
    let tables =
        reports.iter().filter_map(|r| r.version.map(|v| TableWritten::new(&r.table, v, r.rows as i64))).collect();
    let doc = json!({"stage": "aggregates", "seconds": started.elapsed().as_secs_f64(), "aggregates": reports});
    Ok(StageDone { stage: Stage::Aggregates, doc, tables, report: StageReport::Aggregates(reports) })
}
