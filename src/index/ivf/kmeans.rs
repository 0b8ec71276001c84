//! k-means over rows held in memory, and the nearest-centroid search under it: how rows and
//! centroids are compared (`Probe`), each row's nearest centroids (`nearest`, `assign`) and
//! the Lloyd steps (`kmeans`, `recentre`).

use rayon::prelude::*;

use crate::distance::{kernels, Metric};
use crate::quant::splitmix;
use crate::task::Task;

/// k-means rounds over the training sample.
const ROUNDS: usize = 10;
/// Rows per assignment block (a block × lists score tile).
const ASSIGN_BLOCK: usize = 64;

/// How rows are compared with centroids.
#[derive(Clone, Copy)]
pub(super) enum Probe {
    /// Smallest `|c|² − 2⟨x, c⟩` (euclidean).
    Euclid,
    /// Largest `⟨x, c⟩`.
    Inner,
}

impl Probe {
    /// How rows are compared with centroids under `metric`.
    pub(super) fn of(metric: Metric) -> Probe {
        match metric {
            Metric::Dot => Probe::Inner,
            _ => Probe::Euclid,
        }
    }

    /// The ranking (smaller nearer) of a centroid with squared norm `c2` and inner product
    /// `ip` with the row or query.
    #[inline]
    pub(super) fn rank(self, ip: f32, c2: f32) -> f32 {
        match self {
            Probe::Euclid => c2 - 2.0 * ip,
            Probe::Inner => -ip,
        }
    }
}

/// The `t` nearest centroids of each row of `data` (`dim` values each, row-major), nearest
/// first, with their rankings (`Probe::rank`, comparable across calls for the same row):
/// `t` entries per row.
pub(super) fn nearest(
    data: &[f32],
    dim: usize,
    centroids: &[f32],
    probe: Probe,
    t: usize,
) -> Vec<(f32, u32)> {
    let lists = centroids.len() / dim;
    let t = t.min(lists).max(1);
    let c2: Vec<f32> = centroids
        .chunks_exact(dim)
        .map(|c| (kernels().dot)(c, c))
        .collect();
    let blocks: Vec<Vec<(f32, u32)>> = data
        .par_chunks(ASSIGN_BLOCK * dim)
        .map_init(Vec::new, |scores, block| {
            let nr = block.len() / dim;
            // Centroids as the "queries" and the rows as the block the kernel packs, the
            // shape flat search tunes it for: the packing is of these few rows, not of every
            // centroid once per block.
            scores.resize(lists * nr, 0f32);
            let scores = &mut scores[..lists * nr];
            (kernels().dot_block)(centroids, block, dim, scores);
            let mut best = vec![(f32::INFINITY, 0u32); nr * t];
            for (j, (s, &c)) in scores.chunks_exact(nr).zip(&c2).enumerate() {
                for (b, &ip) in best.chunks_exact_mut(t).zip(s) {
                    keep_nearest(b, (probe.rank(ip, c), j as u32));
                }
            }
            best
        })
        .collect();
    blocks.concat()
}

/// Offers `(ranking, list)` to `best`, nearest first: it takes its place in order when it is
/// nearer than the last, which drops off (`best` is a handful long).
#[inline]
pub(super) fn keep_nearest(best: &mut [(f32, u32)], item: (f32, u32)) {
    let t = best.len();
    if item.0 < best[t - 1].0 {
        let mut at = t - 1;
        while at > 0 && best[at - 1].0 > item.0 {
            best[at] = best[at - 1];
            at -= 1;
        }
        best[at] = item;
    }
}

/// The nearest centroid of each row of `data`.
pub(super) fn assign(data: &[f32], dim: usize, centroids: &[f32], probe: Probe) -> Vec<u32> {
    nearest(data, dim, centroids, probe, 1)
        .into_iter()
        .map(|(_, j)| j)
        .collect()
}

/// `k` k-means centroids of `data` (`dim` values per row, at least `k` rows); `seed`
/// varies the restarts of empty clusters. `None` when cancelled.
pub(super) fn kmeans(
    data: &[f32],
    dim: usize,
    k: usize,
    probe: Probe,
    seed: u64,
    cancel: &Task,
) -> Option<Vec<f32>> {
    let m = data.len() / dim;
    // Start from `k` distinct rows spread through the data (a sample in hash order).
    let mut centroids: Vec<f32> = (0..k)
        .map(|j| j * m / k)
        .flat_map(|i| data[i * dim..(i + 1) * dim].to_vec())
        .collect();
    for round in 0..ROUNDS {
        if cancel.cancelled() {
            return None;
        }
        let owner = assign(data, dim, &centroids, probe);
        let counts = recentre(data, dim, &owner, &mut centroids);
        for (c, _) in counts.iter().enumerate().filter(|(_, &n)| n == 0) {
            // An empty cluster restarts at a row chosen by the seed, round and cluster.
            let i = (splitmix(seed ^ (round * k + c) as u64) % m as u64) as usize;
            centroids[c * dim..(c + 1) * dim].copy_from_slice(&data[i * dim..(i + 1) * dim]);
        }
    }
    Some(centroids)
}

/// One Lloyd step: each centroid with rows (`owner[i]` is row i's) moves to their mean; the
/// others stay. Returns the rows of each centroid.
pub(super) fn recentre(
    data: &[f32],
    dim: usize,
    owner: &[u32],
    centroids: &mut [f32],
) -> Vec<usize> {
    let k = centroids.len() / dim;
    let mut sums = vec![0f64; k * dim];
    let mut counts = vec![0usize; k];
    for (row, &c) in data.chunks_exact(dim).zip(owner) {
        let c = c as usize;
        counts[c] += 1;
        for (s, &v) in sums[c * dim..(c + 1) * dim].iter_mut().zip(row) {
            *s += f64::from(v);
        }
    }
    for (c, &count) in counts.iter().enumerate().filter(|(_, &n)| n > 0) {
        let inv = 1.0 / count as f64;
        for (x, s) in centroids[c * dim..(c + 1) * dim]
            .iter_mut()
            .zip(&sums[c * dim..(c + 1) * dim])
        {
            *x = (s * inv) as f32;
        }
    }
    counts
}
