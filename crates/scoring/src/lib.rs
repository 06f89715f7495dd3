//! Fraud scoring: features from the facts, linfa anomaly detectors, named
//! rules, versioned models and evaluation against labels.
//!
//! - [`train`] fits the detectors on a window of facts and appends the
//!   model to `gold_fraud_models`: its artifact (every fitted parameter,
//!   as JSON whose floats round-trip exactly), the versions of the tables
//!   it was trained on and its feature list. The model version is a digest
//!   of the artifact, so the same data and seed give the same version.
//! - [`score`] applies the model current at the run's date to every claim
//!   and provider and overwrites `gold_fraud_scores` and
//!   `gold_provider_risk` (earlier scores stay in the Delta history).
//! - [`evaluate`](evaluate::evaluate) measures the scores against labels.
//!
//! The main types: [`ScoringConfig`] (`models/scoring.toml`), the
//! [`features`] of claims and providers ([`features::FeatureSet`]), the
//! [`detect`]ors ([`detect::DetectorSet`]) and the stored model
//! ([`StoredModel`], whose [`Artifact`] holds both detector sets).
//!
//! ```no_run
//! # async fn nightly(warehouse: &storage::Warehouse, run: &storage::RunContext) -> scoring::Result<()> {
//! let config = scoring::ScoringConfig::default_config()?;
//! // Trains a model first when none is current or the current one is stale.
//! let report = scoring::score(warehouse, run, &config, scoring::Training::WhenStale).await?;
//! println!("{} claims scored, {} referred", report.claims_scored, report.referrals);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod config;
pub mod detect;
pub mod evaluate;
pub mod features;
mod knn;
mod model;
mod score;
mod train;

use std::collections::BTreeMap;

use chrono::NaiveDate;
use deltalake::arrow::error::ArrowError;
use deltalake::datafusion::error::DataFusionError;
use serde::Serialize;

pub use config::ScoringConfig;
pub use model::{Artifact, StoredModel, current_model};
pub use score::score;
pub use train::train;

/// The models table: one row per trained model, with its artifact.
pub const MODELS: &str = "gold_fraud_models";
/// The claims' scores, overwritten by each scoring run.
pub const FRAUD_SCORES: &str = "gold_fraud_scores";
/// The providers' scores, overwritten by each scoring run.
pub const PROVIDER_RISK: &str = "gold_provider_risk";

/// The rules, as the reasons name them.
pub const RULES: [&str; 4] = ["duplicate_billing", "service_after_coverage_end", "unbundling", "amount_above_code_p99"];

/// Errors of training, scoring and evaluation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The scoring model (`scoring.toml`) is not valid.
    #[error("scoring model {origin}: {reason}")]
    Model {
        /// Where the model came from.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The scoring model file could not be read.
    #[error("scoring model {origin}: {source}")]
    ModelFile {
        /// The file.
        origin: String,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The scoring model is not valid TOML, or not the model's shape.
    #[error("scoring model {origin}: {}", .source.to_string().trim_end())]
    ModelSyntax {
        /// Where the model came from.
        origin: String,
        /// The parser's error.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// An input table does not exist yet.
    #[error("table {0} does not exist yet: build the facts first (gold build --only facts)")]
    MissingInput(String),
    /// A feature query failed.
    #[error("{what}: query failed: {source}")]
    Query {
        /// What was being computed.
        what: String,
        /// DataFusion's error.
        #[source]
        source: Box<DataFusionError>,
    },
    /// Arrow failed.
    #[error("{what}: arrow: {source}")]
    Arrow {
        /// What was being read or built.
        what: String,
        /// Arrow's error.
        #[source]
        source: Box<ArrowError>,
    },
    /// A query's result or a table lacks a column.
    #[error("features: column {column:?} {reason}")]
    Column {
        /// The column.
        column: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Too few rows to train on.
    #[error("{what}: {rows} rows to train on, at least {needed} are needed")]
    TooFewRows {
        /// Claims or providers.
        what: String,
        /// The rows there are.
        rows: usize,
        /// The rows needed.
        needed: usize,
    },
    /// A detector could not be fitted.
    #[error("{what}: fitting {detector} failed: {reason}")]
    Fit {
        /// Claims or providers.
        what: String,
        /// The detector.
        detector: String,
        /// Why.
        reason: String,
    },
    /// A model was applied to features of another width.
    #[error("a model of {expected} features was given {got}")]
    Shape {
        /// The model's features.
        expected: usize,
        /// The features given.
        got: usize,
    },
    /// A feature value is NaN or infinite.
    #[error("features: row {row} has the value {value}; the detectors need every feature finite")]
    NonFinite {
        /// The row.
        row: usize,
        /// The value.
        value: f64,
    },
    /// A scoring thread panicked.
    #[error("a scoring thread panicked")]
    Panicked,
    /// No model is current at the date.
    #[error("no fraud model is current on {date}: train one first (gold train --date {date})")]
    NoModel {
        /// The date.
        date: NaiveDate,
    },
    /// A stored model is not usable.
    #[error("model {version}: {reason}")]
    Artifact {
        /// The model's version.
        version: String,
        /// Why.
        reason: String,
    },
    /// A model's artifact could not be written or read as JSON.
    #[error("model {version}: {source}")]
    ArtifactJson {
        /// The model's version (`(new)` before it has one).
        version: String,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored model's `data_versions` are not valid JSON.
    #[error("model {version}: data_versions: {source}")]
    DataVersions {
        /// The model's version.
        version: String,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// A labels file row is not valid.
    #[error("{file}: row {row}: {reason}")]
    Labels {
        /// The file.
        file: String,
        /// The row (1 is the header).
        row: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A labels file could not be read.
    #[error("{file}: row {row}: {source}")]
    LabelsFile {
        /// The file.
        file: String,
        /// The row (0 for the file itself, 1 for the header).
        row: u64,
        /// The CSV reader's error.
        #[source]
        source: csv::Error,
    },
    /// An export file could not be written.
    #[error("{file}: {source}")]
    Export {
        /// The file or folder.
        file: String,
        /// The CSV writer's error.
        #[source]
        source: csv::Error,
    },
    /// The warehouse failed.
    #[error(transparent)]
    Storage(#[from] storage::Error),
}

impl Error {
    pub(crate) fn query(what: &str, e: DataFusionError) -> Self {
        Self::Query { what: what.to_string(), source: Box::new(e) }
    }
    pub(crate) fn arrow(what: &str, e: ArrowError) -> Self {
        Self::Arrow { what: what.to_string(), source: Box::new(e) }
    }
    /// Whether the error is the user's or the data's (exit code 1).
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::Model { .. }
            | Self::ModelFile { .. }
            | Self::ModelSyntax { .. }
            | Self::MissingInput(_)
            | Self::TooFewRows { .. }
            | Self::NoModel { .. }
            | Self::Labels { .. }
            | Self::LabelsFile { .. }
            | Self::Export { .. } => true,
            Self::Storage(e) => e.is_user_error(),
            Self::Query { .. }
            | Self::Arrow { .. }
            | Self::Column { .. }
            | Self::Fit { .. }
            | Self::Shape { .. }
            | Self::NonFinite { .. }
            | Self::Panicked
            | Self::Artifact { .. }
            | Self::ArtifactJson { .. }
            | Self::DataVersions { .. } => false,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// The `yyyymmdd` date key of `d`.
fn date_key(d: NaiveDate) -> i32 {
    use chrono::Datelike;
    d.year() * 10_000 + d.month() as i32 * 100 + d.day() as i32
}

/// What [`train`] did.
#[derive(Debug, Serialize)]
pub struct TrainReport {
    /// The model's version: a digest of its artifact.
    pub model_version: String,
    /// `false` when this exact model was already stored (nothing written).
    pub written: bool,
    /// The version of [`MODELS`] written, if any.
    pub table_version: Option<i64>,
    /// The first service date of the training window.
    pub window_from: NaiveDate,
    /// The last service date of the training window.
    pub window_to: NaiveDate,
    /// The claims the model was trained on.
    pub training_claims: usize,
    /// The providers the model was trained on.
    pub training_providers: usize,
    /// The version of each input table the features were computed from.
    pub data_versions: BTreeMap<String, i64>,
    /// The claim features, in the model's column order.
    pub claim_features: Vec<String>,
    /// The provider features, in the model's column order.
    pub provider_features: Vec<String>,
    /// `true` when the model was fitted to the features the score stage
    /// had computed for scoring, not computed again for the window.
    pub reused_features: bool,
    /// How long training took.
    pub seconds: f64,
}

/// What [`score`] did.
#[derive(Debug, Serialize)]
pub struct ScoreReport {
    /// The model applied.
    pub model_version: String,
    /// The model this run trained first: none was current, or the current
    /// one was too old or trained on too few claims.
    pub trained: Option<TrainReport>,
    /// Claims scored.
    pub claims_scored: usize,
    /// Providers scored.
    pub providers_scored: usize,
    /// Claims at or above the referral threshold.
    pub referrals: usize,
    /// The version of [`FRAUD_SCORES`] written, if any.
    pub claims_version: Option<i64>,
    /// The version of [`PROVIDER_RISK`] written, if any.
    pub providers_version: Option<i64>,
    /// `true` when the scores were already those of these facts and model.
    pub up_to_date: bool,
    /// Time spent computing features.
    pub features_seconds: f64,
    /// Time spent applying the detectors.
    pub apply_seconds: f64,
    /// Claims scored per second of applying.
    pub claims_per_second: f64,
}

/// When [`score`] may train a model itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Training {
    /// Never: without a current model, scoring is an error.
    Never,
    /// When no model is current at the run's date, the current one is
    /// older than `retrain_after_days` or was fitted to features computed
    /// another way (an older `FEATURES_REVISION`), or the training window
    /// has grown to `retrain_growth` times its claims (the nightly build).
    WhenStale,
}
