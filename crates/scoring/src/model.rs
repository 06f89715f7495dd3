//! Model artifacts and the `gold_fraud_models` table.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::NaiveDate;
use deltalake::arrow::array::{Array, AsArray, Date32Array, Int64Array, RecordBatch, StringArray};
use deltalake::arrow::datatypes::{DataType, Date32Type, Field, Int64Type, Schema};
use ndarray::{Array2, Axis};
use serde::{Deserialize, Serialize};
use storage::{Commit, RunContext, TableName, Warehouse};

use crate::config::ScoringConfig;
use crate::detect::DetectorSet;
use crate::{Error, MODELS, Result};

/// Everything needed to score: the policy and detector settings it was
/// trained with, the feature lists and every fitted parameter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// The scoring model it was trained with.
    pub config: ScoringConfig,
    /// The first service date of its training window.
    pub window_from: NaiveDate,
    /// The last service date of its training window.
    pub window_to: NaiveDate,
    /// The claim features it was fitted on, in its column order.
    pub claim_features: Vec<String>,
    /// The provider features it was fitted on, in its column order.
    pub provider_features: Vec<String>,
    /// [`crate::features::FEATURES_REVISION`] when the model was trained (0
    /// for models trained before revisions were recorded).
    #[serde(default)]
    pub features_revision: u32,
    /// The detectors fitted on the claims.
    pub claims: DetectorSet,
    /// The detectors fitted on the providers.
    pub providers: DetectorSet,
}

impl Artifact {
    /// The claim detectors' weights in the combined score, from the config
    /// the model was trained with (every detector 1 in a model trained
    /// before weights existed).
    pub fn claim_weights(&self) -> Vec<f64> {
        crate::config::Detectors::ordered(&self.config.detectors.claim_weights)
    }

    /// The same for providers.
    pub fn provider_weights(&self) -> Vec<f64> {
        crate::config::Detectors::ordered(&self.config.detectors.provider_weights)
    }

    /// The artifact as stored. serde_json writes the shortest decimal that
    /// reads back to the same f64, and reads it back exactly (the
    /// `float_roundtrip` feature), so every parameter round-trips bit for bit.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| Error::ArtifactJson { version: "(new)".into(), source: e })
    }

    /// The artifact of model `version`, as [`Self::to_json`] stored it.
    pub fn from_json(version: &str, text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::ArtifactJson { version: version.to_string(), source: e })
    }
}

/// A trained model as `gold_fraud_models` holds it.
#[derive(Clone, Debug)]
pub struct StoredModel {
    /// `fm-` and the first 16 hex digits of the artifact's BLAKE3.
    pub version: String,
    /// The run date it was trained for; it is current from then on.
    pub trained_for: NaiveDate,
    /// The run that trained it.
    pub run_id: i64,
    /// The version of each input table its features were computed from.
    pub data_versions: BTreeMap<String, i64>,
    /// The claims it was trained on.
    pub training_claims: usize,
    /// The providers it was trained on.
    pub training_providers: usize,
    /// Its settings and fitted parameters.
    pub artifact: Artifact,
}

impl StoredModel {
    /// The claim feature columns of `values` (this gold's
    /// [`crate::features::CLAIM_FEATURES`]) that the model was fitted on.
    pub fn claim_inputs<'a>(&self, values: &'a Array2<f64>) -> Result<Cow<'a, Array2<f64>>> {
        fitted_columns(&self.version, &self.artifact.claim_features, &crate::features::CLAIM_FEATURES, values)
    }

    /// The same for providers.
    pub fn provider_inputs<'a>(&self, values: &'a Array2<f64>) -> Result<Cow<'a, Array2<f64>>> {
        fitted_columns(&self.version, &self.artifact.provider_features, &crate::features::PROVIDER_FEATURES, values)
    }

    /// The model of `artifact`, its version a digest of the artifact.
    pub fn new(
        artifact: Artifact,
        trained_for: NaiveDate,
        run_id: i64,
        data_versions: BTreeMap<String, i64>,
        training_claims: usize,
        training_providers: usize,
    ) -> Result<Self> {
        let json = artifact.to_json()?;
        let version = format!("fm-{}", &blake3::hash(json.as_bytes()).to_hex()[..16]);
        Ok(Self { version, trained_for, run_id, data_versions, training_claims, training_providers, artifact })
    }
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("model_version", DataType::Utf8, false),
        Field::new("trained_for", DataType::Date32, false),
        Field::new("run_id", DataType::Int64, false),
        Field::new("window_from", DataType::Date32, false),
        Field::new("window_to", DataType::Date32, false),
        Field::new("seed", DataType::Utf8, false),
        Field::new("training_claims", DataType::Int64, false),
        Field::new("training_providers", DataType::Int64, false),
        Field::new("data_versions", DataType::Utf8, false),
        Field::new("claim_features", DataType::Utf8, false),
        Field::new("provider_features", DataType::Utf8, false),
        Field::new("artifact", DataType::Utf8, false),
    ]))
}

fn days(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
}

/// Appends `model` unless a model of the same version is stored already;
/// returns the table version written, if any.
pub(crate) async fn store(warehouse: &Warehouse, run: &RunContext, model: &StoredModel) -> Result<Option<i64>> {
    let name = TableName::new(MODELS)?;
    if stored(warehouse).await?.iter().any(|m| m.version == model.version) {
        return Ok(None);
    }
    let a = &model.artifact;
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(vec![model.version.as_str()])),
            Arc::new(Date32Array::from(vec![days(model.trained_for)])),
            Arc::new(Int64Array::from(vec![model.run_id])),
            Arc::new(Date32Array::from(vec![days(a.window_from)])),
            Arc::new(Date32Array::from(vec![days(a.window_to)])),
            Arc::new(StringArray::from(vec![a.config.training.seed.to_string()])),
            Arc::new(Int64Array::from(vec![model.training_claims as i64])),
            Arc::new(Int64Array::from(vec![model.training_providers as i64])),
            Arc::new(StringArray::from(vec![json(&model.data_versions)])),
            Arc::new(StringArray::from(vec![json(&a.claim_features)])),
            Arc::new(StringArray::from(vec![json(&a.provider_features)])),
            Arc::new(StringArray::from(vec![a.to_json()?])),
        ],
    )
    .map_err(|e| Error::arrow(MODELS, e))?;
    let commit = Commit::new(run, "train").with_metadata("model_version", serde_json::json!(model.version));
    Ok(Some(warehouse.append(&name, vec![batch], &commit).await?))
}

/// A value written as a JSON text column (maps and string lists, which
/// always serialize).
fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// A row of `gold_fraud_models`, its artifact not parsed yet (a model
/// written by an older gold may not parse; only the one used must).
struct ModelRow {
    version: String,
    trained_for: NaiveDate,
    run_id: i64,
    data_versions: String,
    training_claims: usize,
    training_providers: usize,
    artifact: String,
}

/// Every stored model, oldest first.
async fn stored(warehouse: &Warehouse) -> Result<Vec<ModelRow>> {
    let name = TableName::new(MODELS)?;
    if warehouse.load(&name).await?.is_none() {
        return Ok(Vec::new());
    }
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
    let mut out = Vec::new();
    for b in warehouse.scan(&name, None).await? {
        let col = |c: &str| {
            b.column_by_name(c)
                .ok_or_else(|| Error::Column { column: c.to_string(), reason: format!("is missing from {MODELS}") })
        };
        let version = col("model_version")?.as_string::<i32>().clone();
        let trained_for = col("trained_for")?.as_primitive::<Date32Type>().clone();
        let run_id = col("run_id")?.as_primitive::<Int64Type>().clone();
        let claims = col("training_claims")?.as_primitive::<Int64Type>().clone();
        let providers = col("training_providers")?.as_primitive::<Int64Type>().clone();
        let versions = col("data_versions")?.as_string::<i32>().clone();
        let artifact = col("artifact")?.as_string::<i32>().clone();
        for i in 0..b.num_rows() {
            if !version.is_valid(i) || !artifact.is_valid(i) {
                continue;
            }
            out.push(ModelRow {
                version: version.value(i).to_string(),
                trained_for: epoch + chrono::Duration::days(i64::from(trained_for.value(i))),
                run_id: run_id.value(i),
                data_versions: versions.value(i).to_string(),
                training_claims: claims.value(i) as usize,
                training_providers: providers.value(i) as usize,
                artifact: artifact.value(i).to_string(),
            });
        }
    }
    out.sort_by_key(|m| (m.trained_for, m.run_id));
    Ok(out)
}

/// The model current on `date`: the newest trained for that date or
/// before it.
pub async fn current_model(warehouse: &Warehouse, date: NaiveDate) -> Result<Option<StoredModel>> {
    let Some(row) = stored(warehouse).await?.into_iter().rev().find(|m| m.trained_for <= date) else {
        return Ok(None);
    };
    let data_versions = serde_json::from_str(&row.data_versions)
        .map_err(|e| Error::DataVersions { version: row.version.clone(), source: e })?;
    Ok(Some(StoredModel {
        trained_for: row.trained_for,
        run_id: row.run_id,
        data_versions,
        training_claims: row.training_claims,
        training_providers: row.training_providers,
        artifact: Artifact::from_json(&row.version, &row.artifact)?,
        version: row.version,
    }))
}

/// The columns of `values` (features named `names`) a model was
/// fitted on (`fitted`), in its order: all of them as they are for a
/// model of this gold's features, and only the ones it knows for a
/// model trained before a feature was added. A feature it was fitted on
/// that this gold no longer computes is an error.
fn fitted_columns<'a>(
    version: &str,
    fitted: &[String],
    names: &[&str],
    values: &'a Array2<f64>,
) -> Result<Cow<'a, Array2<f64>>> {
    if fitted.iter().map(String::as_str).eq(names.iter().copied()) {
        return Ok(Cow::Borrowed(values));
    }
    let columns = fitted
        .iter()
        .map(|f| {
            names.iter().position(|n| n == f).ok_or_else(|| Error::Artifact {
                version: version.to_string(),
                reason: format!(
                    "it was fitted on feature {f}, which this gold does not compute; train a model (gold train)"
                ),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Cow::Owned(values.select(Axis(1), &columns)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_is_given_the_features_it_was_fitted_on_by_name() {
        let names = ["a", "b", "c"];
        let values = Array2::from_shape_vec((2, 3), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let all: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        assert!(matches!(fitted_columns("m", &all, &names, &values).unwrap(), Cow::Borrowed(_)));
        // A model trained before feature b was added.
        let older = vec!["a".to_string(), "c".to_string()];
        let x = fitted_columns("m", &older, &names, &values).unwrap();
        assert_eq!(x.as_ref(), &Array2::from_shape_vec((2, 2), vec![1.0, 3.0, 4.0, 6.0]).unwrap());
        // A feature this gold no longer computes.
        let gone = vec!["a".to_string(), "z".to_string()];
        let e = fitted_columns("fm-1", &gone, &names, &values).unwrap_err().to_string();
        assert!(e.contains("fm-1") && e.contains("feature z"), "{e}");
    }
}
