//! `models/scoring.toml`: the payer policy the features and rules read,
//! and the detector settings.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The scoring model: `models/scoring.toml`, stored in each trained
/// model's artifact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringConfig {
    /// `[training]`: what a model is fitted on.
    pub training: Training,
    /// `[detectors]`: the detectors' sizes and weights.
    pub detectors: Detectors,
    /// `[scores]`: from anomaly scores to claim scores and referrals.
    pub scores: Scores,
    /// `[[bundle]]`: the codes that bundle others, for the unbundling rule.
    #[serde(default, rename = "bundle")]
    pub bundles: Vec<Bundle>,
    /// `[em_levels]`: the E/M level of each evaluation and management code.
    #[serde(default)]
    pub em_levels: BTreeMap<String, i32>,
}

/// `[training]`: what a model is fitted on, and when it is stale.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Training {
    /// Facts serviced within this many days before the run date are
    /// trained on.
    pub window_days: u32,
    /// The seed of every random choice: the same facts and seed give the
    /// same model, bit for bit.
    pub seed: u64,
    /// At most this many claims are fitted (a seeded sample of the window).
    pub max_training_claims: usize,
    /// The `score` stage of `gold build` trains a new model when the
    /// current one is this many days old.
    pub retrain_after_days: u32,
    /// The `score` stage of `gold build` also trains a new model when the
    /// training window now holds at least this many times the claims the
    /// current model was trained on (absent: never for growth).
    #[serde(default)]
    pub retrain_growth: Option<f64>,
}

/// `[detectors]`: the detectors' sizes and weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detectors {
    /// Components of the Gaussian mixture.
    pub gmm_components: usize,
    /// Clusters of k-means.
    pub kmeans_clusters: usize,
    /// Principal components kept by PCA.
    pub pca_components: usize,
    /// The k of the k-nearest-neighbour distance.
    pub knn_neighbours: usize,
    /// Training rows (a seeded sample) the kNN distances are measured to.
    pub knn_reference: usize,
    /// How much each detector weighs in a claim's combined score, by
    /// detector name; a detector left out (or a model trained before
    /// weights existed) weighs 1.
    #[serde(default)]
    pub claim_weights: BTreeMap<String, f64>,
    /// The same for providers.
    #[serde(default)]
    pub provider_weights: BTreeMap<String, f64>,
}

impl Detectors {
    /// The weights of `weights` in the order of [`crate::detect::DETECTORS`].
    pub fn ordered(weights: &BTreeMap<String, f64>) -> Vec<f64> {
        crate::detect::DETECTORS.iter().map(|d| weights.get(*d).copied().unwrap_or(1.0)).collect()
    }
}

/// `[scores]`: from anomaly scores to claim scores and referrals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scores {
    /// Claims at or above this score count as referrals.
    pub referral_threshold: f64,
    /// The lowest score of a claim that hits one of `floor_rules`.
    pub rule_floor: f64,
    /// The rules whose hit lifts a claim's score to `rule_floor`; the
    /// others are reasons and features only.
    pub floor_rules: Vec<String>,
    /// A claim is a duplicate of the claim before it with the same member,
    /// provider, service date and codes only if their amounts differ by at
    /// most this share of the larger; absent (models trained before it),
    /// any amount.
    #[serde(default)]
    pub duplicate_amount_tolerance: Option<f64>,
    /// A provider whose risk reaches this counts as fully risky when its
    /// claims are scored; absent (models trained before it), a claim's
    /// weight grows with its provider's risk all the way to 1.
    #[serde(default)]
    pub provider_risk_full: Option<f64>,
}

impl Scores {
    /// What a claim's anomaly score is multiplied by, given its provider's
    /// risk: from 0.5 (a provider of no risk) to 1.5 (a provider at
    /// `provider_risk_full` or above, or of risk 1 without it); 1 for a
    /// claim without a provider.
    pub fn provider_factor(&self, risk: Option<f64>) -> f64 {
        match (risk, self.provider_risk_full) {
            (None, _) => 1.0,
            (Some(r), Some(full)) => 0.5 + (r / full).clamp(0.0, 1.0),
            (Some(r), None) => 0.5 + r,
        }
    }
}

/// A code and the component codes it bundles.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// The bundle's own code.
    pub code: String,
    /// The codes it bundles.
    pub components: Vec<String>,
}

impl ScoringConfig {
    /// The scoring model built into gold (`models/scoring.toml`).
    pub fn default_config() -> Result<Self> {
        Self::parse(reference::models::SCORING, "embedded models/scoring.toml")
    }

    /// `scoring.toml` at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::ModelFile { origin: path.display().to_string(), source: e })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks `text`, naming `origin` in its errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let bad = |reason: String| Error::Model { origin: origin.to_string(), reason };
        let config: Self =
            toml::from_str(text).map_err(|e| Error::ModelSyntax { origin: origin.to_string(), source: Box::new(e) })?;
        let d = &config.detectors;
        if [d.gmm_components, d.kmeans_clusters, d.pca_components, d.knn_neighbours].contains(&0) {
            return Err(bad("[detectors]: every count must be at least 1".into()));
        }
        if d.knn_reference <= d.knn_neighbours {
            return Err(bad("[detectors]: knn_reference must exceed knn_neighbours".into()));
        }
        if config.training.window_days == 0 || config.training.max_training_claims < 100 {
            return Err(bad("[training]: window_days must be at least 1 and max_training_claims at least 100".into()));
        }
        for (name, v) in
            [("referral_threshold", config.scores.referral_threshold), ("rule_floor", config.scores.rule_floor)]
        {
            if !(0.0..=1.0).contains(&v) {
                return Err(bad(format!("[scores]: {name} must be within [0, 1], got {v}")));
            }
        }
        for r in &config.scores.floor_rules {
            if !crate::RULES.contains(&r.as_str()) {
                return Err(bad(format!(
                    "[scores]: floor_rules names {r:?}; the rules are {}",
                    crate::RULES.join(", ")
                )));
            }
        }
        for (level, weights) in [("claim_weights", &d.claim_weights), ("provider_weights", &d.provider_weights)] {
            if let Some(name) = weights.keys().find(|k| !crate::detect::DETECTORS.contains(&k.as_str())) {
                return Err(bad(format!(
                    "[detectors] {level} names {name:?}; the detectors are {}",
                    crate::detect::DETECTORS.join(", ")
                )));
            }
            let ordered = Detectors::ordered(weights);
            if ordered.iter().any(|w| !w.is_finite() || *w < 0.0) || ordered.iter().sum::<f64>() <= 0.0 {
                return Err(bad(format!("[detectors] {level}: weights must be at least 0, and not all 0")));
            }
        }
        if let Some(t) = config.scores.duplicate_amount_tolerance
            && !(0.0..=1.0).contains(&t)
        {
            return Err(bad(format!("[scores]: duplicate_amount_tolerance must be within [0, 1], got {t}")));
        }
        if let Some(f) = config.scores.provider_risk_full
            && !(f > 0.0 && f <= 1.0)
        {
            return Err(bad(format!("[scores]: provider_risk_full must be above 0 and at most 1, got {f}")));
        }
        for b in &config.bundles {
            if b.components.len() < 2 {
                return Err(bad(format!("bundle {}: it needs at least two components", b.code)));
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_weighs_fully_at_a_provider_as_risky_as_provider_risk_full() {
        let mut scores = ScoringConfig::default_config().unwrap().scores;
        scores.provider_risk_full = Some(0.2);
        assert_eq!(scores.provider_factor(Some(0.0)), 0.5);
        assert_eq!(scores.provider_factor(Some(0.1)), 1.0);
        assert_eq!(scores.provider_factor(Some(0.2)), 1.5);
        assert_eq!(scores.provider_factor(Some(0.9)), 1.5);
        // No provider is neutral.
        assert_eq!(scores.provider_factor(None), 1.0);
        // A model stored before the setting weighs claims as it did.
        scores.provider_risk_full = None;
        assert_eq!(scores.provider_factor(Some(0.2)), 0.7);
        assert_eq!(scores.provider_factor(Some(1.0)), 1.5);
    }

    #[test]
    fn provider_risk_full_outside_its_range_is_refused() {
        let text = reference::models::SCORING.replace("provider_risk_full = 0.2", "provider_risk_full = 0.0");
        assert_ne!(text, reference::models::SCORING, "the default config sets provider_risk_full");
        let err = ScoringConfig::parse(&text, "test").unwrap_err().to_string();
        assert!(err.contains("provider_risk_full must be above 0"), "{err}");
    }
}
