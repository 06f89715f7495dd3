//! The anomaly detectors, fitted with linfa and applied from their stored
//! parameters: Gaussian-mixture negative log-likelihood, distance to the
//! nearest k-means centroid, PCA reconstruction error and the mean distance
//! to the k nearest training points (linfa-nn), and one without linfa: how
//! far a row's features go beyond their own training tails, summed
//! ([`Excess`]), so that fraud showing in one or two features is not
//! averaged away by the geometry of the others. Each detector's raw score
//! is measured in the tail of its training distribution: 0 at the training
//! median, 1 at the training 99th percentile, and on beyond it. A row's
//! combined score is the weighted mean of those (the weights are the
//! model's), so a row far out keeps its lead over a row merely out, where
//! percentiles would tie them both near 1. Each detector's percentile is
//! kept too, for the export and for people.

use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_clustering::{GaussianMixtureModel, GmmCovarType, GmmInitMethod, KMeans, KMeansInit};
use linfa_linalg::eigh::Eigh;
use linfa_nn::distance::{Distance, L2Dist};
use ndarray::{Array2, ArrayView, ArrayView1, ArrayView2, Axis, Dimension};
use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::Detectors;
use crate::knn::{KnnIndex, Search};
use crate::{Error, Result};

/// linfa-nn's Euclidean distance ([`L2Dist`]) over contiguous rows as plain
/// slices. `L2Dist` goes through ndarray-stats' shape-checked `Zip` for
/// every pair, and in 17 dimensions that overhead was most of the k-nearest
/// search (a fifth of the day-2 score stage's CPU). The squared distance is
/// summed in index order as ndarray-stats sums it, and the distance is its
/// square root, so every distance, and so every neighbour and score, is the
/// same to the bit; rows that are not contiguous go to `L2Dist` itself.
/// k-means is fitted with it too, with the same centroids.
#[derive(Clone, Copy, Debug)]
struct RowL2;

impl Distance<f64> for RowL2 {
    #[inline]
    fn distance<D: Dimension>(&self, a: ArrayView<'_, f64, D>, b: ArrayView<'_, f64, D>) -> f64 {
        self.rdistance(a, b).sqrt()
    }

    #[inline]
    fn rdistance<D: Dimension>(&self, a: ArrayView<'_, f64, D>, b: ArrayView<'_, f64, D>) -> f64 {
        match (a.as_slice(), b.as_slice()) {
            (Some(x), Some(y)) if x.len() == y.len() => {
                let mut sum = 0.0;
                for (p, q) in x.iter().zip(y) {
                    let d = p - q;
                    sum += d * d;
                }
                sum
            }
            _ => L2Dist.rdistance(a, b),
        }
    }

    #[inline]
    fn rdist_to_dist(&self, rdist: f64) -> f64 {
        L2Dist.rdist_to_dist(rdist)
    }

    #[inline]
    fn dist_to_rdist(&self, dist: f64) -> f64 {
        L2Dist.dist_to_rdist(dist)
    }
}

/// The detectors, in the order of their score columns.
pub const DETECTORS: [&str; 5] = ["gmm_nll", "kmeans_distance", "pca_reconstruction", "knn_distance", "feature_excess"];

/// The training quantile that marks the end of a feature's ordinary range
/// for [`Excess`].
const EXCESS_QUANTILE: f64 = 0.995;
/// The smallest ordinary range of a feature above its median, in the
/// features' robust z units: a feature at its median for 99.5% of the rows
/// (most claims are no duplicate) would otherwise make any value
/// infinitely far out.
const EXCESS_FLOOR: f64 = 1.0;

/// Points of each detector's training-score distribution kept for
/// calibration.
const CALIBRATION_POINTS: usize = 1001;

/// What [`DetectorSet::score`] gives each row: `rows x DETECTORS` for the
/// percentile and tail score.
#[derive(Debug)]
pub struct Scores {
    /// Each row's combined anomaly score.
    pub combined: Vec<f64>,
    /// Each row's percentile under each detector.
    pub percentile: Array2<f64>,
    /// Each row's tail score under each detector.
    pub tail: Array2<f64>,
}

/// Every detector's parameters, fitted on one feature matrix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectorSet {
    /// The number of features.
    pub dims: usize,
    /// The Gaussian mixture.
    pub gmm: Gmm,
    /// The k-means centroids.
    pub kmeans_centroids: Vec<Vec<f64>>,
    /// The principal components.
    pub pca: PcaModel,
    /// The k-nearest-neighbour reference rows.
    pub knn: Knn,
    /// Absent from models stored before the detector existed; such a model
    /// has no calibration for it, so it neither scores nor weighs.
    #[serde(default)]
    pub excess: Excess,
    /// Per detector, sorted quantiles of its training scores.
    pub calibration: Vec<Vec<f64>>,
}

/// A Gaussian mixture with full covariances.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gmm {
    /// Each component's weight.
    pub weights: Vec<f64>,
    /// Each component's mean.
    pub means: Vec<Vec<f64>>,
    /// Each component's precision (inverse covariance) matrix.
    pub precisions: Vec<Vec<Vec<f64>>>,
    /// ln det of each precision matrix.
    pub log_dets: Vec<f64>,
}

/// Principal component analysis: a row's error is its distance to its
/// projection on the components.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PcaModel {
    /// The training mean.
    pub mean: Vec<f64>,
    /// The principal components, each a unit vector.
    pub components: Vec<Vec<f64>>,
}

/// The mean distance to the k nearest reference rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Knn {
    /// How many neighbours.
    pub k: usize,
    /// The reference rows: a seeded sample of the training rows.
    pub reference: Vec<Vec<f64>>,
}

/// Each feature's training median and ordinary range: the distance from
/// the median to the `EXCESS_QUANTILE` quantile, at least
/// `EXCESS_FLOOR`. A row's raw score is the sum, over its features, of
/// how many ranges each lies beyond the end of its ordinary range (0 for a
/// feature inside it). A claim whose one feature is twice as far out as
/// any ordinary claim's scores high even when every other feature is
/// ordinary and the distance-based detectors see little.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Excess {
    /// Each feature's training median.
    pub median: Vec<f64>,
    /// Each feature's ordinary range above its median.
    pub range: Vec<f64>,
}

impl Excess {
    fn fit(x: &Array2<f64>) -> Self {
        let (mut median, mut range) = (Vec::new(), Vec::new());
        for col in x.axis_iter(Axis(1)) {
            let mut v = col.to_vec();
            v.sort_by(f64::total_cmp);
            let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
            median.push(at(0.5));
            range.push((at(EXCESS_QUANTILE) - at(0.5)).max(EXCESS_FLOOR));
        }
        Self { median, range }
    }

    fn score(&self, x: ArrayView1<'_, f64>) -> f64 {
        x.iter().zip(self.median.iter().zip(&self.range)).map(|(v, (m, r))| ((v - m) / r - 1.0).max(0.0)).sum()
    }
}

fn rows(a: &Array2<f64>) -> Vec<Vec<f64>> {
    a.outer_iter().map(|r| r.to_vec()).collect()
}

fn matrix(rows: &[Vec<f64>], dims: usize) -> Array2<f64> {
    let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Array2::from_shape_vec((rows.len(), dims), flat).unwrap_or_else(|_| Array2::zeros((0, dims)))
}

/// ln det of a symmetric positive-definite matrix, by Cholesky.
fn log_det_spd(m: &[Vec<f64>]) -> Option<f64> {
    let n = m.len();
    let mut l = vec![vec![0.0; n]; n];
    let mut log_det = 0.0;
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let d = m[i][i] - s;
                if d <= 0.0 || !d.is_finite() {
                    return None;
                }
                l[i][j] = d.sqrt();
                log_det += 2.0 * l[i][j].ln();
            } else {
                l[i][j] = (m[i][j] - s) / l[j][j];
            }
        }
    }
    Some(log_det)
}

/// The column means of `x`, and the sum over its rows of each centred
/// row's outer product (the covariance times the row count).
fn scatter(x: &Array2<f64>) -> (ndarray::Array1<f64>, Array2<f64>) {
    let mean = x.mean_axis(Axis(0)).unwrap_or_else(|| ndarray::Array1::zeros(x.ncols()));
    let centred = x - &mean;
    let scatter = centred.t().dot(&centred);
    (mean, scatter)
}

/// Principal components of `x`: the `k` eigenvectors of its covariance
/// matrix with the largest eigenvalues (ties in column order), from
/// linfa-linalg's dense symmetric eigen-solver. linfa-reduction's `Pca`
/// uses a randomised LOBPCG, which breaks down (NaN, then a panic) when
/// features are constant or collinear, as a single day's providers at a
/// million members are; the covariance is only features x features.
fn fit_pca(x: &Array2<f64>, k: usize) -> std::result::Result<PcaModel, linfa_linalg::LinalgError> {
    let (mean, scatter) = scatter(x);
    let covariance = scatter / (x.nrows().max(2) - 1) as f64;
    let (values, vectors) = covariance.eigh()?;
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    let components = order.iter().take(k).map(|&j| vectors.column(j).to_vec()).collect();
    Ok(PcaModel { mean: mean.to_vec(), components })
}

/// Detector sizes that fit `n` rows of `d` features.
fn sizes(config: &Detectors, n: usize, d: usize) -> (usize, usize, usize, usize) {
    let cap = |want: usize, per: usize| want.min((n / per).max(1));
    (
        cap(config.gmm_components, 50),
        cap(config.kmeans_clusters, 20),
        config.pca_components.min(d.saturating_sub(1)).max(1).min(n.max(1)),
        config.knn_neighbours.min(n.saturating_sub(1)).max(1),
    )
}

/// A covariance floor in z units: it keeps near-constant features (most
/// claims are not duplicates) from making a mixture component singular.
const GMM_REG_COVARIANCE: f64 = 0.05;

/// One Gaussian, mean and covariance (plus [`GMM_REG_COVARIANCE`] on its
/// diagonal) of a sample, in the covariance's eigenbasis. It is the
/// fixed point of EM with one component, in closed form: no EM, so it
/// fits any finite sample.
struct Gaussian {
    mean: ndarray::Array1<f64>,
    /// Eigenvalues of the covariance (all at least the floor).
    values: ndarray::Array1<f64>,
    /// Its eigenvectors, one per column.
    vectors: Array2<f64>,
}

impl Gaussian {
    fn fit(x: &Array2<f64>) -> std::result::Result<Self, linfa_linalg::LinalgError> {
        let (mean, scatter) = scatter(x);
        let mut covariance = scatter / x.nrows().max(1) as f64;
        covariance.diag_mut().mapv_inplace(|v| v + GMM_REG_COVARIANCE);
        let (values, vectors) = covariance.eigh()?;
        // The floor bounds every eigenvalue from below; rounding may not.
        let values = values.mapv(|v| v.max(GMM_REG_COVARIANCE));
        Ok(Self { mean, values, vectors })
    }

    /// ln det of the precision matrix.
    fn log_det_precision(&self) -> f64 {
        -self.values.iter().map(|v| v.ln()).sum::<f64>()
    }

    /// Each row's log-density.
    fn log_density(&self, x: ArrayView2<'_, f64>) -> Vec<f64> {
        let d = self.mean.len() as f64;
        let constant = -0.5 * d * (2.0 * std::f64::consts::PI).ln() + 0.5 * self.log_det_precision();
        let projected = (&x - &self.mean).dot(&self.vectors);
        projected
            .outer_iter()
            .map(|row| constant - 0.5 * row.iter().zip(&self.values).map(|(p, v)| p * p / v).sum::<f64>())
            .collect()
    }

    /// As a mixture of one component.
    fn into_gmm(self) -> Gmm {
        let precision = self.vectors.dot(&Array2::from_diag(&self.values.mapv(|v| 1.0 / v))).dot(&self.vectors.t());
        Gmm {
            weights: vec![1.0],
            means: vec![self.mean.to_vec()],
            log_dets: vec![self.log_det_precision()],
            precisions: vec![rows(&precision)],
        }
    }
}

/// The least log-density, under the one Gaussian of the sample, of a row
/// in the sample's bulk: a squared Mahalanobis distance of roughly 600 or
/// more is far out by any measure. See [`fit_mixture`].
const GMM_BULK_LOG_DENSITY: f64 = -300.0;

/// The Gaussian mixture of `x`, by linfa's EM.
///
/// EM can fail on a sample where many rows are the same point (a component
/// left with no rows turns its weight and mean into NaN): then a second
/// fixed seed (the seed + 100), then one component fewer, in a fixed order,
/// so the same data still give the same model.
///
/// It also fails, at every size, once one row lies too far from every
/// component: linfa normalises a row's component probabilities as
/// `ln(sum(exp(..)))`, not by log-sum-exp, so a row whose log-density is
/// below about -745 under each component gets NaN responsibilities. A
/// robust z of a few hundred in one feature is enough, and among millions
/// of claims there are such claims (day 7 of the default 1M-member
/// landing). Then the same sizes and seeds are fitted on the sample's bulk
/// ([`GMM_BULK_LOG_DENSITY`]); the far rows are still scored, and
/// calibrated, by the mixture's own log-sum-exp likelihood. (The bulk is
/// not the first choice: without its far rows the components tighten, and
/// on some samples EM then fails where it fitted every row.) Should that
/// fail too, the mixture is the one Gaussian of every row, which needs no
/// EM and cannot fail: a nightly build is not stopped by one detector's
/// fit.
fn fit_mixture(x: &Array2<f64>, config: &Detectors, seed: u64, what: &str) -> Result<Gmm> {
    let fit_err = |e: &dyn std::fmt::Display| Error::Fit {
        what: what.to_string(),
        detector: "gmm".to_string(),
        reason: e.to_string(),
    };
    let failure = match em(x, config, seed, what) {
        Ok(gmm) => return Ok(gmm),
        Err(failure) => failure,
    };
    let one = Gaussian::fit(x).map_err(|e| fit_err(&e))?;
    let density = one.log_density(x.view());
    let bulk: Vec<usize> = (0..x.nrows()).filter(|&i| density[i] >= GMM_BULK_LOG_DENSITY).collect();
    let far_out = x.nrows() - bulk.len();
    let failure = if far_out > 0 && bulk.len() >= 10 {
        tracing::warn!(what, failure, far_out, "EM failed on every row; fitting the mixture on the rest");
        match em(&x.select(Axis(0), &bulk), config, seed, what) {
            Ok(gmm) => return Ok(gmm),
            Err(failure) => failure,
        }
    } else {
        failure
    };
    tracing::warn!(what, failure, "EM failed at every size; the mixture is the one Gaussian of every row");
    Ok(one.into_gmm())
}

/// linfa's EM on `x`, each size from the configured one down to one, each
/// with two seeds; the last failure when none fits.
fn em(x: &Array2<f64>, config: &Detectors, seed: u64, what: &str) -> std::result::Result<Gmm, String> {
    let (n, d) = x.dim();
    let data = DatasetBase::from(x.view());
    let gmm_k = sizes(config, n, d).0;
    let fit_gmm = |k: usize, seed: u64| {
        GaussianMixtureModel::<f64>::params(k)
            .covariance_type(GmmCovarType::Full)
            .init_method(GmmInitMethod::KMeans)
            .max_n_iterations(1000)
            .tolerance(1e-3)
            .reg_covariance(GMM_REG_COVARIANCE)
            .with_rng(ChaCha8Rng::seed_from_u64(seed))
            .fit(&data)
    };
    let attempts = (1..=gmm_k).rev().flat_map(|k| [(k, seed), (k, seed.wrapping_add(100))]);
    let mut failure = String::new();
    for (k, s) in attempts {
        let fitted = match fit_gmm(k, s) {
            Ok(g) => g,
            Err(e) => {
                failure = e.to_string();
                continue;
            }
        };
        let precisions: Vec<Vec<Vec<f64>>> = fitted.precisions().outer_iter().map(|p| rows(&p.to_owned())).collect();
        let Some(log_dets) = precisions.iter().map(|p| log_det_spd(p)).collect::<Option<Vec<_>>>() else {
            failure = "a precision matrix is not positive definite".to_string();
            continue;
        };
        if k < gmm_k || s != seed {
            tracing::warn!(what, components = k, seed = s, "the mixture was refitted after EM failed");
        }
        return Ok(Gmm { weights: fitted.weights().to_vec(), means: rows(fitted.means()), precisions, log_dets });
    }
    Err(failure)
}

impl DetectorSet {
    /// Fits every detector on `x` (rows are claims or providers) with the
    /// given seed: the same `x` and seed give the same parameters.
    pub fn fit(x: &Array2<f64>, config: &Detectors, seed: u64, what: &str) -> Result<Self> {
        let (n, d) = x.dim();
        if n < 10 {
            return Err(Error::TooFewRows { what: what.to_string(), rows: n, needed: 10 });
        }
        if let Some(v) = x.iter().find(|v| !v.is_finite()) {
            return Err(Error::Fit {
                what: what.to_string(),
                detector: "features".into(),
                reason: format!("a feature value is {v}; every feature must be finite"),
            });
        }
        let (_, km_k, pca_k, knn_k) = sizes(config, n, d);
        let data = DatasetBase::from(x.view());
        let fit_err = |detector: &str, e: &dyn std::fmt::Display| Error::Fit {
            what: what.to_string(),
            detector: detector.to_string(),
            reason: e.to_string(),
        };

        let gmm = fit_mixture(x, config, seed, what)?;

        let kmeans = KMeans::params_with(km_k, ChaCha8Rng::seed_from_u64(seed.wrapping_add(1)), RowL2)
            .n_runs(3)
            .max_n_iterations(300)
            .tolerance(1e-4)
            .init_method(KMeansInit::KMeansPlusPlus)
            .fit(&data)
            .map_err(|e| fit_err("kmeans", &e))?;

        let pca = fit_pca(x, pca_k).map_err(|e| fit_err("pca", &e))?;

        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(2));
        let mut picked = sample(&mut rng, n, config.knn_reference.min(n)).into_vec();
        picked.sort_unstable();
        let reference: Vec<Vec<f64>> = picked.iter().map(|&i| x.row(i).to_vec()).collect();

        let mut set = Self {
            dims: d,
            gmm,
            kmeans_centroids: rows(kmeans.centroids()),
            pca,
            knn: Knn { k: knn_k, reference },
            excess: Excess::fit(x),
            calibration: Vec::new(),
        };
        let raw = set.raw_scores(x.view())?;
        set.calibration = raw
            .axis_iter(Axis(1))
            .map(|col| {
                let mut v = col.to_vec();
                v.sort_by(f64::total_cmp);
                quantiles(&v, CALIBRATION_POINTS)
            })
            .collect();
        Ok(set)
    }

    /// Raw scores of every detector: `rows x DETECTORS`.
    pub fn raw_scores(&self, x: ArrayView2<'_, f64>) -> Result<Array2<f64>> {
        if x.ncols() != self.dims {
            return Err(Error::Shape { expected: self.dims, got: x.ncols() });
        }
        // No detector can place a row with a NaN or infinite feature (the
        // kNN search would pass it over silently).
        if let Some((row, value)) =
            x.outer_iter().enumerate().find_map(|(i, r)| r.iter().find(|v| !v.is_finite()).map(|v| (i, *v)))
        {
            return Err(Error::NonFinite { row, value });
        }
        let index = KnnIndex::new(&self.knn.reference, self.dims);
        let centroids = matrix(&self.kmeans_centroids, self.dims);
        let components = matrix(&self.pca.components, self.dims);
        let n = x.nrows();
        // One run of consecutive rows per thread; each row's scores depend
        // on that row alone, so the thread count never changes a score.
        let chunk = n.div_ceil(parallel::threads()).max(1);
        let mut out = Array2::zeros((n, DETECTORS.len()));
        let runs: Vec<_> = out.axis_chunks_iter_mut(Axis(0), chunk).zip(x.axis_chunks_iter(Axis(0), chunk)).collect();
        parallel::on_threads(runs, |(mut out, x)| {
            let (mut buf, mut query) = (vec![0.0; self.dims], vec![0.0; self.dims]);
            let mut search = Search::default();
            for (i, row) in x.outer_iter().enumerate() {
                out[[i, 0]] = self.gmm_nll(row, &mut buf);
                out[[i, 1]] = nearest_centroid(row, centroids.view());
                out[[i, 2]] = self.pca_error(row, components.view(), &mut buf);
                query.iter_mut().zip(row).for_each(|(q, v)| *q = *v);
                out[[i, 3]] = index.mean_distance(&query, self.knn.k, &mut search);
                out[[i, 4]] = self.excess.score(row);
            }
        })
        .map_err(|_| Error::Panicked)?;
        Ok(out)
    }

    /// The combined anomaly score of each row (the mean of its detectors'
    /// `tail_score`s weighted by `weights`, in the order of [`DETECTORS`]:
    /// about 1 for a row at the training 99th percentile, unbounded above),
    /// and each detector's percentile and tail score. A detector the model
    /// has no calibration for (it was stored before the detector existed)
    /// scores 0 and weighs nothing, so an older model scores as it did.
    pub fn score(&self, x: ArrayView2<'_, f64>, weights: &[f64]) -> Result<Scores> {
        let weights = &weights[..weights.len().min(self.calibration.len())];
        let raw = self.raw_scores(x)?;
        let (mut pct, mut tail) = (Array2::zeros(raw.dim()), Array2::zeros(raw.dim()));
        for (j, cal) in self.calibration.iter().enumerate() {
            for i in 0..raw.nrows() {
                pct[[i, j]] = percentile(cal, raw[[i, j]]);
                tail[[i, j]] = tail_score(cal, raw[[i, j]]);
            }
        }
        let total: f64 = weights.iter().sum::<f64>().max(1e-12);
        let combined =
            tail.outer_iter().map(|row| row.iter().zip(weights).map(|(t, w)| w * t).sum::<f64>() / total).collect();
        Ok(Scores { combined, percentile: pct, tail })
    }

    /// Negative log-likelihood under the mixture, by log-sum-exp over the
    /// components, from the weights, means and precisions.
    fn gmm_nll(&self, x: ArrayView1<'_, f64>, diff: &mut [f64]) -> f64 {
        let d = self.dims as f64;
        let half_log_2pi = 0.5 * d * (2.0 * std::f64::consts::PI).ln();
        let mut terms = Vec::with_capacity(self.gmm.weights.len());
        for k in 0..self.gmm.weights.len() {
            for (j, v) in x.iter().enumerate() {
                diff[j] = v - self.gmm.means[k][j];
            }
            let p = &self.gmm.precisions[k];
            let mut q = 0.0;
            for (a, da) in diff.iter().enumerate() {
                let row = &p[a];
                q += da * row.iter().zip(diff.iter()).map(|(pv, db)| pv * db).sum::<f64>();
            }
            terms.push(self.gmm.weights[k].max(1e-300).ln() - half_log_2pi + 0.5 * self.gmm.log_dets[k] - 0.5 * q);
        }
        let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        -(max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln())
    }

    /// Squared distance from `x` to its projection on the principal axes.
    fn pca_error(&self, x: ArrayView1<'_, f64>, components: ArrayView2<'_, f64>, centred: &mut [f64]) -> f64 {
        for (j, v) in x.iter().enumerate() {
            centred[j] = v - self.pca.mean[j];
        }
        let total: f64 = centred.iter().map(|v| v * v).sum();
        let explained: f64 = components
            .outer_iter()
            .map(|c| {
                let t: f64 = c.iter().zip(centred.iter()).map(|(a, b)| a * b).sum();
                t * t
            })
            .sum();
        (total - explained).max(0.0)
    }
}

fn nearest_centroid(x: ArrayView1<'_, f64>, centroids: ArrayView2<'_, f64>) -> f64 {
    centroids
        .outer_iter()
        .map(|c| c.iter().zip(x.iter()).map(|(a, b)| (a - b) * (a - b)).sum::<f64>())
        .fold(f64::INFINITY, f64::min)
        .sqrt()
}

/// Where `s` stands in the tail of the training scores whose quantiles are
/// `cal`: `(s - median) / (p99 - median)`, so 0 at the median and 1 at the
/// 99th percentile, with no ceiling (0 for a detector without calibration).
pub(crate) fn tail_score(cal: &[f64], s: f64) -> f64 {
    if cal.is_empty() || !s.is_finite() {
        return if s == f64::INFINITY { TAIL_CEILING } else { 0.0 };
    }
    let at = |q: f64| cal[((cal.len() - 1) as f64 * q).round() as usize];
    let (median, p99) = (at(0.5), at(0.99));
    ((s - median) / (p99 - median).max(1e-9)).min(TAIL_CEILING)
}

/// A bound on [`tail_score`], so that one absurd raw score stays finite.
const TAIL_CEILING: f64 = 1e6;

/// `points` evenly spaced quantiles of the sorted `v`.
fn quantiles(v: &[f64], points: usize) -> Vec<f64> {
    if v.len() <= points {
        return v.to_vec();
    }
    (0..points).map(|i| v[(i * (v.len() - 1)) / (points - 1)]).collect()
}

/// Where `s` falls in the calibration quantiles, in [0, 1]. Above the
/// largest training score it keeps rising towards 1, so the most extreme
/// rows still rank above merely extreme ones.
pub(crate) fn percentile(cal: &[f64], s: f64) -> f64 {
    let n = cal.len();
    if n == 0 || !s.is_finite() {
        return if s == f64::INFINITY { 1.0 } else { 0.0 };
    }
    let last = n - 1;
    if s > cal[last] {
        let spread = (cal[last] - cal[n / 2]).abs().max(1e-9);
        let gap = 0.5 / n as f64;
        return 1.0 - gap * (-(s - cal[last]) / spread).exp();
    }
    let above = cal.partition_point(|c| *c < s);
    if above == 0 {
        return 0.0;
    }
    // Interpolate between the quantiles either side.
    let (lo, hi) = (cal[above - 1], cal[above.min(last)]);
    let frac = if hi > lo { (s - lo) / (hi - lo) } else { 1.0 };
    let at = (above - 1) as f64 + frac;
    (at / last.max(1) as f64) * (1.0 - 0.5 / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_distance_equals_linfa_l2_to_the_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for dims in [1, 2, 17, 30] {
            for _ in 0..200 {
                let a: Vec<f64> = (0..dims).map(|_| rand::Rng::gen_range(&mut rng, -50.0..50.0)).collect();
                let b: Vec<f64> = (0..dims).map(|_| rand::Rng::gen_range(&mut rng, -50.0..50.0)).collect();
                let (a, b) = (ArrayView1::from(&a), ArrayView1::from(&b));
                assert_eq!(RowL2.rdistance(a, b).to_bits(), L2Dist.rdistance(a, b).to_bits());
                assert_eq!(RowL2.distance(a, b).to_bits(), L2Dist.distance(a, b).to_bits());
            }
        }
        // A strided view (a matrix column) takes linfa's own path.
        let m = Array2::from_shape_fn((5, 3), |(i, j)| (i * 3 + j) as f64 * 0.37);
        let (c0, c2) = (m.column(0), m.column(2));
        assert_eq!(RowL2.distance(c0, c2).to_bits(), L2Dist.distance(c0, c2).to_bits());
    }

    /// 300 rows of 3 uniform features from `seed`, and the detectors the
    /// default settings fit on them.
    fn fitted_on_noise(seed: u64) -> (Array2<f64>, DetectorSet) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = Array2::from_shape_fn((300, 3), |_| rand::Rng::gen_range(&mut rng, -1.0..1.0));
        let config = crate::ScoringConfig::default_config().unwrap().detectors;
        let set = DetectorSet::fit(&x, &config, 1, "test").unwrap();
        (x, set)
    }

    #[test]
    fn a_row_with_a_feature_that_is_not_finite_is_refused_by_its_number() {
        let (x, set) = fitted_on_noise(3);
        let mut rows = x.select(Axis(0), &[0, 1, 2, 3, 4]);
        assert!(set.raw_scores(rows.view()).is_ok());
        rows[[2, 1]] = f64::NAN;
        let err = set.raw_scores(rows.view()).unwrap_err().to_string();
        assert_eq!(err, "features: row 2 has the value NaN; the detectors need every feature finite");
        rows[[2, 1]] = 0.0;
        rows[[4, 0]] = f64::INFINITY;
        assert!(set.raw_scores(rows.view()).unwrap_err().to_string().contains("row 4 has the value inf"));
    }

    #[test]
    fn percentiles_are_monotone_and_keep_rising_past_the_training_maximum() {
        let cal: Vec<f64> = (0..=100).map(f64::from).collect();
        let mut last = -1.0;
        for s in [-5.0, 0.0, 10.0, 50.0, 99.5, 100.0, 101.0, 150.0, 1000.0] {
            let p = percentile(&cal, s);
            assert!((0.0..=1.0).contains(&p), "{s}: {p}");
            assert!(p >= last, "{s}: {p} < {last}");
            last = p;
        }
        assert!(percentile(&cal, 150.0) > percentile(&cal, 101.0));
        assert!((percentile(&cal, 50.0) - 0.5).abs() < 0.01);
    }

    #[test]
    fn tail_scores_are_0_at_the_median_1_at_the_99th_percentile_and_keep_their_distances_beyond() {
        // Training scores 0..=1000: median 500, 99th percentile 990.
        let cal = quantiles(&(0..=1000).map(f64::from).collect::<Vec<_>>(), CALIBRATION_POINTS);
        assert_eq!(tail_score(&cal, 500.0), 0.0);
        assert_eq!(tail_score(&cal, 990.0), 1.0);
        assert!(tail_score(&cal, 100.0) < 0.0);
        // Far past the maximum, twice as far from the median is twice the
        // score: the two do not tie, as percentiles near 1 would.
        let (a, b) = (tail_score(&cal, 5_000.0), tail_score(&cal, 9_500.0));
        assert!((b / a - 2.0).abs() < 1e-12, "{a} {b}");
        assert_eq!(tail_score(&[], 3.0), 0.0);
        assert!(tail_score(&cal, f64::INFINITY).is_finite());
    }

    #[test]
    fn feature_excess_counts_only_what_lies_beyond_each_features_ordinary_range() {
        // Feature 0 spreads over 0..=10; feature 1 is 0 on every row, so
        // its ordinary range is the floor.
        let x = Array2::from_shape_fn((1001, 2), |(i, j)| if j == 0 { i as f64 / 100.0 } else { 0.0 });
        let e = Excess::fit(&x);
        assert_eq!(e.median, vec![5.0, 0.0]);
        assert!((e.range[0] - 4.95).abs() < 1e-9, "{:?}", e.range);
        assert_eq!(e.range[1], EXCESS_FLOOR);
        let score = |a: f64, b: f64| e.score(ndarray::arr1(&[a, b]).view());
        assert_eq!(score(5.0, 0.0), 0.0);
        assert_eq!(score(9.9, 0.0), 0.0);
        assert_eq!(score(0.0, -4.0), 0.0);
        assert!((score(5.0 + 2.0 * 4.95, 0.0) - 1.0).abs() < 1e-9);
        assert_eq!(score(5.0, 3.0), 2.0);
        assert!((score(5.0 + 2.0 * 4.95, 3.0) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn a_model_stored_before_feature_excess_scores_as_it_did() {
        let (x, now) = fitted_on_noise(9);
        assert_eq!(now.calibration.len(), DETECTORS.len());
        // What an older gold stored: no excess, four calibrations.
        let mut older = now.clone();
        older.excess = Excess::default();
        older.calibration.truncate(4);
        let json = serde_json::to_string(&older).unwrap().replace(",\"excess\":{\"median\":[],\"range\":[]}", "");
        assert!(!json.contains("excess"));
        let older: DetectorSet = serde_json::from_str(&json).unwrap();
        let weights = [1.0, 1.0, 1.0, 4.0, 4.0];
        let (a, b) = (now.score(x.view(), &weights).unwrap(), older.score(x.view(), &weights).unwrap());
        for i in 0..x.nrows() {
            let four: f64 = (0..4).map(|j| weights[j] * a.tail[[i, j]]).sum::<f64>() / 7.0;
            assert!((b.combined[i] - four).abs() < 1e-12, "row {i}: {} vs {four}", b.combined[i]);
            assert_eq!(b.tail[[i, 4]], 0.0);
        }
        // The current model does weigh it.
        assert!((0..x.nrows()).any(|i| (a.combined[i] - b.combined[i]).abs() > 1e-9));
    }

    /// 5,000 ordinary rows (uniform in [-1, 1]^3) and one a thousand units
    /// out in the first feature: under the one Gaussian of the sample its
    /// log-density is about -2,500, where linfa's EM normalisation
    /// underflows.
    fn sample_with_a_row_too_far_out_for_em() -> Array2<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut x = Array2::from_shape_fn((5001, 3), |_| rand::Rng::gen_range(&mut rng, -1.0..1.0));
        x[[5000, 0]] = 1000.0;
        x
    }

    fn em_alone(x: ArrayView2<'_, f64>, k: usize) -> bool {
        GaussianMixtureModel::<f64>::params(k)
            .reg_covariance(GMM_REG_COVARIANCE)
            .with_rng(ChaCha8Rng::seed_from_u64(1))
            .fit(&DatasetBase::from(x))
            .is_ok()
    }

    #[test]
    fn a_row_too_far_out_for_em_is_left_out_of_the_mixture_fit_and_still_scored_furthest_out() {
        let x = sample_with_a_row_too_far_out_for_em();
        let mut config = crate::ScoringConfig::default_config().unwrap().detectors;
        let ordinary = x.view().split_at(Axis(0), 5000).0.to_owned();
        assert_eq!(DetectorSet::fit(&ordinary, &config, 1, "test").unwrap().gmm.weights.len(), config.gmm_components);
        // With one component, linfa's EM fails on the sample, and only
        // because of that row. (With more, EM may give the row a component
        // of its own; the claims of day 7 of the default 1M-member landing
        // failed at every size.)
        config.gmm_components = 1;
        assert!(!em_alone(x.view(), 1));
        assert!(em_alone(ordinary.view(), 1));

        let set = DetectorSet::fit(&x, &config, 1, "test").unwrap();
        // Fitted on the other rows: the far row does not pull the mean
        // (it would by 1000 / 5001 = 0.2).
        assert_eq!(set.gmm.weights, vec![1.0]);
        let mean = ordinary.mean_axis(Axis(0)).unwrap();
        assert!((set.gmm.means[0][0] - mean[0]).abs() < 1e-9, "{:?} vs {mean}", set.gmm.means);
        // It is scored all the same, and by the mixture it is the
        // furthest out.
        let raw = set.raw_scores(x.view()).unwrap();
        let nll = raw.column(0);
        assert!(nll.iter().all(|v| v.is_finite()));
        let furthest = (0..x.nrows()).max_by(|&a, &b| nll[a].total_cmp(&nll[b])).unwrap();
        assert_eq!(furthest, 5000);
        // The same data and seed give the same model.
        assert_eq!(DetectorSet::fit(&x, &config, 1, "test").unwrap(), set);
    }

    #[test]
    fn when_em_fails_on_the_bulk_too_the_mixture_is_the_one_gaussian_of_every_row() {
        // One more row, 40 units out: within the bulk of the whole sample
        // (the far row spreads its Gaussian), but too far out for EM once
        // the far row is left out.
        let mut x = sample_with_a_row_too_far_out_for_em();
        x[[4999, 0]] = 40.0;
        let mut config = crate::ScoringConfig::default_config().unwrap().detectors;
        config.gmm_components = 1;
        let one = Gaussian::fit(&x).unwrap();
        let density = one.log_density(x.view());
        assert!(density[5000] < GMM_BULK_LOG_DENSITY && density[4999] > GMM_BULK_LOG_DENSITY, "{density:?}");
        assert!(!em_alone(x.view(), 1));
        assert!(!em_alone(x.view().split_at(Axis(0), 5000).0, 1));

        let set = DetectorSet::fit(&x, &config, 1, "test").unwrap();
        let mean = x.mean_axis(Axis(0)).unwrap();
        assert_eq!(set.gmm.weights, vec![1.0]);
        assert!((set.gmm.means[0][0] - mean[0]).abs() < 1e-9, "{:?} vs {mean}", set.gmm.means);
        // Its likelihood is the Gaussian density, row by row.
        let mut buf = vec![0.0; 3];
        for i in [0, 17, 4999, 5000] {
            let nll = set.gmm_nll(x.row(i), &mut buf);
            assert!((nll + density[i]).abs() < 1e-6 * density[i].abs().max(1.0), "row {i}: {nll} vs {}", density[i]);
        }
    }

    #[test]
    fn log_det_matches_a_hand_computed_matrix() {
        let m = vec![vec![4.0, 2.0], vec![2.0, 3.0]];
        assert!((log_det_spd(&m).unwrap() - 8.0f64.ln()).abs() < 1e-12);
        assert!(log_det_spd(&[vec![1.0, 2.0], vec![2.0, 1.0]]).is_none());
    }
}
