//! Training: the detectors fitted on a window of facts, stored as a
//! versioned model in [`crate::MODELS`].

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDate};
use ndarray::{Array2, Axis};
use storage::{RunContext, Warehouse};

use crate::detect::DetectorSet;
use crate::features::{self, CLAIM_FEATURES, FeatureSet, PROVIDER_FEATURES, Window};
use crate::model::{self, Artifact, StoredModel};
use crate::{Result, ScoringConfig, TrainReport, date_key};

/// Trains a model on the facts serviced within the training window before
/// the run's date, and stores it in [`crate::MODELS`] unless the same model is
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
pub(crate) async fn train_from(
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

/// The first service date of the training window that ends on `to`.
pub(crate) fn window_start(config: &ScoringConfig, to: NaiveDate) -> NaiveDate {
    to - Duration::days(i64::from(config.training.window_days) - 1)
}

/// Whether every claim of `set` was serviced inside `window`.
fn within(set: &FeatureSet, window: Window) -> bool {
    set.claims.serviced_key.iter().all(|k| (window.from_key..=window.to_key).contains(k))
}
