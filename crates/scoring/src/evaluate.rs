//! `gold evaluate`: the stored scores against labels of injected fraud.
//!
//! Claim level: a claim is positive when the labels name it. Provider
//! level: a provider is positive when any labelled claim names it. For
//! each level: ROC-AUC, average precision (as scikit-learn computes it,
//! ties grouped) and precision@k with k the number of positives; per
//! pattern, its positives against every unlabelled row, and the share of
//! them within the overall top k.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::datatypes::Float64Type;
use serde::Serialize;
use storage::{TableName, Warehouse};

use crate::{Error, FRAUD_SCORES, PROVIDER_RISK, Result};

/// The labels file: `claim_id,provider_id,pattern,intensity`.
#[derive(Debug, Default)]
pub struct Labels {
    /// Each labelled claim's pattern, by claim id.
    pub claims: HashMap<String, String>,
    /// The patterns of each provider's labelled claims, by provider id.
    pub providers: HashMap<String, BTreeSet<String>>,
}

/// Reads the labels file at `path`.
pub fn read_labels(path: &Path) -> Result<Labels> {
    let file = path.display().to_string();
    let bad = |row: u64, reason: String| Error::Labels { file: file.clone(), row, reason };
    let unreadable = |row: u64, source: csv::Error| Error::LabelsFile { file: file.clone(), row, source };
    let mut reader = csv::Reader::from_path(path).map_err(|e| unreadable(0, e))?;
    let headers = reader.headers().map_err(|e| unreadable(1, e))?.clone();
    let at = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| bad(1, format!("no column {name:?} in the header")))
    };
    let (claim, provider, pattern) = (at("claim_id")?, at("provider_id")?, at("pattern")?);
    let mut labels = Labels::default();
    for (i, record) in reader.records().enumerate() {
        let row = i as u64 + 2;
        let record = record.map_err(|e| unreadable(row, e))?;
        let field = |j: usize, name: &str| {
            record.get(j).filter(|v| !v.is_empty()).ok_or_else(|| bad(row, format!("column {name:?} is empty")))
        };
        let (c, p, pat) = (field(claim, "claim_id")?, field(provider, "provider_id")?, field(pattern, "pattern")?);
        labels.claims.insert(c.to_string(), pat.to_string());
        labels.providers.entry(p.to_string()).or_default().insert(pat.to_string());
    }
    Ok(labels)
}

/// Ranking quality of scores against binary labels.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Metrics {
    /// Rows scored.
    pub rows: usize,
    /// Labelled rows among them.
    pub positives: usize,
    /// ROC-AUC.
    pub roc_auc: f64,
    /// Average precision.
    pub average_precision: f64,
    /// k = the number of positives.
    pub k: usize,
    /// The share of positives among the k highest scores.
    pub precision_at_k: f64,
}

/// Ranking quality of one fraud pattern's positives against every
/// unlabelled row.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PatternMetrics {
    /// Rows of this pattern.
    pub positives: usize,
    /// ROC-AUC.
    pub roc_auc: f64,
    /// Average precision.
    pub average_precision: f64,
    /// Share of this pattern's positives within the overall top k.
    pub recall_at_k: f64,
}

/// The evaluation of one level, claims or providers.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LevelReport {
    /// Every labelled row against every other.
    pub overall: Metrics,
    /// Each pattern's rows against the unlabelled ones.
    pub per_pattern: BTreeMap<String, PatternMetrics>,
    /// Labelled ids with no score (not in the facts, e.g. quarantined).
    pub labels_not_scored: usize,
}

/// What [`evaluate`] found.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Evaluation {
    /// The model that wrote the scores.
    pub model_version: Option<String>,
    /// The claims' evaluation.
    pub claims: LevelReport,
    /// The providers' evaluation.
    pub providers: LevelReport,
}

/// ROC-AUC with ties counted half (the Mann-Whitney statistic).
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> f64 {
    let pos = labels.iter().filter(|l| **l).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return f64::NAN;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += order[i..=j].iter().filter(|&&o| labels[o]).count() as f64 * avg_rank;
        i = j + 1;
    }
    (rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos as f64 * neg as f64)
}

/// Average precision: the precision at each distinct score threshold,
/// weighted by the recall it adds (scikit-learn's definition).
pub fn average_precision(scores: &[f64], labels: &[bool]) -> f64 {
    let pos = labels.iter().filter(|l| **l).count();
    if pos == 0 {
        return f64::NAN;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut seen, mut ap, mut last_recall) = (0usize, 0usize, 0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        tp += order[i..=j].iter().filter(|&&o| labels[o]).count();
        seen += j - i + 1;
        let recall = tp as f64 / pos as f64;
        ap += (recall - last_recall) * tp as f64 / seen as f64;
        last_recall = recall;
        i = j + 1;
    }
    ap
}

/// The indices of the `k` highest scores (ties by index, for determinism).
fn top_k(scores: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

/// The [`Metrics`] of `scores` against `labels`.
pub fn metrics(scores: &[f64], labels: &[bool]) -> Metrics {
    let positives = labels.iter().filter(|l| **l).count();
    let top = top_k(scores, positives);
    let hits = top.iter().filter(|&&i| labels[i]).count();
    Metrics {
        rows: scores.len(),
        positives,
        roc_auc: roc_auc(scores, labels),
        average_precision: average_precision(scores, labels),
        k: positives,
        precision_at_k: if positives == 0 { f64::NAN } else { hits as f64 / positives as f64 },
    }
}

/// The report of one level, from scores and each row's patterns (empty
/// for an unlabelled row).
pub fn level_report(scores: &[f64], patterns: &[BTreeSet<String>], labels_not_scored: usize) -> LevelReport {
    let labels: Vec<bool> = patterns.iter().map(|p| !p.is_empty()).collect();
    let overall = metrics(scores, &labels);
    let top: BTreeSet<usize> = top_k(scores, overall.positives).into_iter().collect();
    let names: BTreeSet<&String> = patterns.iter().flatten().collect();
    let per_pattern = names
        .into_iter()
        .map(|name| {
            let rows: Vec<usize> =
                (0..scores.len()).filter(|&i| patterns[i].is_empty() || patterns[i].contains(name)).collect();
            let s: Vec<f64> = rows.iter().map(|&i| scores[i]).collect();
            let l: Vec<bool> = rows.iter().map(|&i| patterns[i].contains(name)).collect();
            let positives: Vec<usize> = rows.iter().copied().filter(|&i| patterns[i].contains(name)).collect();
            let found = positives.iter().filter(|i| top.contains(i)).count();
            let m = PatternMetrics {
                positives: positives.len(),
                roc_auc: roc_auc(&s, &l),
                average_precision: average_precision(&s, &l),
                recall_at_k: found as f64 / positives.len().max(1) as f64,
            };
            (name.clone(), m)
        })
        .collect();
    LevelReport { overall, per_pattern, labels_not_scored }
}

/// Ids and scores of a scores table.
async fn scores_of(warehouse: &Warehouse, table: &str, id: &str) -> Result<(Vec<String>, Vec<f64>, Option<String>)> {
    let name = TableName::new(table)?;
    if warehouse.load(&name).await?.is_none() {
        return Err(Error::MissingInput(table.to_string()));
    }
    let (mut ids, mut scores, mut model) = (Vec::new(), Vec::new(), None);
    for b in warehouse.scan_columns(&name, None, &[id, "score", "model_version"]).await? {
        let i = b.column(0).as_string::<i32>();
        let s = b.column(1).as_primitive::<Float64Type>();
        let m = b.column(2).as_string::<i32>();
        for r in 0..b.num_rows() {
            ids.push(i.value(r).to_string());
            scores.push(s.value(r));
            if model.is_none() && m.is_valid(r) {
                model = Some(m.value(r).to_string());
            }
        }
    }
    Ok((ids, scores, model))
}

/// Evaluates the current `gold_fraud_scores` and `gold_provider_risk`
/// against `labels`.
pub async fn evaluate(warehouse: &Warehouse, labels: &Labels) -> Result<Evaluation> {
    let (claim_ids, claim_scores, model) = scores_of(warehouse, FRAUD_SCORES, "claim_id").await?;
    let (provider_ids, provider_scores, _) = scores_of(warehouse, PROVIDER_RISK, "provider_id").await?;
    let claim_patterns: Vec<BTreeSet<String>> = claim_ids
        .iter()
        .map(|id| labels.claims.get(id).map(|p| BTreeSet::from([p.clone()])).unwrap_or_default())
        .collect();
    let scored: std::collections::HashSet<&String> = claim_ids.iter().collect();
    let claims_missing = labels.claims.keys().filter(|id| !scored.contains(id)).count();
    let provider_patterns: Vec<BTreeSet<String>> =
        provider_ids.iter().map(|id| labels.providers.get(id).cloned().unwrap_or_default()).collect();
    let scored: std::collections::HashSet<&String> = provider_ids.iter().collect();
    let providers_missing = labels.providers.keys().filter(|id| !scored.contains(id)).count();
    Ok(Evaluation {
        model_version: model,
        claims: level_report(&claim_scores, &claim_patterns, claims_missing),
        providers: level_report(&provider_scores, &provider_patterns, providers_missing),
    })
}

/// Writes `claims.csv` and `providers.csv` into `dir`: each row's id, its
/// label and pattern, gold's stored score, the features gold computed and
/// each detector's percentile under `model`, for a side-by-side baseline on
/// exactly the same rows and features.
pub async fn export_features(
    warehouse: &Warehouse,
    model: &crate::StoredModel,
    to: chrono::NaiveDate,
    labels: &Labels,
    dir: &Path,
) -> Result<(usize, usize)> {
    let window = crate::features::Window { from_key: -1, to_key: crate::date_key(to) };
    let versions = crate::features::input_versions(warehouse).await?;
    let set = crate::features::compute(warehouse, &model.artifact.config, window, versions).await?;
    let claim_scores_by =
        model.artifact.claims.score(model.claim_inputs(&set.claims.values)?.view(), &model.artifact.claim_weights())?;
    let provider_scores_by = model
        .artifact
        .providers
        .score(model.provider_inputs(&set.providers.values)?.view(), &model.artifact.provider_weights())?;
    let (ids, scores, _) = scores_of(warehouse, FRAUD_SCORES, "claim_id").await?;
    let claim_scores: HashMap<String, f64> = ids.into_iter().zip(scores).collect();
    let (ids, scores, _) = scores_of(warehouse, PROVIDER_RISK, "provider_id").await?;
    let provider_scores: HashMap<String, f64> = ids.into_iter().zip(scores).collect();
    std::fs::create_dir_all(dir).map_err(|e| Error::Export { file: dir.display().to_string(), source: e.into() })?;
    let detectors: Vec<String> = ["percentile", "tail"]
        .iter()
        .flat_map(|what| crate::detect::DETECTORS.iter().map(move |d| format!("{what}_{d}")))
        .collect();
    let numbers = |values: ndarray::ArrayView1<'_, f64>| values.iter().map(|v| v.to_string()).collect::<Vec<_>>();
    let score_text = |s: Option<&f64>| s.map_or_else(String::new, |s| s.to_string());

    let c = &set.claims;
    let mut header = vec!["claim_id", "provider_id", "amount", "status", "label", "pattern", "gold_score"];
    header.extend(crate::features::CLAIM_FEATURES);
    header.extend(detectors.iter().map(String::as_str));
    let rows = (0..c.claim_id.len()).map(|i| {
        let pattern = labels.claims.get(&c.claim_id[i]).cloned().unwrap_or_default();
        let mut row = vec![
            c.claim_id[i].clone(),
            c.provider_id[i].clone(),
            c.amount[i].to_string(),
            c.status[i].clone(),
            u8::from(!pattern.is_empty()).to_string(),
            pattern,
            score_text(claim_scores.get(&c.claim_id[i])),
        ];
        row.extend(numbers(c.values.row(i)));
        row.extend(numbers(claim_scores_by.percentile.row(i)));
        row.extend(numbers(claim_scores_by.tail.row(i)));
        row
    });
    write_csv(&dir.join("claims.csv"), &header, rows)?;

    let p = &set.providers;
    let mut header = vec!["provider_id", "label", "pattern", "gold_score"];
    header.extend(crate::features::PROVIDER_FEATURES);
    header.extend(detectors.iter().map(String::as_str));
    let rows = (0..p.provider_id.len()).map(|i| {
        let patterns = labels
            .providers
            .get(&p.provider_id[i])
            .map(|s| s.iter().cloned().collect::<Vec<_>>().join(";"))
            .unwrap_or_default();
        let mut row = vec![
            p.provider_id[i].clone(),
            u8::from(!patterns.is_empty()).to_string(),
            patterns,
            score_text(provider_scores.get(&p.provider_id[i])),
        ];
        row.extend(numbers(p.values.row(i)));
        row.extend(numbers(provider_scores_by.percentile.row(i)));
        row.extend(numbers(provider_scores_by.tail.row(i)));
        row
    });
    write_csv(&dir.join("providers.csv"), &header, rows)?;
    Ok((c.claim_id.len(), p.provider_id.len()))
}

/// Writes `header` and `rows` to `file` as CSV.
fn write_csv(file: &Path, header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> Result<()> {
    let err = |e: csv::Error| Error::Export { file: file.display().to_string(), source: e };
    let mut w = csv::Writer::from_path(file).map_err(err)?;
    w.write_record(header).map_err(err)?;
    for row in rows {
        w.write_record(&row).map_err(err)?;
    }
    w.flush().map_err(|e| err(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_hand_computed_values() {
        // scikit-learn: roc_auc_score([0,0,1,1],[0.1,0.4,0.35,0.8]) = 0.75,
        // average_precision_score(...) = 0.8333...
        let s = [0.1, 0.4, 0.35, 0.8];
        let l = [false, false, true, true];
        assert!((roc_auc(&s, &l) - 0.75).abs() < 1e-12);
        assert!((average_precision(&s, &l) - 5.0 / 6.0).abs() < 1e-12);
        let m = metrics(&s, &l);
        assert_eq!((m.k, m.precision_at_k), (2, 0.5));
        // Ties count half, and a constant score says nothing.
        assert!((roc_auc(&[0.5; 4], &l) - 0.5).abs() < 1e-12);
        assert!((average_precision(&[0.5; 4], &l) - 0.5).abs() < 1e-12);
    }
}
