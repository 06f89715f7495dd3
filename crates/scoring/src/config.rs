//! `models/scoring.toml`: the payer policy the features and rules read,
//! and the detector settings.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The scoring model built into gold.
pub const DEFAULT_SCORING: &str = include_str!("../../../models/scoring.toml");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringConfig {
    pub training: Training,
    pub detectors: Detectors,
    pub scores: Scores,
    #[serde(default, rename = "bundle")]
    pub bundles: Vec<Bundle>,
    #[serde(default)]
    pub em_levels: BTreeMap<String, i32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Training {
    pub window_days: u32,
    pub seed: u64,
    pub max_training_claims: usize,
    pub retrain_after_days: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detectors {
    pub gmm_components: usize,
    pub kmeans_clusters: usize,
    pub pca_components: usize,
    pub knn_neighbours: usize,
    pub knn_reference: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scores {
    pub referral_threshold: f64,
    pub rule_floor: f64,
    /// The rules whose hit lifts a claim's score to `rule_floor`; the
    /// others are reasons and features only.
    pub floor_rules: Vec<String>,
}

/// A code and the component codes it bundles.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub code: String,
    pub components: Vec<String>,
}

impl ScoringConfig {
    pub fn default_config() -> Result<Self> {
        Self::parse(DEFAULT_SCORING, "embedded models/scoring.toml")
    }

    /// `scoring.toml` at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Model { origin: path.display().to_string(), reason: e.to_string() })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let bad = |reason: String| Error::Model { origin: origin.to_string(), reason };
        let config: Self = toml::from_str(text).map_err(|e| bad(e.to_string().trim_end().to_string()))?;
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
        for b in &config.bundles {
            if b.components.len() < 2 {
                return Err(bad(format!("bundle {}: it needs at least two components", b.code)));
            }
        }
        Ok(config)
    }
}
