//! Exact search: the truth every index is tested against, and how segments without an index
//! are searched.
//!
//! A block of queries is scored against a block of rows with the blocked dot-product kernel
//! (a small matrix product), so a batch of queries reads each row once per query block rather
//! than once per query; the metric is applied to the block of scores, and a vectorized minimum
//! skips blocks holding nothing better than the current k-th distance.

use crate::bitmap::Bitmap;
use crate::distance::{kernels, Metric};
use crate::topk::{Neighbor, TopK};
use crate::vector::{Floats, VectorView};

/// Rows per kernel call: the score tile is queries × ROW_BLOCK floats.
const ROW_BLOCK: usize = 64;

/// The rows of one segment an exact scan reads.
pub(crate) struct FlatRows<'a> {
    pub metric: Metric,
    pub dim: usize,
    /// Row-major vectors.
    pub vectors: Floats<'a>,
    /// Per row, what the metric ranks with (`Segment::rank_norms`).
    pub norms: &'a [f32],
    pub deletes: Option<&'a Bitmap>,
    /// Only these rows may be returned (`None`: all).
    pub selection: Option<&'a Bitmap>,
    /// Added to a row number to make a candidate's id.
    pub key_base: u64,
}

impl FlatRows<'_> {
    /// Scans rows `r0..r1` for a block of prepared queries (`qs`, row-major; `qnorms` their
    /// |q|²): the `k` nearest per query.
    pub(crate) fn scan(
        &self,
        r0: usize,
        r1: usize,
        qs: &[f32],
        qnorms: &[f32],
        k: usize,
    ) -> Vec<TopK> {
        let (dim, norms, metric) = (self.dim, self.norms, self.metric);
        let nq = qnorms.len();
        let block = kernels().dot_block;
        let mut tops: Vec<TopK> = (0..nq).map(|_| TopK::new(k)).collect();
        let mut scores = vec![0f32; nq * ROW_BLOCK];
        let mut dists = vec![0f32; ROW_BLOCK];
        // Half-precision rows are widened a block at a time.
        let mut wide = Vec::new();
        for x0 in (r0..r1).step_by(ROW_BLOCK) {
            let nr = ROW_BLOCK.min(r1 - x0);
            let scores = &mut scores[..nq * nr];
            let rows = self.vectors.slice(x0 * dim, (x0 + nr) * dim);
            block(qs, rows.widened(&mut wide), dim, scores);
            for (qi, top) in tops.iter_mut().enumerate() {
                let row_scores = &scores[qi * nr..(qi + 1) * nr];
                let dists = &mut dists[..nr];
                // One loop per metric, so each vectorizes with the metric's formula inlined.
                match metric {
                    Metric::Dot => {
                        for (d, s) in dists.iter_mut().zip(row_scores) {
                            *d = Metric::Dot.rank(*s, 0.0, 0.0);
                        }
                    }
                    Metric::Cosine => {
                        for ((d, s), x) in dists.iter_mut().zip(row_scores).zip(&norms[x0..x0 + nr])
                        {
                            *d = Metric::Cosine.rank(*s, 0.0, *x);
                        }
                    }
                    Metric::L2 => {
                        let qn = qnorms[qi];
                        for ((d, s), x) in dists.iter_mut().zip(row_scores).zip(&norms[x0..x0 + nr])
                        {
                            *d = Metric::L2.rank(*s, qn, *x).max(0.0);
                        }
                    }
                }
                // Most blocks hold nothing better than the current k-th distance: test that
                // with a vectorized minimum before looking at rows one by one.
                let mut thr = top.threshold();
                if block_min(dists) >= thr {
                    continue;
                }
                for (j, &dist) in dists.iter().enumerate() {
                    let row = x0 + j;
                    if dist < thr
                        && !self.deletes.is_some_and(|d| d.contains(row))
                        && self.selection.is_none_or(|s| s.contains(row))
                    {
                        top.push(Neighbor::new(dist, self.key_base | row as u64));
                        thr = top.threshold();
                    }
                }
            }
        }
        tops
    }
}

/// The `k` nearest of the listed `rows` of `view` to a prepared query, one row at a time (for
/// filters that select few rows).
pub(crate) fn scan_listed(
    view: &VectorView<'_>,
    prepared: &[f32],
    rows: &[u32],
    k: usize,
    key_base: u64,
) -> TopK {
    let mut top = TopK::new(k);
    for &row in rows {
        let dist = view.dist(prepared, row);
        if dist < top.threshold() {
            top.push(Neighbor::new(dist, key_base | row as u64));
        }
    }
    top
}

/// The minimum of `v`, computed in eight independent lanes so it vectorizes.
#[inline]
fn block_min(v: &[f32]) -> f32 {
    let mut lanes = [f32::INFINITY; 8];
    let chunks = v.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &x) in lanes.iter_mut().zip(c) {
            *m = if x < *m { x } else { *m };
        }
    }
    tail.iter()
        .chain(lanes.iter())
        .fold(f32::INFINITY, |m, &x| if x < m { x } else { m })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_min_matches_fold() {
        let v: Vec<f32> = (0..37).map(|i| ((i * 13) % 17) as f32 - 3.5).collect();
        assert_eq!(
            block_min(&v),
            v.iter().cloned().fold(f32::INFINITY, f32::min)
        );
        assert_eq!(block_min(&[]), f32::INFINITY);
    }
}
