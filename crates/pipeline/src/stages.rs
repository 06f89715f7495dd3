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
    /// The score stage of a nightly build that had too little history to
    /// train a model on: why nothing was scored.
    ScoreSkipped(String),
    /// The aggregates stage.
    Aggregates(Vec<aggregates::AggregateReport>),
    /// The compact stage: one document per table it wrote.
    Compact(Vec<serde_json::Value>),
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
    let report = match scoring::score(warehouse, run, config, training).await {
        Ok(report) => report,
        // A new insurer's first nights: too few claims or providers to fit
        // a model on. The night's data is built all the same; the claims
        // are scored on the first night that has enough history.
        Err(e @ scoring::Error::TooFewRows { .. }) if training == scoring::Training::WhenStale => {
            let warning = format!("claims not scored: too little history to train a fraud model yet ({e})");
            tracing::warn!("{warning}");
            let seconds = started.elapsed().as_secs_f64();
            let doc = json!({"stage": "score", "seconds": seconds, "skipped": true, "warnings": [warning]});
            return Ok(StageDone {
                stage: Stage::Score,
                doc,
                tables: Vec::new(),
                report: StageReport::ScoreSkipped(warning),
            });
        }
        Err(e) => return Err(failed(Stage::Score)(e.into())),
    };
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

/// The compact stage: gives every table the table properties it lacks and
/// compacts the ones whose small files have piled up
/// ([`Warehouse::keep_in_shape`]), so a year-old warehouse loads and scans
/// as fast as a new one. It runs after ingest, so the stages after it
/// (and the input versions the aggregates record) see compacted tables.
/// A dimension's new version is recorded in `_dim_changes` as changing no
/// interval, or the next facts stage would distrust it and rebuild every
/// fact.
pub(crate) async fn compact(
    warehouse: &Warehouse,
    run: &RunContext,
    dims: &dims::DimCatalog,
) -> Result<StageDone, Error> {
    let started = std::time::Instant::now();
    let fail = |e: StageError| failed(Stage::Compact)(e);
    let names = warehouse.tables().await.map_err(|e| fail(e.into()))?;
    let (mut tables, mut docs) = (Vec::new(), Vec::new());
    for table in names.keys() {
        let name = storage::TableName::new(table).map_err(|e| fail(e.into()))?;
        let commit = storage::Commit::new(run, "compact");
        let upkeep = warehouse.keep_in_shape(&name, &commit).await.map_err(|e| fail(e.into()))?;
        let Some(version) = upkeep.version() else { continue };
        if dims.dims().iter().any(|d| d.table == *table) {
            dims::record_changes(warehouse, run, table, version as u64, &[]).await.map_err(|e| fail(e.into()))?;
        }
        if table != storage::LEDGER_TABLE {
            tables.push(TableWritten::new(table, version, 0));
        }
        docs.push(json!({"table": table, "upkeep": upkeep}));
    }
    let doc = json!({"stage": "compact", "seconds": started.elapsed().as_secs_f64(), "tables": docs});
    Ok(StageDone { stage: Stage::Compact, doc, tables, report: StageReport::Compact(docs) })
}
