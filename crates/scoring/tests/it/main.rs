//! Fraud scoring end to end: a synthetic insurer with injected fraud,
//! built through the facts, then trained, scored and evaluated the way the
//! nightly job and an investigator would.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{Duration, NaiveDate};
use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::datatypes::Float64Type;
use facts::FactOptions;
use scoring::{ScoringConfig, TrainReport, Training};
use storage::{RunKind, TableName, Warehouse};
use testkit::stages::through_facts;
use testkit::{rows, run, run_of};

/// A row's `(score, percentile, reasons, model)`, by id.
type Scores = BTreeMap<String, (f64, f64, Vec<String>, String)>;

/// `id -> (score, percentile, reasons, model)` of a scores table.
async fn scores(warehouse: &Warehouse, table: &str, id: &str) -> Scores {
    let mut out = BTreeMap::new();
    for b in rows(warehouse, table).await {
        let ids = b.column_by_name(id).unwrap().as_string::<i32>().clone();
        let score = b.column_by_name("score").unwrap().as_primitive::<Float64Type>().clone();
        let pct = b.column_by_name("percentile").unwrap().as_primitive::<Float64Type>().clone();
        let model = b.column_by_name("model_version").unwrap().as_string::<i32>().clone();
        let reasons: Vec<_> = ["reason_1", "reason_2", "reason_3"]
            .iter()
            .map(|r| b.column_by_name(r).unwrap().as_string::<i32>().clone())
            .collect();
        for i in 0..b.num_rows() {
            let rs = reasons.iter().filter(|r| r.is_valid(i)).map(|r| r.value(i).to_string()).collect();
            out.insert(ids.value(i).to_string(), (score.value(i), pct.value(i), rs, model.value(i).to_string()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn train_score_and_evaluate_a_synthetic_insurer() {
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    let generated =
        synth::Config { members: 3_000, days: 6, seed: 5, fraud_rate: 0.05, ..synth::Config::new(&landing) };
    synth::generate(&generated, &mut |_, _| {}).await.unwrap();
    let last = generated.start_date + Duration::days(i64::from(generated.days) - 1);
    let config = ScoringConfig::default_config().unwrap();
    let insurer = Insurer { dir: dir.path(), landing: &landing, first_day: generated.start_date, last, config };
    let (first, claims) = train_then_score(&insurer).await;
    a_second_warehouse_gives_the_same_model_and_scores(&insurer, &first, &claims).await;
    let (c, big) = night_by_night_the_grown_window_retrains(&insurer).await;
    an_older_features_revision_is_retrained(&insurer, &c, &big).await;
    a_short_window_trains_on_its_own_features(&insurer, &c, &big).await;
}

/// The synthetic insurer of [`train_score_and_evaluate_a_synthetic_insurer`]:
/// where its warehouses go, its landing, its first and last days, and the
/// default scoring model.
struct Insurer<'a> {
    dir: &'a Path,
    landing: &'a Path,
    first_day: NaiveDate,
    last: NaiveDate,
    config: ScoringConfig,
}

/// Warehouse `a`: scoring without a model fails, training stores one
/// (once), and scoring writes every claim and provider, ranking the
/// injected fraud high. Returns the model trained and the claims' scores.
async fn train_then_score(insurer: &Insurer<'_>) -> (TrainReport, Scores) {
    let Insurer { dir, landing, last, ref config, .. } = *insurer;
    let a = Warehouse::open(dir.join("a").to_str().unwrap()).unwrap();
    through_facts(&a, &run(1, last), landing, FactOptions::default()).await;

    // Scoring before any model is trained says what to do.
    let err = scoring::score(&a, &run_of(2, RunKind::Score, last), config, Training::Never).await.unwrap_err();
    assert!(err.to_string().contains("gold train"), "{err}");

    // Training stores a model; training again on the same facts and seed
    // gives the same model and writes nothing.
    let first = scoring::train(&a, &run_of(3, RunKind::Train, last), config).await.unwrap();
    assert!(first.written);
    assert_eq!(first.claim_features.len(), scoring::features::CLAIM_FEATURES.len());
    assert!(first.data_versions.contains_key("fact_claims"));
    // The member-provider ties read the medical events, so the model names
    // the version it read.
    assert!(first.data_versions.contains_key("fact_medical_events"), "{:?}", first.data_versions);
    let again = scoring::train(&a, &run_of(4, RunKind::Train, last), config).await.unwrap();
    assert_eq!(again.model_version, first.model_version);
    assert!(!again.written);
    assert_eq!(rows(&a, scoring::MODELS).await.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);

    // The stored artifact reads back bit for bit.
    let stored = scoring::current_model(&a, last).await.unwrap().unwrap();
    assert_eq!(stored.version, first.model_version);
    let json = stored.artifact.to_json().unwrap();
    let back = scoring::Artifact::from_json(&stored.version, &json).unwrap();
    let bits = |a: &scoring::Artifact| -> Vec<u64> {
        let d = &a.claims;
        d.gmm
            .means
            .iter()
            .flatten()
            .chain(d.gmm.precisions.iter().flatten().flatten())
            .chain(d.calibration.iter().flatten())
            .map(|f| f.to_bits())
            .collect()
    };
    assert_eq!(bits(&back), bits(&stored.artifact));
    assert_eq!(back, stored.artifact);

    // Scoring writes one row per claim and per provider.
    let report = scoring::score(&a, &run_of(5, RunKind::Score, last), config, Training::Never).await.unwrap();
    assert_eq!(report.model_version, first.model_version);
    let claims = scores(&a, scoring::FRAUD_SCORES, "claim_id").await;
    let fact_claims: usize = rows(&a, "fact_claims").await.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(claims.len(), fact_claims);
    assert!(
        claims
            .values()
            .all(|(s, p, _, m)| (0.0..=1.0).contains(s) && (0.0..=1.0).contains(p) && *m == first.model_version)
    );
    let providers = scores(&a, scoring::PROVIDER_RISK, "provider_id").await;
    assert_eq!(providers.len(), report.providers_scored);

    // Scoring again with nothing new writes nothing.
    let rerun = scoring::score(&a, &run_of(6, RunKind::Score, last), config, Training::Never).await.unwrap();
    assert!(rerun.up_to_date && rerun.claims_version.is_none());

    // The injected fraud ranks high, and rule hits say why.
    let labels = scoring::evaluate::read_labels(&landing.join("_truth/fraud_labels.csv")).unwrap();
    let eval = scoring::evaluate::evaluate(&a, &labels).await.unwrap();
    assert!(eval.claims.overall.positives > 50, "{:?}", eval.claims.overall);
    assert!(eval.claims.overall.roc_auc > 0.8, "claims {:?}", eval.claims.overall);
    assert!(eval.providers.overall.roc_auc > 0.8, "providers {:?}", eval.providers.overall);
    let duplicates: Vec<_> = labels.claims.iter().filter(|(_, p)| *p == "duplicate_billing").map(|(c, _)| c).collect();
    let named = duplicates
        .iter()
        .filter(|c| claims.get(**c).is_some_and(|(_, _, r, _)| r.iter().any(|r| r == "duplicate_billing")))
        .count();
    assert!(named * 2 >= duplicates.len(), "{named} of {} duplicate claims name duplicate_billing", duplicates.len());

    (first, claims)
}

/// Warehouse `b`, built from the same landing, trains the same model and
/// writes the same scores; a model trained later is not current before its
/// date.
async fn a_second_warehouse_gives_the_same_model_and_scores(
    insurer: &Insurer<'_>,
    first: &TrainReport,
    claims: &Scores,
) {
    let Insurer { dir, landing, last, ref config, .. } = *insurer;
    // A second warehouse built from the same landing trains the same model
    // and writes the same scores.
    let b = Warehouse::open(dir.join("b").to_str().unwrap()).unwrap();
    through_facts(&b, &run(1, last), landing, FactOptions::default()).await;
    let report_b = scoring::score(&b, &run_of(2, RunKind::Build, last), config, Training::WhenStale).await.unwrap();
    // It fits the features it computed for scoring (every claim is inside
    // the training window), and they give the model `gold train` fitted.
    let trained_b = report_b.trained.as_ref().expect("no model is current, so the build trains");
    assert_eq!(trained_b.model_version, first.model_version);
    assert!(trained_b.reused_features && !first.reused_features);
    let claims_b = &scores(&b, scoring::FRAUD_SCORES, "claim_id").await;
    assert!(claims == claims_b, "scores differ between two identical builds");

    // A model trained later is not current before its date.
    let earlier = last - Duration::days(2);
    let later = scoring::train(&b, &run_of(3, RunKind::Train, last + Duration::days(1)), config).await.unwrap();
    assert_ne!(later.model_version, first.model_version);
    assert_eq!(scoring::current_model(&b, last).await.unwrap().unwrap().version, first.model_version);
    assert_eq!(
        scoring::current_model(&b, last + Duration::days(1)).await.unwrap().unwrap().version,
        later.model_version
    );
    assert!(scoring::current_model(&b, earlier).await.unwrap().is_none());
}

/// Warehouse `c`, night by night. Returns it with the model trained once
/// the window had grown.
async fn night_by_night_the_grown_window_retrains(insurer: &Insurer<'_>) -> (Warehouse, TrainReport) {
    let Insurer { dir, landing, first_day, last, ref config } = *insurer;
    // Night by night from an empty warehouse: the first night's model is
    // fitted to one day of claims; once the window holds retrain_growth
    // times as many, the build's score stage trains a new one and scores
    // with it.
    let c = Warehouse::open(dir.join("c").to_str().unwrap()).unwrap();
    let day1 = first_day;
    through_facts(&c, &run(1, day1), landing, FactOptions::default()).await;
    let night1 = scoring::score(&c, &run_of(2, RunKind::Build, day1), config, Training::WhenStale).await.unwrap();
    let small = night1.trained.expect("the first night trains");
    through_facts(&c, &run(1, last), landing, FactOptions::default()).await;
    let growth = config.training.retrain_growth.expect("the default retrains on growth");
    let night6 = scoring::score(&c, &run_of(4, RunKind::Build, last), config, Training::WhenStale).await.unwrap();
    let big = night6.trained.expect("the grown window trains a new model");
    assert!(big.training_claims as f64 >= growth * small.training_claims as f64, "{big:?} after {small:?}");
    assert_eq!(night6.model_version, big.model_version);
    assert!(big.reused_features, "{big:?}");
    let fresh = scoring::train(&c, &run_of(4, RunKind::Train, last), config).await.unwrap();
    assert_eq!((fresh.model_version.as_str(), fresh.written), (big.model_version.as_str(), false));
    let claims_c = scores(&c, scoring::FRAUD_SCORES, "claim_id").await;
    assert!(claims_c.values().all(|(_, _, _, m)| *m == big.model_version));
    // Scoring again the same night neither trains nor writes.
    let again = scoring::score(&c, &run_of(5, RunKind::Build, last), config, Training::WhenStale).await.unwrap();
    assert!(again.trained.is_none() && again.up_to_date, "{again:?}");

    (c, big)
}

/// In warehouse `c`, whose current model is `big`.
async fn an_older_features_revision_is_retrained(insurer: &Insurer<'_>, c: &Warehouse, big: &TrainReport) {
    let Insurer { last, ref config, .. } = *insurer;
    // A model an older gold stored, fitted to features computed another way
    // (features revision 0), is not applied to today's features: the build
    // trains a current one and scores with it.
    let models = TableName::new(scoring::MODELS).unwrap();
    let old: Vec<RecordBatch> = rows(c, scoring::MODELS)
        .await
        .iter()
        .map(|b| {
            let (schema, mut columns) = (b.schema(), b.columns().to_vec());
            let mut retag = |name: &str, f: &dyn Fn(&str) -> String| {
                let at = schema.index_of(name).unwrap();
                let values: Vec<String> = columns[at].as_string::<i32>().iter().map(|v| f(v.unwrap())).collect();
                columns[at] = std::sync::Arc::new(deltalake::arrow::array::StringArray::from(values));
            };
            let revision = format!("\"features_revision\":{}", scoring::features::FEATURES_REVISION);
            retag("artifact", &|a| a.replace(&revision, "\"features_revision\":0"));
            retag("model_version", &|v| format!("{v}-old"));
            RecordBatch::try_new(schema.clone(), columns).unwrap()
        })
        .collect();
    c.overwrite(&models, old, &storage::Commit::new(&run_of(6, RunKind::Train, last), "older gold")).await.unwrap();
    let stale = scoring::current_model(c, last).await.unwrap().unwrap();
    assert_eq!((stale.version, stale.artifact.features_revision), (format!("{}-old", big.model_version), 0));
    let upgraded = scoring::score(c, &run_of(7, RunKind::Build, last), config, Training::WhenStale).await.unwrap();
    let retrained = upgraded.trained.expect("a model of an older features revision is retrained");
    assert_eq!(retrained.model_version, big.model_version, "the same facts and seed give the same model");
    let current = scoring::current_model(c, last).await.unwrap().unwrap();
    assert_eq!(current.artifact.features_revision, scoring::features::FEATURES_REVISION);
    assert_eq!(upgraded.model_version, big.model_version);
}

/// In warehouse `c`, whose current model is `big`.
async fn a_short_window_trains_on_its_own_features(insurer: &Insurer<'_>, c: &Warehouse, big: &TrainReport) {
    let Insurer { last, ref config, .. } = *insurer;
    // A window shorter than the warehouse's history leaves claims out of
    // training: the window's own features are computed, and give the model
    // `gold train` fits with the same settings.
    let mut short = config.clone();
    short.training.window_days = 3;
    short.training.retrain_after_days = 0;
    let night = scoring::score(c, &run_of(8, RunKind::Build, last), &short, Training::WhenStale).await.unwrap();
    let windowed = night.trained.expect("a model trained on this date is stale after 0 days");
    assert!(!windowed.reused_features && windowed.window_from == last - Duration::days(2), "{windowed:?}");
    assert!(windowed.training_claims < big.training_claims, "{windowed:?}");
    let fresh = scoring::train(c, &run_of(9, RunKind::Train, last), &short).await.unwrap();
    assert_eq!((fresh.model_version, fresh.written), (windowed.model_version, false));
}

#[test]
fn bad_labels_name_the_file_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("labels.csv");
    std::fs::write(&path, "claim_id,provider_id,pattern,intensity\nC1,P1,upcoding,low\nC2,P1,,low\n").unwrap();
    let err = scoring::evaluate::read_labels(&path).unwrap_err().to_string();
    assert!(err.contains("labels.csv") && err.contains("row 3") && err.contains("pattern"), "{err}");
    std::fs::write(&path, "claim,provider_id,pattern\nC1,P1,upcoding\n").unwrap();
    let err = scoring::evaluate::read_labels(&path).unwrap_err().to_string();
    assert!(err.contains("row 1") && err.contains("claim_id"), "{err}");
    let err = scoring::evaluate::read_labels(&dir.path().join("missing.csv")).unwrap_err().to_string();
    assert!(err.contains("missing.csv"), "{err}");
}

#[test]
fn a_bad_scoring_model_is_refused_with_its_origin() {
    let text = reference::models::SCORING.replace("kmeans_clusters = 8", "kmeans_clusters = 0");
    let err = ScoringConfig::parse(&text, "models/scoring.toml").unwrap_err().to_string();
    assert!(err.contains("models/scoring.toml") && err.contains("at least 1"), "{err}");
}
