//! Exact k-nearest-neighbour distances to the kNN detector's reference
//! sample: a k-d tree over the reference rows laid out leaf by leaf,
//! searched depth first, nearer side first, a cell skipped when its
//! bounding box lies beyond the k-th distance so far, with no allocation
//! per query.
//!
//! It replaces linfa-nn's `KdTree` (the `kdtree` crate), which searches
//! best first through a heap of cells, allocates a point for every cell it
//! measures, and pushes every leaf point through a second heap. On the
//! day-2 score stage of a 1,000,000-member landing that search was a third
//! of the stage's CPU (README, "The kNN search"). The search here is
//! exact, as linfa-nn's is: the k smallest distances are the same numbers,
//! and their roots are summed in the same ascending order, so every score is
//! the same to the bit (the tests compare the two).

use std::cmp::Ordering;

/// Points per leaf at most (a cell of equal points may hold more).
const LEAF: usize = 16;

/// A node: a leaf holds `points[start..end]`; an inner node splits them on
/// `dim` at `split`, coordinates below it to the left child, the others to
/// the right one.
#[derive(Debug)]
struct Node {
    start: u32,
    end: u32,
    dim: u32,
    split: f64,
    /// The left child's index; the right child is `left + 1`. 0 for a leaf.
    left: u32,
}

/// The index: the reference points, reordered to follow the tree's leaves,
/// row after row, and each node's bounding box.
#[derive(Debug)]
pub(crate) struct KnnIndex {
    dims: usize,
    points: Vec<f64>,
    nodes: Vec<Node>,
    /// Per node, the lowest then the highest coordinates of its points.
    bounds: Vec<f64>,
}

impl KnnIndex {
    /// An index over `reference` (rows of `dims` coordinates each). A cell
    /// is split at the middle of its widest coordinate (sliding to its
    /// points' highest value when every point lies on one side), as
    /// linfa-nn's tree splits, so that equal values, which the discrete
    /// features are full of, stay on one side.
    pub(crate) fn new(reference: &[Vec<f64>], dims: usize) -> Self {
        let mut order: Vec<u32> = (0..reference.len() as u32).collect();
        let mut nodes = vec![Node { start: 0, end: order.len() as u32, dim: 0, split: 0.0, left: 0 }];
        let mut bounds = Vec::new();
        // Nodes are split breadth first, so that siblings sit side by side.
        let mut next = 0;
        while next < nodes.len() {
            let (start, end) = (nodes[next].start as usize, nodes[next].end as usize);
            let (lo, hi) = bounding_box(reference, &order[start..end], dims);
            let widest =
                (0..dims).filter(|&d| hi[d] > lo[d]).max_by(|&a, &b| (hi[a] - lo[a]).total_cmp(&(hi[b] - lo[b])));
            bounds.extend_from_slice(&lo);
            bounds.extend_from_slice(&hi);
            if end - start > LEAF
                && let Some(dim) = widest
            {
                let key = |i: u32| reference[i as usize][dim];
                let mut split = lo[dim] + (hi[dim] - lo[dim]) / 2.0;
                let cell = &mut order[start..end];
                let mut mid = partition(cell, |i| key(i) < split);
                if mid == 0 || mid == cell.len() {
                    // Rounding put the middle on the lowest value: split
                    // off the highest instead (there are two values).
                    split = hi[dim];
                    mid = partition(cell, |i| key(i) < split);
                }
                let left = nodes.len() as u32;
                let node = &mut nodes[next];
                (node.dim, node.split, node.left) = (dim as u32, split, left);
                let mid = (start + mid) as u32;
                nodes.push(Node { start: start as u32, end: mid, dim: 0, split: 0.0, left: 0 });
                nodes.push(Node { start: mid, end: end as u32, dim: 0, split: 0.0, left: 0 });
            }
            next += 1;
        }
        let points = order.iter().flat_map(|&i| reference[i as usize].iter().copied()).collect();
        Self { dims, points, nodes, bounds }
    }

    /// The mean Euclidean distance from `query` to its `k` nearest
    /// reference points (all of them when there are fewer), or 0 for an
    /// empty reference.
    pub(crate) fn mean_distance(&self, query: &[f64], k: usize, search: &mut Search) -> f64 {
        let k = k.min(self.points.len() / self.dims.max(1));
        if k == 0 {
            return 0.0;
        }
        search.best.clear();
        // The root is within reach: its box holds every point.
        self.visit(0, query, k, search);
        // Ascending, as linfa-nn's results are summed.
        let sum: f64 = search.best.iter().map(|d| d.sqrt()).sum();
        sum / k as f64
    }

    /// Searches node `at`, whose bounding box the caller has found within
    /// reach.
    fn visit(&self, at: usize, query: &[f64], k: usize, search: &mut Search) {
        let node = &self.nodes[at];
        if node.left == 0 {
            let (start, end) = (node.start as usize * self.dims, node.end as usize * self.dims);
            let half = self.dims / 2;
            for point in self.points[start..end].chunks_exact(self.dims) {
                // Summed in index order, as `RowL2` sums it. A sum of
                // squares only grows, so a point already beyond the k-th
                // halfway through is left there, as `offer` would leave it.
                let (head, tail) = point.split_at(half);
                let mut d = 0.0;
                for (p, q) in head.iter().zip(query) {
                    let t = p - q;
                    d += t * t;
                }
                if d.total_cmp(&search.worst(k)) == Ordering::Less {
                    for (p, q) in tail.iter().zip(&query[half..]) {
                        let t = p - q;
                        d += t * t;
                    }
                    search.offer(d, k);
                }
            }
            return;
        }
        let left = node.left as usize;
        let (near, far) = if query[node.dim as usize] < node.split { (left, left + 1) } else { (left + 1, left) };
        // The nearer side is within reach whenever its parent is.
        self.visit(near, query, k, search);
        if search.reaches(self.box_distance(far, query), k) {
            self.visit(far, query, k, search);
        }
    }

    /// The squared distance from `query` to node `at`'s bounding box: no
    /// more than to any of its points (give or take the rounding of a sum
    /// taken in another order, which [`Search::reaches`] allows for).
    fn box_distance(&self, at: usize, query: &[f64]) -> f64 {
        let bounds = &self.bounds[at * 2 * self.dims..(at + 1) * 2 * self.dims];
        let (lo, hi) = bounds.split_at(self.dims);
        // How far `q` lies outside `l..=h`, by comparisons rather than
        // `f64::max`, which also sorts out NaN (the coordinates are finite).
        let gap = |q: f64, l: f64, h: f64| {
            let t = if l - q > q - h { l - q } else { q - h };
            if t > 0.0 { t } else { 0.0 }
        };
        // Four sums side by side, without branches: the search spends much
        // of its time here.
        let mut sums = [0.0; 4];
        let (mut q4, mut l4, mut h4) = (query.chunks_exact(4), lo.chunks_exact(4), hi.chunks_exact(4));
        for ((q, l), h) in (&mut q4).zip(&mut l4).zip(&mut h4) {
            for (((s, q), l), h) in sums.iter_mut().zip(q).zip(l).zip(h) {
                let t = gap(*q, *l, *h);
                *s += t * t;
            }
        }
        let mut d = (sums[0] + sums[1]) + (sums[2] + sums[3]);
        for ((q, l), h) in q4.remainder().iter().zip(l4.remainder()).zip(h4.remainder()) {
            let t = gap(*q, *l, *h);
            d += t * t;
        }
        d
    }
}

/// Moves the rows for which `left` holds to the front of `cell`; how many
/// there are.
fn partition(cell: &mut [u32], left: impl Fn(u32) -> bool) -> usize {
    let mut mid = 0;
    for i in 0..cell.len() {
        if left(cell[i]) {
            cell.swap(i, mid);
            mid += 1;
        }
    }
    mid
}

/// The lowest and highest value of each coordinate over `cell`.
fn bounding_box(reference: &[Vec<f64>], cell: &[u32], dims: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut lo, mut hi) = (vec![f64::INFINITY; dims], vec![f64::NEG_INFINITY; dims]);
    for &i in cell {
        for (d, v) in reference[i as usize].iter().enumerate().take(dims) {
            lo[d] = lo[d].min(*v);
            hi[d] = hi[d].max(*v);
        }
    }
    (lo, hi)
}

/// One thread's search state, reused from query to query: the squared
/// distances of the nearest points so far, ascending.
#[derive(Debug, Default)]
pub(crate) struct Search {
    best: Vec<f64>,
}

impl Search {
    fn offer(&mut self, d: f64, k: usize) {
        if self.best.len() == k {
            if d.total_cmp(&self.best[k - 1]) != Ordering::Less {
                return;
            }
            self.best.pop();
        }
        let at = self.best.partition_point(|b| b.total_cmp(&d) != Ordering::Greater);
        self.best.insert(at, d);
    }

    /// The squared distance of the k-th nearest point so far, or infinity
    /// before there are k.
    fn worst(&self, k: usize) -> f64 {
        if self.best.len() == k { self.best[k - 1] } else { f64::INFINITY }
    }

    /// Whether a cell at squared distance `bound` may hold a point nearer
    /// than the k-th so far. A box's distance is never above its points' but
    /// for rounding (its terms are summed in another order); the margin
    /// keeps every cell that could hold a nearer point.
    fn reaches(&self, bound: f64, k: usize) -> bool {
        bound <= self.worst(k) * (1.0 + 1e-9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linfa_nn::distance::{Distance, L2Dist};
    use linfa_nn::{KdTree, NearestNeighbour};
    use ndarray::{Array2, ArrayView1};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// linfa-nn's answer, computed as the detector computed it before.
    fn linfa_mean(reference: &[Vec<f64>], dims: usize, query: &[f64], k: usize) -> f64 {
        let m = Array2::from_shape_vec((reference.len(), dims), reference.concat()).unwrap();
        let index = KdTree.from_batch(&m, L2Dist).unwrap();
        let q = ArrayView1::from(query);
        let hits = index.k_nearest(q, k).unwrap();
        let sum: f64 = hits.iter().map(|(p, _)| L2Dist.distance(p.view(), q)).sum();
        sum / hits.len().max(1) as f64
    }

    /// Heavy-tailed, clipped, discrete and repeated coordinates, as the
    /// claim features are.
    fn sample(rng: &mut ChaCha8Rng, rows: usize, dims: usize) -> Vec<Vec<f64>> {
        let mut out: Vec<Vec<f64>> = Vec::with_capacity(rows);
        for _ in 0..rows {
            if !out.is_empty() && rng.gen_bool(0.05) {
                let again = out[rng.gen_range(0..out.len())].clone();
                out.push(again);
                continue;
            }
            out.push(
                (0..dims)
                    .map(|d| match d % 4 {
                        0 => rng.gen_range(-1.0..1.0),
                        1 => f64::from(rng.gen_range(0..3u8)),
                        2 => (rng.gen_range(0.0f64..1.0).powi(8) * 40.0).min(8.0),
                        _ => 0.0,
                    })
                    .collect(),
            );
        }
        out
    }

    #[test]
    fn the_mean_distance_to_the_k_nearest_is_linfa_nns_to_the_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for (rows, dims, k) in [(1, 3, 10), (9, 2, 10), (500, 17, 10), (800, 13, 10), (300, 17, 1), (40, 5, 40)] {
            let reference = sample(&mut rng, rows, dims);
            let index = KnnIndex::new(&reference, dims);
            let mut search = Search::default();
            let queries = sample(&mut rng, 300, dims).into_iter().chain(reference.iter().take(50).cloned());
            for q in queries {
                let ours = index.mean_distance(&q, k, &mut search);
                let theirs = linfa_mean(&reference, dims, &q, k.min(rows));
                assert_eq!(ours.to_bits(), theirs.to_bits(), "{rows} x {dims}, k {k}: {ours} against {theirs}");
            }
        }
    }

    #[test]
    fn a_reference_of_one_repeated_point_is_one_leaf_and_every_distance_is_to_it() {
        let reference = vec![vec![1.0, 2.0]; 100];
        let index = KnnIndex::new(&reference, 2);
        assert_eq!(index.nodes.len(), 1);
        let mut search = Search::default();
        assert_eq!(index.mean_distance(&[4.0, 6.0], 10, &mut search), 5.0);
        assert_eq!(KnnIndex::new(&[], 2).mean_distance(&[0.0, 0.0], 10, &mut search), 0.0);
    }
}
