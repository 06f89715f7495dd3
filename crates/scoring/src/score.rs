//! Scoring: the model current at the run's date applied to every claim and
//! provider, written over [`FRAUD_SCORES`] and [`PROVIDER_RISK`].
//!
//! [`score`] runs these steps:
//!
//! 1. [`Stage::model_to_apply`]: the current model, or one trained first
//!    when it is stale and the run may train.
//! 2. Nothing more when the last scores were written from the same input
//!    versions with the same model.
//! 3. The features, computed with the model's own settings (or reused
//!    from the training), and the model retrained when the training window
//!    has outgrown it ([`Stage::retrain`]).
//! 4. [`Stage::write_scores`]: the providers scored, then the claims (scaled by
//!    their provider's risk), each row with its top three reasons, and
//!    both tables overwritten.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::NaiveDate;
use deltalake::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use storage::{Commit, RunContext, TableName, Warehouse};

use crate::features::{self, CLAIM_FEATURES, FeatureSet, PROVIDER_FEATURES, Window};
use crate::model::{StoredModel, current_model};
use crate::train::{train_from, window_start};
use crate::{
    Error, FRAUD_SCORES, PROVIDER_RISK, RULES, Result, ScoreReport, ScoringConfig, TrainReport, Training, date_key,
};

/// Scores every claim and provider in the facts with the model current at
/// the run's date.
pub async fn score(
    warehouse: &Warehouse,
    run: &RunContext,
    config: &ScoringConfig,
    training: Training,
) -> Result<ScoreReport> {
    let date = run.clock.logical_date();
    // Every claim up to the run's date, the features computed at most once
    // per setting: a model trained here is fitted to the same features
    // when the warehouse holds no claim older than its window.
    let window = Window { from_key: -1, to_key: date_key(date) };
    let stage = Stage { warehouse, run, config, training, window, date };
    let mut progress = Progress::default();
    let (mut model, computed, versions) = stage.model_to_apply(&mut progress).await?;
    let tables: BTreeMap<_, _> = versions.iter().cloned().collect();

    // Scores of these input versions with this model are already there:
    // nothing to compute or write.
    let mut inputs = serde_json::json!({"model_version": model.version, "tables": tables});
    let last = warehouse.commit_metadata(&TableName::new(FRAUD_SCORES)?, 1).await?;
    if last.first().and_then(|m| m.get("gold.inputs")) == Some(&inputs) {
        return Ok(ScoreReport {
            model_version: model.version,
            trained: progress.trained,
            claims_scored: 0,
            providers_scored: 0,
            referrals: 0,
            claims_version: None,
            providers_version: None,
            up_to_date: true,
            features_seconds: progress.features_seconds,
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
            progress.features_seconds += started.elapsed().as_secs_f64();
            set
        }
    };
    if progress.trained.is_none() && training == Training::WhenStale && outgrown(config, &model, &set, date) {
        (model, set) = stage.retrain(model, set, versions, &mut progress).await?;
        inputs = serde_json::json!({"model_version": model.version, "tables": tables});
    }
    stage.write_scores(model, &set, &inputs, progress).await
}

/// What every step of [`score`] works with.
struct Stage<'a> {
    warehouse: &'a Warehouse,
    run: &'a RunContext,
    /// The settings a model trained here is fitted with.
    config: &'a ScoringConfig,
    training: Training,
    /// Every claim serviced up to the run's date.
    window: Window,
    /// The run's date.
    date: NaiveDate,
}

/// What [`score`] has done on the way: the model it trained, and the time
/// spent computing features.
#[derive(Default)]
struct Progress {
    trained: Option<TrainReport>,
    features_seconds: f64,
}

impl Stage<'_> {
    /// The model to apply: the one current at the run's date, or, when it
    /// is stale and the run may train, one trained here first. Returns it
    /// with the features computed for that training (and their settings),
    /// and the versions of the input tables.
    async fn model_to_apply(
        &self,
        progress: &mut Progress,
    ) -> Result<(StoredModel, Option<(ScoringConfig, FeatureSet)>, Vec<(String, i64)>)> {
        let Self { warehouse, run, config, training, window, date } = *self;
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
                "model {} was fitted to features revision {}, and this gold computes revision {}: its scores are \
                 off until `gold train` fits a current model",
                m.version,
                m.artifact.features_revision,
                features::FEATURES_REVISION
            );
        }
        let mut computed = None;
        let mut versions = None;
        if stale && training == Training::WhenStale {
            let started = std::time::Instant::now();
            let read = features::input_versions(warehouse).await?;
            let set = features::compute(warehouse, config, window, read.clone()).await?;
            versions = Some(read);
            progress.features_seconds += started.elapsed().as_secs_f64();
            progress.trained = Some(train_from(warehouse, run, config, Some(&set)).await?);
            computed = Some((config.clone(), set));
            current = current_model(warehouse, date).await?;
        }
        // Without a model, that is the error (before any table is read).
        let model = current.ok_or(Error::NoModel { date })?;
        let versions = match versions {
            Some(v) => v,
            None => features::input_versions(warehouse).await?,
        };
        Ok((model, computed, versions))
    }

    /// Trains a model in place of `model`, which the training window has
    /// outgrown, fitted to `set` when `model` computed it with the same
    /// settings; returns the new model and the features for it (`set`
    /// again, unless the new model's settings differ).
    async fn retrain(
        &self,
        model: StoredModel,
        set: FeatureSet,
        versions: Vec<(String, i64)>,
        progress: &mut Progress,
    ) -> Result<(StoredModel, FeatureSet)> {
        let Self { warehouse, run, config, window, date, .. } = *self;
        let reuse = (*config == model.artifact.config).then_some(&set);
        progress.trained = Some(train_from(warehouse, run, config, reuse).await?);
        let newer = current_model(warehouse, date).await?.ok_or(Error::NoModel { date })?;
        // Computed again only if the new model's settings differ.
        if newer.artifact.config != model.artifact.config {
            let again = std::time::Instant::now();
            let set = features::compute(warehouse, &newer.artifact.config, window, versions).await?;
            progress.features_seconds += again.elapsed().as_secs_f64();
            return Ok((newer, set));
        }
        Ok((newer, set))
    }

    /// Applies `model` to the features of `set`, and overwrites the
    /// providers' and the claims' scores, each commit naming the model and
    /// its `inputs`.
    async fn write_scores(
        &self,
        model: StoredModel,
        set: &FeatureSet,
        inputs: &serde_json::Value,
        progress: Progress,
    ) -> Result<ScoreReport> {
        let Self { warehouse, run, .. } = *self;
        let applied = std::time::Instant::now();
        let providers = apply_providers(&model, set)?;
        let claims = apply_claims(&model, set, &providers)?;
        let apply_seconds = applied.elapsed().as_secs_f64();
        let referrals = claims.score.iter().filter(|s| **s >= model.artifact.config.scores.referral_threshold).count();

        let provider_batch = providers.batch(&model.version, run.id.0)?;
        let claim_batch = claims.batch(&model.version, run.id.0)?;
        let commit = |what| {
            Commit::new(run, what)
                .with_metadata("model_version", serde_json::json!(model.version))
                .with_metadata("inputs", inputs.clone())
        };
        let providers_version = warehouse
            .overwrite(&TableName::new(PROVIDER_RISK)?, vec![provider_batch], &commit("score.providers"))
            .await?;
        let claims_version =
            warehouse.overwrite(&TableName::new(FRAUD_SCORES)?, vec![claim_batch], &commit("score.claims")).await?;
        let n = set.claims.claim_id.len();
        Ok(ScoreReport {
            model_version: model.version,
            trained: progress.trained,
            claims_scored: n,
            providers_scored: set.providers.provider_id.len(),
            referrals,
            claims_version: Some(claims_version),
            providers_version: Some(providers_version),
            up_to_date: false,
            features_seconds: progress.features_seconds,
            apply_seconds,
            claims_per_second: n as f64 / apply_seconds.max(1e-9),
        })
    }
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
    let risk: HashMap<&str, f64> =
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
