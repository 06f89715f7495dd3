//! Peer groups: dense group ids, robust z-scores of values within their
//! group (falling back to a wider group for small ones), and binomial
//! z-scores of rates.

use hashbrown::HashMap;

/// The smallest peer group whose own statistics are used; smaller groups
/// fall back to a wider peer group.
const MIN_PEERS: usize = 30;
/// The group key of a value that has no peer group of its own (a provider
/// whose specialty is unknown): [`peer_z`] measures it against its
/// fallback group at once.
pub(super) const NO_PEERS: &str = "\u{0}no peers";
/// Robust z-scores are clipped to this, so one feature cannot dwarf the
/// geometry of every detector.
const Z_CLIP: f64 = 12.0;

/// Dense ids for `keys` (equal keys, equal ids) and how many distinct keys.
pub(super) fn dense_ids(keys: &[String]) -> (Vec<u32>, usize) {
    let groups = Groups::of(keys);
    (groups.id, groups.count)
}

/// Median and robust scale of `values`: 1.4826 x the median absolute
/// deviation, floored by 1.2533 x the mean absolute deviation (which is
/// not zero when most values sit at the median) and by `floor`.
fn robust_center_scale(values: &mut [f64], floor: f64) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 1.0);
    }
    let median = median_of(values);
    let mean_ad = values.iter().map(|v| (v - median).abs()).sum::<f64>() / values.len() as f64;
    for v in values.iter_mut() {
        *v = (*v - median).abs();
    }
    let mad = median_of(values);
    let scale = (1.4826 * mad).max(1.2533 * mean_ad).max(floor);
    (median, scale)
}

/// The median of `values` (the mean of the middle two for an even count),
/// reordering them.
fn median_of(values: &mut [f64]) -> f64 {
    let mid = values.len() / 2;
    let (_, m, _) = values.select_nth_unstable_by(mid, f64::total_cmp);
    let m = *m;
    if values.len().is_multiple_of(2) {
        let lower = values[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower + m) / 2.0
    } else {
        m
    }
}

/// `z` within [`Z_CLIP`] either way; 0 when it is not finite.
pub(super) fn clip(z: f64) -> f64 {
    if z.is_finite() { z.clamp(-Z_CLIP, Z_CLIP) } else { 0.0 }
}

/// Dense group ids of one grouping of the rows, computed once and shared
/// by every statistic taken within it (equal keys, equal ids).
pub(super) struct Groups {
    /// Each row's group.
    pub(super) id: Vec<u32>,
    /// How many groups.
    pub(super) count: usize,
    /// The id of [`NO_PEERS`], when a row has it.
    no_peers: Option<u32>,
}

impl Groups {
    pub(super) fn of<S: AsRef<str>>(keys: &[S]) -> Self {
        let mut index: HashMap<&str, u32> = HashMap::new();
        let id = keys
            .iter()
            .map(|k| {
                let next = index.len() as u32;
                *index.entry(k.as_ref()).or_insert(next)
            })
            .collect();
        let no_peers = index.get(NO_PEERS).copied();
        Self { id, count: index.len(), no_peers }
    }

    /// One group of every row.
    pub(super) fn all(rows: usize) -> Self {
        Self { id: vec![0; rows], count: usize::from(rows > 0), no_peers: None }
    }

    /// Each group's values, in row order.
    fn split(&self, values: &[f64]) -> Vec<Vec<f64>> {
        let mut by: Vec<Vec<f64>> = vec![Vec::new(); self.count];
        for (&g, &v) in self.id.iter().zip(values) {
            by[g as usize].push(v);
        }
        by
    }
}

/// Robust z-scores of `values` within `group`, falling back to
/// `fallback`'s groups (and then to all values) for groups of fewer than
/// [`MIN_PEERS`] and for [`NO_PEERS`].
pub(super) fn peer_z(values: &[f64], group: &Groups, fallback: Option<&Groups>, floor: f64) -> Vec<f64> {
    let stats = |groups: &Groups| -> Vec<(usize, f64, f64)> {
        groups
            .split(values)
            .into_iter()
            .map(|mut vs| {
                let n = vs.len();
                let (m, s) = robust_center_scale(&mut vs, floor);
                (n, m, s)
            })
            .collect()
    };
    let primary = stats(group);
    let secondary = fallback.map(stats);
    let (gm, gs) = robust_center_scale(&mut values.to_vec(), floor);
    (0..values.len())
        .map(|i| {
            let g = group.id[i];
            let (n, m, s) = primary[g as usize];
            let (m, s) = if n >= MIN_PEERS && Some(g) != group.no_peers {
                (m, s)
            } else {
                match (fallback, &secondary) {
                    (Some(f), Some(stats)) if stats[f.id[i] as usize].0 >= MIN_PEERS => {
                        let (_, m, s) = stats[f.id[i] as usize];
                        (m, s)
                    }
                    _ => (gm, gs),
                }
            };
            clip((values[i] - m) / s)
        })
        .collect()
}

/// The 99th percentile of `values` within each group of at least
/// [`MIN_PEERS`]; `true` where a value is above it.
pub(super) fn above_p99(values: &[f64], group: &Groups) -> Vec<bool> {
    let p99: Vec<Option<f64>> = group
        .split(values)
        .into_iter()
        .map(|mut vs| {
            (vs.len() >= MIN_PEERS).then(|| {
                vs.sort_by(f64::total_cmp);
                let at = ((vs.len() as f64 * 0.99).ceil() as usize).saturating_sub(1).min(vs.len() - 1);
                vs[at]
            })
        })
        .collect();
    values.iter().zip(&group.id).map(|(v, &g)| p99[g as usize].is_some_and(|p| *v > p)).collect()
}

/// How far `hits` of `trials` is above the rate `p`, in binomial standard
/// deviations (with one pseudo-trial so that tiny providers stay small).
pub(super) fn binomial_z(hits: f64, trials: f64, p: f64) -> f64 {
    let p = p.clamp(1e-4, 1.0 - 1e-4);
    (hits - trials * p) / (trials * p * (1.0 - p) + 1.0).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_has_a_floor_when_most_peers_sit_at_zero() {
        let mut v = vec![0.0; 990];
        v.extend(vec![1.0; 10]);
        let (m, s) = robust_center_scale(&mut v, 0.0);
        assert_eq!(m, 0.0);
        // MAD is 0; the mean absolute deviation (0.01) keeps it finite.
        assert!((s - 1.2533 * 0.01).abs() < 1e-12, "{s}");
        let mut z = vec![0.0; 10];
        let (_, s) = robust_center_scale(&mut z, 0.05);
        assert_eq!(s, 0.05);
    }

    #[test]
    fn small_peer_groups_fall_back_to_the_wider_group() {
        let mut values = vec![1.0; 40];
        values.extend([5.0, 5.0]);
        let mut group = vec!["big"; 40];
        group.extend(["tiny", "tiny"]);
        let z = peer_z(&values, &Groups::of(&group), None, 0.1);
        // "tiny" has 2 peers: it is measured against everyone, so it stands out.
        assert!(z[40] > 10.0, "{}", z[40]);
        assert_eq!(z[0], 0.0);
    }

    #[test]
    fn values_without_peers_are_measured_against_their_fallback_group() {
        // 40 providers of unknown specialty: 38 small ones at 1.0 (volume
        // band "0") and 2 large ones at 2.0 (band "7"), beside 40 family
        // practices at 2.0 (band "7").
        let mut values = vec![1.0; 38];
        values.extend([2.0; 42]);
        let mut group = vec![NO_PEERS; 40];
        group.extend(["family"; 40]);
        let mut volume = vec!["0"; 38];
        volume.extend(["7"; 42]);
        let z = peer_z(&values, &Groups::of(&group), Some(&Groups::of(&volume)), 0.05);
        // Against the other unknowns the large two would be far out; among
        // the providers of their volume they are ordinary.
        assert_eq!(z[38..40], [0.0, 0.0]);
        assert!(z.iter().all(|v| *v == 0.0), "{z:?}");
        // Named as a group of their own, the 38 small ones set the scale.
        let mut named = group.clone();
        named[..40].fill("unknown");
        let z = peer_z(&values, &Groups::of(&named), Some(&Groups::of(&volume)), 0.05);
        assert!(z[38] > 10.0, "{}", z[38]);
    }
}
