//! Exact (flat) k-nearest-neighbour search over a snapshot's segments.
//!
//! Queries are processed in blocks against blocks of rows with the blocked dot-product kernel
//! (a small matrix product), so a batch of queries reads each row once per query block rather
//! than once per query. Work is split into (row chunk × query block) units run on rayon.
//!
//! Segments with an HNSW graph are searched through it. A filter (a `Selection`) restricts
//! every segment to the rows it selects; each segment then picks its plan from the filter's
//! selectivity: a graph search that skips unselected rows, a scan of all rows, or, when few
//! rows match, an exact pass over only the selected rows.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rayon::prelude::*;

use arrow_array::{Array, BooleanArray, RecordBatch};

use crate::distance::{kernels, Metric};
use crate::snapshot::{Part, Snapshot};
use crate::storage::Bitmap;
use crate::{Error, Result};

/// The rows a filtered search may return: for each part of the snapshot it was made from, the
/// selected rows (`None`: every row).
#[derive(Debug, Clone)]
pub struct Selection {
    version: u64,
    parts: Vec<Option<Bitmap>>,
}

impl Selection {
    /// Evaluates `mask` on each segment's rows (a null counts as not selected).
    pub fn from_masks(
        snapshot: &Snapshot,
        mut mask: impl FnMut(&RecordBatch) -> Result<BooleanArray>,
    ) -> Result<Selection> {
        let mut parts = Vec::with_capacity(snapshot.parts.len());
        for part in &snapshot.parts {
            let batch = &part.seg.batch;
            let m = mask(batch)?;
            if m.len() != batch.num_rows() {
                return Err(Error::invalid(format!(
                    "filter mask has {} rows, the segment {}",
                    m.len(),
                    batch.num_rows()
                )));
            }
            let mut bits = Bitmap::new(m.len());
            if m.null_count() == 0 && m.true_count() == m.len() {
                parts.push(None);
                continue;
            }
            for (row, v) in m.iter().enumerate() {
                if v == Some(true) {
                    bits.insert(row);
                }
            }
            parts.push(Some(bits));
        }
        Ok(Selection {
            version: snapshot.version,
            parts,
        })
    }

    /// Selected rows, deleted ones included.
    pub fn count(&self, snapshot: &Snapshot) -> usize {
        self.parts
            .iter()
            .zip(&snapshot.parts)
            .map(|(s, p)| s.as_ref().map_or(p.seg.rows(), Bitmap::count))
            .sum()
    }
}

/// How one part is searched.
enum Plan<'a> {
    Skip,
    /// Every row, block by block (rows outside the selection are passed over).
    Scan(Option<&'a Bitmap>),
    /// Only the selected rows, one by one.
    Rows(Vec<u32>),
    /// The HNSW graph (rows outside the selection are traversed but not returned).
    Graph(Option<&'a Bitmap>),
}

/// Picks a part's plan. A graph search with a filter that keeps a fraction `f` of the `n` rows
/// evaluates about `C·ef/f` rows before it has `ef` selected ones; an exact pass evaluates the
/// `f·n` selected rows. The exact pass wins when `(f·n)² < C·ef·n`.
fn plan<'a>(part: &Part, sel: Option<&'a Bitmap>, ef: usize) -> Plan<'a> {
    const GRAPH_COST: usize = 32;
    let n = part.seg.rows();
    let Some(bits) = sel else {
        return match part.index {
            Some(_) => Plan::Graph(None),
            None => Plan::Scan(None),
        };
    };
    let c = bits.count();
    let rows = || {
        Plan::Rows(
            bits.iter()
                .filter(|&r| !part.is_deleted(r))
                .map(|r| r as u32)
                .collect(),
        )
    };
    if c == 0 {
        Plan::Skip
    } else if part.index.is_some() {
        if (c as u128).pow(2) <= (GRAPH_COST * ef) as u128 * n as u128 {
            rows()
        } else {
            Plan::Graph(Some(bits))
        }
    } else if c * 8 <= n {
        rows()
    } else {
        Plan::Scan(Some(bits))
    }
}

/// One search result: a row of a snapshot part, and its distance under the collection metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Index of the segment within the snapshot.
    pub part: u32,
    /// Row within that segment.
    pub row: u32,
    pub distance: f32,
}

#[derive(Clone, Copy)]
struct Cand {
    dist: f32,
    key: u64,
}

impl PartialEq for Cand {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Ordering {
        self.dist.total_cmp(&o.dist).then(self.key.cmp(&o.key))
    }
}

/// The k best candidates seen so far (a max-heap on distance).
struct TopK {
    k: usize,
    heap: BinaryHeap<Cand>,
}

impl TopK {
    fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }
    #[inline]
    fn threshold(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::INFINITY
        } else {
            self.heap.peek().map_or(f32::INFINITY, |c| c.dist)
        }
    }
    #[inline]
    fn push(&mut self, c: Cand) {
        if self.heap.len() < self.k {
            self.heap.push(c);
        } else if let Some(mut top) = self.heap.peek_mut() {
            if c < *top {
                *top = c;
            }
        }
    }
}

/// Queries per block: the many-query kernel packs each row panel once per block, so bigger
/// blocks amortize packing; 256 × 384-d queries are 384 KiB, within L2.
const QUERY_BLOCK: usize = 1024;
/// Rows per kernel call: the score tile is QUERY_BLOCK × ROW_BLOCK floats.
const ROW_BLOCK: usize = 64;
/// Rows per parallel work unit.
const ROW_CHUNK: usize = 4096;

/// Checks query vectors: the right dimension and finite values.
pub fn check_queries(queries: &[f32], dim: usize) -> Result<usize> {
    if queries.is_empty() || !queries.len().is_multiple_of(dim) {
        return Err(Error::invalid(format!(
            "query has {} values; expected a multiple of the collection's dimension {dim}",
            queries.len()
        )));
    }
    if let Some(i) = queries.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "query {} has a non-finite value at position {}",
            i / dim,
            i % dim
        )));
    }
    Ok(queries.len() / dim)
}

impl Snapshot {
    /// The `k` nearest live rows to `query`, nearest first.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<Hit>> {
        Ok(self.search_batch(query, k)?.pop().unwrap_or_default())
    }

    /// The `k` nearest live rows to each of the queries packed row-major in `queries`.
    pub fn search_batch(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<Hit>>> {
        self.search_batch_ef(queries, k, None)
    }

    /// As `search_batch`; segments with an HNSW index are searched with beam width `ef`
    /// (default: the collection's `ef_search`), the others exactly.
    pub fn search_batch_ef(
        &self,
        queries: &[f32],
        k: usize,
        ef: Option<usize>,
    ) -> Result<Vec<Vec<Hit>>> {
        self.search_filtered(queries, k, ef, None)
    }

    /// As `search_batch_ef`, returning only rows of `filter` (made from this snapshot): the
    /// `k` nearest selected live rows, or all of them when fewer match.
    pub fn search_filtered(
        &self,
        queries: &[f32],
        k: usize,
        ef: Option<usize>,
        filter: Option<&Selection>,
    ) -> Result<Vec<Vec<Hit>>> {
        let dim = self.dim();
        let nq = check_queries(queries, dim)?;
        if let Some(f) = filter {
            if f.version != self.version || f.parts.len() != self.parts.len() {
                return Err(Error::invalid(
                    "the filter selection was made from another snapshot",
                ));
            }
        }
        // No more than the live rows can come back: a huge k must not size the heaps.
        let k = k.min(self.count());
        if k == 0 {
            return Ok(vec![Vec::new(); nq]);
        }
        let ef = ef.unwrap_or(self.index.ef_search).max(k).min(self.count());
        let plans: Vec<Plan> = self
            .parts
            .iter()
            .enumerate()
            .map(|(p, part)| plan(part, filter.and_then(|f| f.parts[p].as_ref()), ef))
            .collect();
        let metric = self.metric();
        let mut qs = queries.to_vec();
        let qnorms: Vec<f32> = qs
            .chunks_exact_mut(dim)
            .map(|q| {
                let n2 = (kernels().dot)(q, q);
                if metric == Metric::Cosine && n2 > 0.0 {
                    let inv = 1.0 / n2.sqrt();
                    q.iter_mut().for_each(|v| *v *= inv);
                }
                n2
            })
            .collect();

        // Work units: (part, first row, end row, first query, end query).
        let mut units = Vec::new();
        for (p, part) in self.parts.iter().enumerate() {
            if !matches!(plans[p], Plan::Scan(_)) {
                continue;
            }
            let rows = part.seg.rows();
            for r0 in (0..rows).step_by(ROW_CHUNK) {
                for q0 in (0..nq).step_by(QUERY_BLOCK) {
                    units.push((
                        p,
                        r0,
                        (r0 + ROW_CHUNK).min(rows),
                        q0,
                        (q0 + QUERY_BLOCK).min(nq),
                    ));
                }
            }
        }
        let partials: Vec<(usize, Vec<TopK>)> = units
            .into_par_iter()
            .map(|(p, r0, r1, q0, q1)| {
                let Plan::Scan(sel) = plans[p] else {
                    unreachable!("units are made for scanned parts")
                };
                let tops = self.scan_unit(
                    metric,
                    p,
                    sel,
                    r0,
                    r1,
                    &qs[q0 * dim..q1 * dim],
                    &qnorms[q0..q1],
                    k,
                );
                (q0, tops)
            })
            .collect();

        let mut merged: Vec<TopK> = (0..nq).map(|_| TopK::new(k)).collect();
        for (q0, tops) in partials {
            for (i, t) in tops.into_iter().enumerate() {
                for c in t.heap {
                    merged[q0 + i].push(c);
                }
            }
        }
        if plans
            .iter()
            .any(|p| matches!(p, Plan::Graph(_) | Plan::Rows(_)))
        {
            let graph_hits: Vec<Vec<Cand>> = queries
                .par_chunks(dim)
                .zip(qs.par_chunks(dim))
                .map(|(raw, prepared)| self.search_one(&plans, metric, raw, prepared, k, ef))
                .collect();
            for (top, hits) in merged.iter_mut().zip(graph_hits) {
                for c in hits {
                    top.push(c);
                }
            }
        }
        Ok(merged
            .into_iter()
            .map(|t| {
                t.heap
                    .into_sorted_vec()
                    .into_iter()
                    .map(|c| Hit {
                        part: (c.key >> 32) as u32,
                        row: c.key as u32,
                        distance: if metric == Metric::L2 {
                            c.dist.sqrt()
                        } else {
                            c.dist
                        },
                    })
                    .collect()
            })
            .collect())
    }

    /// One query against the parts searched per query: graphs, and the selected rows of
    /// sparsely filtered parts. `raw` is the query as given, `prepared` as the scan uses it.
    fn search_one(
        &self,
        plans: &[Plan],
        metric: Metric,
        raw: &[f32],
        prepared: &[f32],
        k: usize,
        ef: usize,
    ) -> Vec<Cand> {
        let mut out = Vec::new();
        for (p, part) in self.parts.iter().enumerate() {
            let key = |row: u32| ((p as u64) << 32) | row as u64;
            match &plans[p] {
                Plan::Graph(sel) => {
                    let graph = part.index.as_ref().expect("graph plans have a graph");
                    let space = part.seg.space(metric);
                    let accept = |row: u32| {
                        !part.is_deleted(row as usize)
                            && sel.is_none_or(|s| s.contains(row as usize))
                    };
                    for (row, dist) in graph.search(&space, raw, k, ef, &accept) {
                        out.push(Cand {
                            dist,
                            key: key(row),
                        });
                    }
                }
                Plan::Rows(rows) => {
                    let space = part.seg.space(metric);
                    let mut top = TopK::new(k);
                    for &row in rows {
                        let dist = space.dist(prepared, row);
                        if dist < top.threshold() {
                            top.push(Cand {
                                dist,
                                key: key(row),
                            });
                        }
                    }
                    out.extend(top.heap);
                }
                Plan::Skip | Plan::Scan(_) => {}
            }
        }
        out
    }

    /// Scans rows `r0..r1` of part `p` for a block of (prepared) queries.
    #[allow(clippy::too_many_arguments)]
    fn scan_unit(
        &self,
        metric: Metric,
        p: usize,
        sel: Option<&Bitmap>,
        r0: usize,
        r1: usize,
        qs: &[f32],
        qnorms: &[f32],
        k: usize,
    ) -> Vec<TopK> {
        let part = &self.parts[p];
        let dim = part.seg.dim;
        let nq = qnorms.len();
        let vectors = part.seg.vectors();
        // Per row: 1/|x| for cosine, |x|² for l2 (cached by the segment).
        let norms = match metric {
            Metric::Dot => &[][..],
            Metric::Cosine => part.seg.inv_norms(),
            Metric::L2 => part.seg.sq_norms(),
        };
        let block = kernels().dot_block;
        let mut tops: Vec<TopK> = (0..nq).map(|_| TopK::new(k)).collect();
        let mut scores = vec![0f32; nq * ROW_BLOCK];
        let mut dists = vec![0f32; ROW_BLOCK];
        let base_key = (p as u64) << 32;
        for x0 in (r0..r1).step_by(ROW_BLOCK) {
            let nr = ROW_BLOCK.min(r1 - x0);
            let scores = &mut scores[..nq * nr];
            block(qs, &vectors[x0 * dim..(x0 + nr) * dim], dim, scores);
            for (qi, top) in tops.iter_mut().enumerate() {
                let row_scores = &scores[qi * nr..(qi + 1) * nr];
                let dists = &mut dists[..nr];
                match metric {
                    Metric::Dot => dists.iter_mut().zip(row_scores).for_each(|(d, s)| *d = -s),
                    Metric::Cosine => {
                        for ((d, s), inv) in
                            dists.iter_mut().zip(row_scores).zip(&norms[x0..x0 + nr])
                        {
                            *d = 1.0 - s * inv;
                        }
                    }
                    Metric::L2 => {
                        let qn = qnorms[qi];
                        for ((d, s), xn) in
                            dists.iter_mut().zip(row_scores).zip(&norms[x0..x0 + nr])
                        {
                            *d = (qn + xn - 2.0 * s).max(0.0);
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
                    if dist < thr
                        && !part.is_deleted(x0 + j)
                        && sel.is_none_or(|s| s.contains(x0 + j))
                    {
                        top.push(Cand {
                            dist,
                            key: base_key | (x0 + j) as u64,
                        });
                        thr = top.threshold();
                    }
                }
            }
        }
        tops
    }
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
