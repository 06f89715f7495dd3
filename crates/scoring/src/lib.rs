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

pub mod config;
pub mod detect;
pub mod evaluate;
pub mod features;
mod knn;
mod model;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Duration, NaiveDate};
use deltalake::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::arrow::error::ArrowError;
use deltalake::datafusion::error::DataFusionError;
use ndarray::{Array2, Axis};
use serde::Serialize;
use storage::{Commit, RunContext, TableName, Warehouse};

pub use config::ScoringConfig;
pub use model::{Artifact, StoredModel, current_model};

use detect::DetectorSet;
use features::{CLAIM_FEATURES, FeatureSet, PROVIDER_FEATURES, Window};

pub const MODELS: &str = "gold_fraud_models";
pub const FRAUD_SCORES: &str = "gold_fraud_scores";
pub const PROVIDER_RISK: &str = "gold_provider_risk";

/// The rules, as the reasons name them.
pub const RULES: [&str; 4] = ["duplicate_billing", "service_after_coverage_end", "unbundling", "amount_above_code_p99"];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("scoring model {origin}: {reason}")]
    Model { origin: String, reason: String },
    #[error("table {0} does not exist yet: build the facts first (gold build --only facts)")]
    MissingInput(String),
    #[error("{what}: query failed: {source}")]
    Query {
        what: String,
        #[source]
        source: Box<DataFusionError>,
    },
    #[error("{what}: arrow: {source}")]
    Arrow {
        what: String,
        #[source]
        source: Box<ArrowError>,
    },
    #[error("features: column {column:?} {reason}")]
    Column { column: String, reason: String },
    #[error("{what}: {rows} rows to train on, at least {needed} are needed")]
    TooFewRows { what: String, rows: usize, needed: usize },
    #[error("{what}: fitting {detector} failed: {reason}")]
    Fit { what: String, detector: String, reason: String },
    #[error("a model of {expected} features was given {got}")]
    Shape { expected: usize, got: usize },
    #[error("features: row {row} has the value {value}; the detectors need every feature finite")]
    NonFinite { row: usize, value: f64 },
    #[error("a scoring thread panicked")]
    Panicked,
    #[error("no fraud model is current on {date}: train one first (gold train --date {date})")]
    NoModel { date: NaiveDate },
    #[error("model {version}: {reason}")]
    Artifact { version: String, reason: String },
    #[error("{file}: row {row}: {reason}")]
    Labels { file: String, row: u64, reason: String },
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
            | Self::MissingInput(_)
            | Self::TooFewRows { .. }
            | Self::NoModel { .. }
            | Self::Labels { .. } => true,
            Self::Storage(e) => e.is_user_error(),
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

fn date_key(d: NaiveDate) -> i32 {
    use chrono::Datelike;
    d.year() * 10_000 + d.month() as i32 * 100 + d.day() as i32
}

/// What [`train`] did.
#[derive(Debug, Serialize)]
pub struct TrainReport {
    pub model_version: String,
    /// `false` when this exact model was already stored (nothing written).
    pub written: bool,
    pub table_version: Option<i64>,
    pub window_from: NaiveDate,
    pub window_to: NaiveDate,
    pub training_claims: usize,
    pub training_providers: usize,
    pub data_versions: BTreeMap<String, i64>,
    pub claim_features: Vec<String>,
    pub provider_features: Vec<String>,
    /// `true` when the model was fitted to the features the score stage
    /// had computed for scoring, not computed again for the window.
    pub reused_features: bool,
    pub seconds: f64,
}

/// Trains a model on the facts serviced within the training window before
/// the run's date, and stores it in [`MODELS`] unless the same model is
/// already there.
pub async fn train(warehouse: &Warehouse, run: &RunContext, config: &ScoringConfig) -> Result<TrainReport> {
    train_from(warehouse, run, config, None).await
}

/// [`train`], reusing `computed`: features computed with `config` for
/// every claim up to the run's date, at the data versions current now.
/// They are the training window's own features when every one of those
/// claims was serviced inside the window (the warehouse holds less history
/// than the window), and are then fitted as they are, not computed again;
/// otherwise the window's features are computed.
async fn train_from(
    warehouse: &Warehouse,
    run: &RunContext,
    config: &ScoringConfig,
    computed: Option<&FeatureSet>,
) -> Result<TrainReport> {
    let started = std::time::Instant::now();
    let to = run.clock.logical_date();
    let from = window_start(config, to);
    let window = Window { from_key: date_key(from), to_key: date_key(to) };
    let owned;
    let reused = computed.filter(|set| within(set, window));
    let set = match reused {
        Some(set) => {
            tracing::info!(claims = set.claims.claim_id.len(), "training on the features already computed");
            set
        }
        None => {
            let versions = features::input_versions(warehouse).await?;
            owned = features::compute(warehouse, config, window, versions).await?;
            &owned
        }
    };
    let seed = config.training.seed;
    let claims_x = training_sample(&set.claims.values, config.training.max_training_claims, seed);
    let fitting = std::time::Instant::now();
    let claims = DetectorSet::fit(&claims_x, &config.detectors, seed, "claims")?;
    tracing::info!(rows = claims_x.nrows(), seconds = fitting.elapsed().as_secs_f64(), "claim detectors fitted");
    let providers = DetectorSet::fit(&set.providers.values, &config.detectors, seed, "providers")?;
    tracing::info!(seconds = fitting.elapsed().as_secs_f64(), "provider detectors fitted");
    let artifact = Artifact {
        config: config.clone(),
        window_from: from,
        window_to: to,
        claim_features: CLAIM_FEATURES.iter().map(|s| s.to_string()).collect(),
        provider_features: PROVIDER_FEATURES.iter().map(|s| s.to_string()).collect(),
        features_revision: features::FEATURES_REVISION,
        claims,
        providers,
    };
    let data_versions: BTreeMap<String, i64> = set.versions.iter().cloned().collect();
    let stored = StoredModel::new(
        artifact,
        to,
        run.id.0,
        data_versions.clone(),
        set.claims.values.nrows(),
        set.providers.values.nrows(),
    )?;
    let table_version = model::store(warehouse, run, &stored).await?;
    Ok(TrainReport {
        model_version: stored.version.clone(),
        written: table_version.is_some(),
        table_version,
        window_from: from,
        window_to: to,
        training_claims: stored.training_claims,
        training_providers: stored.training_providers,
        data_versions,
        claim_features: stored.artifact.claim_features.clone(),
        provider_features: stored.artifact.provider_features.clone(),
        reused_features: reused.is_some(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// At most `max` rows of `x`, a seeded sample in row order.
fn training_sample(x: &Array2<f64>, max: usize, seed: u64) -> Array2<f64> {
    use rand::SeedableRng;
    if x.nrows() <= max {
        return x.clone();
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_add(3));
    let mut picked = rand::seq::index::sample(&mut rng, x.nrows(), max).into_vec();
    picked.sort_unstable();
    x.select(Axis(0), &picked)
}

/// What [`score`] did.
#[derive(Debug, Serialize)]
pub struct ScoreReport {
    pub model_version: String,
    /// The model this run trained first: none was current, or the current
    /// one was too old or trained on too few claims.
    pub trained: Option<TrainReport>,
    pub claims_scored: usize,
    pub providers_scored: usize,
    /// Claims at or above the referral threshold.
    pub referrals: usize,
    pub claims_version: Option<i64>,
    pub providers_version: Option<i64>,
    /// `true` when the scores were already those of these facts and model.
    pub up_to_date: bool,
    pub features_seconds: f64,
    pub apply_seconds: f64,
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

/// Scores every claim and provider in the facts with the model current at
/// the run's date.
pub async fn score(
    warehouse: &Warehouse,
    run: &RunContext,
    config: &ScoringConfig,
    training: Training,
) -> Result<ScoreReport> {
    let date = run.clock.logical_date();
    let mut current = current_model(warehouse, date).await?;
    let outdated = current.as_ref().filter(|m| m.artifact.features_revision != features::FEATURES_REVISION);
    let stale = outdated.is_some()
        || current
            .as_ref()
            .is_none_or(|m| (date - m.trained_for).num_days() >= i64::from(config.training.retrain_after_days));
    if let Some(m) = outdated
        && training == Training::Never
    {
        tracing::warn!(
            "model {} was fitted to features revision {}, and this gold computes revision {}: its scores are off \
             until `gold train` fits a current model",
            m.version,
            m.artifact.features_revision,
            features::FEATURES_REVISION
        );
    }
    // Every claim up to the run's date, the features computed at most once
    // per setting: a model trained here is fitted to the same features
    // when the warehouse holds no claim older than its window.
    let window = Window { from_key: -1, to_key: date_key(date) };
    let mut features_seconds = 0.0;
    let mut computed: Option<(ScoringConfig, FeatureSet)> = None;
    let mut versions = None;
    let mut trained = None;
    if stale && training == Training::WhenStale {
        let started = std::time::Instant::now();
        let read = features::input_versions(warehouse).await?;
        let set = features::compute(warehouse, config, window, read.clone()).await?;
        versions = Some(read);
        features_seconds += started.elapsed().as_secs_f64();
        trained = Some(train_from(warehouse, run, config, Some(&set)).await?);
        computed = Some((config.clone(), set));
        current = current_model(warehouse, date).await?;
    }
    // Without a model, that is the error (before any table is read).
    let mut model = current.ok_or(Error::NoModel { date })?;
    let versions = match versions {
        Some(v) => v,
        None => features::input_versions(warehouse).await?,
    };
    let tables: BTreeMap<_, _> = versions.iter().cloned().collect();

    // Scores of these input versions with this model are already there:
    // nothing to compute or write.
    let mut inputs = serde_json::json!({"model_version": model.version, "tables": tables});
    let scores_name = TableName::new(FRAUD_SCORES)?;
    let last = warehouse.commit_metadata(&scores_name, 1).await?;
    if last.first().and_then(|m| m.get("gold.inputs")) == Some(&inputs) {
        return Ok(ScoreReport {
            model_version: model.version,
            trained,
            claims_scored: 0,
            providers_scored: 0,
            referrals: 0,
            claims_version: None,
            providers_version: None,
            up_to_date: true,
            features_seconds,
            apply_seconds: 0.0,
            claims_per_second: 0.0,
        });
    }
    // The features follow the model's own settings.
    let mut set = match computed {
        Some((settings, set)) if settings == model.artifact.config => set,
        _ => {
            let started = std::time::Instant::now();
            let set = features::compute(warehouse, &model.artifact.config, window, versions.clone()).await?;
            features_seconds += started.elapsed().as_secs_f64();
            set
        }
    };
    if trained.is_none() && training == Training::WhenStale && outgrown(config, &model, &set, date) {
        let reuse = (*config == model.artifact.config).then_some(&set);
        trained = Some(train_from(warehouse, run, config, reuse).await?);
        let newer = current_model(warehouse, date).await?.ok_or(Error::NoModel { date })?;
        // Computed again only if the new model's settings differ.
        if newer.artifact.config != model.artifact.config {
            let again = std::time::Instant::now();
            set = features::compute(warehouse, &newer.artifact.config, window, versions).await?;
            features_seconds += again.elapsed().as_secs_f64();
        }
        inputs = serde_json::json!({"model_version": newer.version, "tables": tables});
        model = newer;
    }

    let applied = std::time::Instant::now();
    let providers = apply_providers(&model, &set)?;
    let claims = apply_claims(&model, &set, &providers)?;
    let apply_seconds = applied.elapsed().as_secs_f64();
    let referrals = claims.score.iter().filter(|s| **s >= model.artifact.config.scores.referral_threshold).count();

    let provider_batch = providers.batch(&model.version, run.id.0)?;
    let claim_batch = claims.batch(&model.version, run.id.0)?;
    let commit = |what| {
        Commit::new(run, what)
            .with_metadata("model_version", serde_json::json!(model.version))
            .with_metadata("inputs", inputs.clone())
    };
    let providers_version =
        warehouse.overwrite(&TableName::new(PROVIDER_RISK)?, vec![provider_batch], &commit("score.providers")).await?;
    let claims_version = warehouse.overwrite(&scores_name, vec![claim_batch], &commit("score.claims")).await?;
    let n = set.claims.claim_id.len();
    Ok(ScoreReport {
        model_version: model.version,
        trained,
        claims_scored: n,
        providers_scored: set.providers.provider_id.len(),
        referrals,
        claims_version: Some(claims_version),
        providers_version: Some(providers_version),
        up_to_date: false,
        features_seconds,
        apply_seconds,
        claims_per_second: n as f64 / apply_seconds.max(1e-9),
    })
}

/// The first service date of the training window that ends on `to`.
fn window_start(config: &ScoringConfig, to: NaiveDate) -> NaiveDate {
    to - Duration::days(i64::from(config.training.window_days) - 1)
}

/// Whether the training window of `set` (claims serviced within
/// `window_days` up to `date`) now holds at least `retrain_growth` times the
/// claims `model` was trained on.
fn outgrown(config: &ScoringConfig, model: &StoredModel, set: &FeatureSet, date: NaiveDate) -> bool {
    let Some(growth) = config.training.retrain_growth else { return false };
    let (from, to) = (date_key(window_start(config, date)), date_key(date));
    let in_window = set.claims.serviced_key.iter().filter(|k| (from..=to).contains(*k)).count();
    in_window as f64 >= growth * model.training_claims.max(1) as f64
}

/// Whether every claim of `set` was serviced inside `window`.
fn within(set: &FeatureSet, window: Window) -> bool {
    set.claims.serviced_key.iter().all(|k| (window.from_key..=window.to_key).contains(k))
}

/// Scores of one level (claims or providers), ready to write.
struct Scored {
    id_column: &'static str,
    ids: Vec<String>,
    provider_id: Option<Vec<String>>,
    score: Vec<f64>,
    reasons: Vec<[Option<String>; 3]>,
}

impl Scored {
    fn batch(&self, model_version: &str, run_id: i64) -> Result<RecordBatch> {
        let n = self.ids.len();
        // Percentile: the share of rows scored strictly lower.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| self.score[a].total_cmp(&self.score[b]));
        let mut percentile = vec![0.0; n];
        let mut i = 0;
        while i < n {
            let mut j = i;
            while j + 1 < n && self.score[order[j + 1]] == self.score[order[i]] {
                j += 1;
            }
            for &o in &order[i..=j] {
                percentile[o] = i as f64 / n.max(1) as f64;
            }
            i = j + 1;
        }
        let mut fields = vec![Field::new(self.id_column, DataType::Utf8, false)];
        let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(&self.ids))];
        if let Some(p) = &self.provider_id {
            fields.push(Field::new("provider_id", DataType::Utf8, true));
            // A claim without a provider (care-management claims) has NULL.
            columns.push(Arc::new(
                p.iter().map(|id| Some(id.as_str()).filter(|id| !id.is_empty())).collect::<StringArray>(),
            ));
        }
        fields.extend([
            Field::new("score", DataType::Float64, false),
            Field::new("percentile", DataType::Float64, false),
            Field::new("reason_1", DataType::Utf8, true),
            Field::new("reason_2", DataType::Utf8, true),
            Field::new("reason_3", DataType::Utf8, true),
            Field::new("model_version", DataType::Utf8, false),
            Field::new("run_id", DataType::Int64, false),
        ]);
        columns.push(Arc::new(Float64Array::from(self.score.clone())));
        columns.push(Arc::new(Float64Array::from(percentile)));
        for r in 0..3 {
            columns.push(Arc::new(self.reasons.iter().map(|rs| rs[r].clone()).collect::<StringArray>()));
        }
        columns.push(Arc::new(StringArray::from_iter_values(std::iter::repeat_n(model_version, n))));
        columns.push(Arc::new(Int64Array::from(vec![run_id; n])));
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| Error::arrow("scores", e))
    }
}

/// The top three reasons of a row: the rules it hit, then the features
/// furthest above their peers (with their robust z-score).
fn reasons(rules: &[&str], names: &[&str], z: ndarray::ArrayView1<'_, f64>) -> [Option<String>; 3] {
    let mut out: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
    let mut by_z: Vec<(usize, f64)> = z.iter().copied().enumerate().filter(|(_, v)| *v >= 2.0).collect();
    by_z.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out.extend(by_z.into_iter().map(|(j, v)| format!("{} (z={v:.1})", names[j])));
    let mut it = out.into_iter();
    [it.next(), it.next(), it.next()]
}

/// A provider at or above this risk is named among its claims' reasons.
const RISKY_PROVIDER: f64 = 0.95;

/// A combined anomaly score (about 1 at the training 99th percentile,
/// unbounded above) as a score in [0, 1]: `1 - 2^-s`, so 0.5 at the 99th
/// percentile and 0.97 at five times as far; the order is kept.
fn squash(s: f64) -> f64 {
    if s.is_nan() { 0.0 } else { 1.0 - (-s.max(0.0)).exp2() }
}

/// A claim's score is its own anomaly score (the claim detectors) scaled
/// by its provider's risk, from half as much (a provider of no risk) to
/// 1.5 times (a provider at `provider_risk_full` or above): the same
/// oddity weighs more at a provider whose whole billing stands out (a
/// claim with no provider is weighed once, neutral). A claim hitting one
/// of the floor rules scores at least the rule floor.
fn apply_claims(model: &StoredModel, set: &FeatureSet, providers: &Scored) -> Result<Scored> {
    let c = &set.claims;
    let combined =
        model.artifact.claims.score(model.claim_inputs(&c.values)?.view(), &model.artifact.claim_weights())?.combined;
    let scores = &model.artifact.config.scores;
    let floor = scores.rule_floor;
    let risk: std::collections::HashMap<&str, f64> =
        providers.ids.iter().map(String::as_str).zip(providers.score.iter().copied()).collect();
    let mut score = Vec::with_capacity(combined.len());
    let mut reason = Vec::with_capacity(combined.len());
    for (i, s) in combined.into_iter().enumerate() {
        let row = c.values.row(i);
        let hits: Vec<&str> = [
            (row[2] > 0.0, RULES[0]),
            (row[3] > 0.0, RULES[1]),
            (row[4] > 0.0, RULES[2]),
            (c.above_code_p99[i], RULES[3]),
        ]
        .into_iter()
        .filter_map(|(hit, name)| hit.then_some(name))
        .collect();
        let provider_risk = risk.get(c.provider_id[i].as_str()).copied();
        let s = squash(s.max(0.0) * scores.provider_factor(provider_risk));
        let floored = hits.iter().any(|h| scores.floor_rules.iter().any(|f| f == h));
        let s = if floored { s.max(floor + (1.0 - floor) * s) } else { s };
        score.push(s.clamp(0.0, 1.0));
        let mut named = hits.clone();
        if provider_risk.is_some_and(|r| r >= RISKY_PROVIDER) {
            named.push("high_risk_provider");
        }
        reason.push(reasons(&named, &CLAIM_FEATURES, row));
    }
    Ok(Scored {
        id_column: "claim_id",
        ids: c.claim_id.clone(),
        provider_id: Some(c.provider_id.clone()),
        score,
        reasons: reason,
    })
}

fn apply_providers(model: &StoredModel, set: &FeatureSet) -> Result<Scored> {
    let p = &set.providers;
    let combined = model
        .artifact
        .providers
        .score(model.provider_inputs(&p.values)?.view(), &model.artifact.provider_weights())?
        .combined;
    let reason = (0..combined.len()).map(|i| reasons(&[], &PROVIDER_FEATURES, p.values.row(i))).collect();
    Ok(Scored {
        id_column: "provider_id",
        ids: p.provider_id.clone(),
        provider_id: None,
        score: combined.into_iter().map(squash).collect(),
        reasons: reason,
    })
}
