//! HNSW (hierarchical navigable small world) graph over a segment's vectors.
//!
//! Built in parallel (rayon) with a lock per node and level, then frozen into a flat layout:
//! layer 0 is `n × (1 + 2M)` u32 words (a count, then the neighbour ids), and upper layers are
//! stored only for the few nodes that reach them. The flat layout is what gets persisted and
//! searched; searching reuses per-thread visited sets (no per-query allocation of them).

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use std::borrow::Cow;
use std::path::Path;

use arrow_buffer::{Buffer, ScalarBuffer};
use rayon::prelude::*;

use crate::distance::{kernels, Metric};
use crate::{Error, Result};

/// Build parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    /// Neighbours per node on upper layers (layer 0 keeps 2M).
    pub m: usize,
    pub ef_construction: usize,
    pub seed: u64,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 200,
            seed: 0x5EED,
        }
    }
}

/// The vectors a graph is built over, with what the metric needs precomputed.
pub struct Space<'a> {
    data: &'a [f32],
    dim: usize,
    metric: Metric,
    /// 1/|v| for cosine.
    inv_norms: Cow<'a, [f32]>,
}

impl<'a> Space<'a> {
    pub fn new(data: &'a [f32], dim: usize, metric: Metric) -> Self {
        let inv_norms = if metric == Metric::Cosine {
            Cow::Owned(inverse_norms(data, dim))
        } else {
            Cow::Borrowed(&[][..])
        };
        Space {
            data,
            dim,
            metric,
            inv_norms,
        }
    }

    /// A space whose inverse norms (cosine) were computed already, e.g. cached by a segment.
    pub fn with_inverse_norms(
        data: &'a [f32],
        dim: usize,
        metric: Metric,
        inv_norms: &'a [f32],
    ) -> Self {
        Space {
            data,
            dim,
            metric,
            inv_norms: Cow::Borrowed(inv_norms),
        }
    }

    pub fn len(&self) -> usize {
        self.data.len() / self.dim
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Starts loading row `i` into the cache.
    #[inline]
    fn prefetch(&self, i: u32) {
        crate::distance::prefetch_rows(self.data, i as usize * self.dim, self.dim);
    }

    #[inline]
    fn row(&self, i: u32) -> &[f32] {
        let i = i as usize;
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// A query prepared for this space (normalized for cosine).
    pub fn prepare(&self, q: &[f32]) -> Vec<f32> {
        let mut q = q.to_vec();
        if self.metric == Metric::Cosine {
            let n = (kernels().dot)(&q, &q).sqrt();
            if n > 0.0 {
                q.iter_mut().for_each(|v| *v /= n);
            }
        }
        q
    }

    /// Distance from a prepared query to row `i`, in the metric's ranking form (squared for l2).
    #[inline]
    pub fn dist(&self, q: &[f32], i: u32) -> f32 {
        let k = kernels();
        match self.metric {
            Metric::Dot => -(k.dot)(q, self.row(i)),
            Metric::L2 => (k.l2sq)(q, self.row(i)),
            Metric::Cosine => 1.0 - (k.dot)(q, self.row(i)) * self.inv_norms[i as usize],
        }
    }

    fn dist_rows(&self, a: u32, b: u32) -> f32 {
        let k = kernels();
        match self.metric {
            Metric::Dot => -(k.dot)(self.row(a), self.row(b)),
            Metric::L2 => (k.l2sq)(self.row(a), self.row(b)),
            Metric::Cosine => {
                1.0 - (k.dot)(self.row(a), self.row(b))
                    * self.inv_norms[a as usize]
                    * self.inv_norms[b as usize]
            }
        }
    }
}

/// 1/|v| for every vector (0 for zero vectors). Serial on purpose: segments compute it
/// inside lazy initializers (see `segment`).
pub fn inverse_norms(data: &[f32], dim: usize) -> Vec<f32> {
    let dot = kernels().dot;
    data.chunks_exact(dim)
        .map(|v| {
            let n = dot(v, v).sqrt();
            if n > 0.0 {
                1.0 / n
            } else {
                0.0
            }
        })
        .collect()
}

#[derive(Clone, Copy)]
struct Near(f32, u32);
impl PartialEq for Near {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == std::cmp::Ordering::Equal
    }
}
impl Eq for Near {}
impl PartialOrd for Near {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Near {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0).then(self.1.cmp(&o.1))
    }
}

/// A visited set cleared in O(1) by bumping an epoch.
struct Visited {
    marks: Vec<u32>,
    epoch: u32,
}

impl Visited {
    fn reset(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.fill(0);
            self.epoch = 1;
        }
    }
    /// Marks `i`; returns whether it was unvisited.
    #[inline]
    fn insert(&mut self, i: u32) -> bool {
        let m = &mut self.marks[i as usize];
        let fresh = *m != self.epoch;
        *m = self.epoch;
        fresh
    }
}

/// A thread's reusable search state: searches allocate no visited set, heap or list of
/// their own.
struct Scratch {
    visited: Visited,
    frontier: BinaryHeap<Reverse<Near>>,
    best: BinaryHeap<Near>,
    nbrs: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            visited: Visited { marks: Vec::new(), epoch: 0 },
            frontier: BinaryHeap::new(),
            best: BinaryHeap::new(),
            nbrs: Vec::new(),
        })
    };
}

/// Distances from one query to the nodes of a graph, as a search computes them.
trait Dist {
    fn dist(&self, i: u32) -> f32;
    /// Starts loading what `dist(i)` reads.
    fn prefetch(&self, i: u32);
    fn len(&self) -> usize;
}

/// Exact distances from a prepared query.
struct Exact<'a> {
    space: &'a Space<'a>,
    q: &'a [f32],
}

impl Dist for Exact<'_> {
    #[inline]
    fn dist(&self, i: u32) -> f32 {
        self.space.dist(self.q, i)
    }
    #[inline]
    fn prefetch(&self, i: u32) {
        self.space.prefetch(i)
    }
    fn len(&self) -> usize {
        self.space.len()
    }
}

/// 8-bit scalar quantization of a segment's vectors (normalized first for cosine), stored in
/// the index file. Graph search traverses these codes, a quarter of the bytes of the vectors,
/// and re-ranks its final candidates with exact distances.
#[derive(Debug, Clone, PartialEq)]
pub struct Codes {
    pub dim: usize,
    /// Per dimension: the value of code 0 and the step between codes.
    pub lo: ScalarBuffer<f32>,
    pub step: ScalarBuffer<f32>,
    /// Per row: the squared norm of the decoded vector (for l2).
    pub sq: ScalarBuffer<f32>,
    /// `n × dim` codes, row-major.
    pub codes: ScalarBuffer<u8>,
}

impl Codes {
    /// Quantizes every vector of `space`, each dimension over its own range.
    pub fn encode(space: &Space<'_>) -> Codes {
        let dim = space.dim;
        let normalized = |i: usize| -> Cow<'_, [f32]> {
            let row = space.row(i as u32);
            if space.metric == Metric::Cosine {
                let inv = space.inv_norms[i];
                Cow::Owned(row.iter().map(|v| v * inv).collect())
            } else {
                Cow::Borrowed(row)
            }
        };
        let (lo, hi) = (0..space.len())
            .into_par_iter()
            .fold(
                || (vec![f32::INFINITY; dim], vec![f32::NEG_INFINITY; dim]),
                |(mut lo, mut hi), i| {
                    for (d, &v) in normalized(i).iter().enumerate() {
                        lo[d] = lo[d].min(v);
                        hi[d] = hi[d].max(v);
                    }
                    (lo, hi)
                },
            )
            .reduce(
                || (vec![f32::INFINITY; dim], vec![f32::NEG_INFINITY; dim]),
                |(a, b), (c, d)| {
                    let lo = a.iter().zip(&c).map(|(x, y)| x.min(*y)).collect();
                    let hi = b.iter().zip(&d).map(|(x, y)| x.max(*y)).collect();
                    (lo, hi)
                },
            );
        let lo: Vec<f32> = lo
            .iter()
            .map(|&v| if v.is_finite() { v } else { 0.0 })
            .collect();
        let step: Vec<f32> = lo
            .iter()
            .zip(&hi)
            .map(|(&l, &h)| {
                let s = (h - l) / 255.0;
                if s > 0.0 && s.is_finite() {
                    s
                } else {
                    1.0
                }
            })
            .collect();
        let mut codes = vec![0u8; space.len() * dim];
        let sq: Vec<f32> = codes
            .par_chunks_mut(dim.max(1))
            .enumerate()
            .map(|(i, out)| {
                let mut sq = 0.0;
                for (d, (&v, c)) in normalized(i).iter().zip(out.iter_mut()).enumerate() {
                    *c = ((v - lo[d]) / step[d]).round().clamp(0.0, 255.0) as u8;
                    let decoded = lo[d] + step[d] * *c as f32;
                    sq += decoded * decoded;
                }
                sq
            })
            .collect();
        Codes {
            dim,
            lo: lo.into(),
            step: step.into(),
            sq: sq.into(),
            codes: codes.into(),
        }
    }

    #[inline]
    fn row(&self, i: u32) -> &[u8] {
        let i = i as usize;
        &self.codes[i * self.dim..(i + 1) * self.dim]
    }
}

/// Approximate distances from a prepared query to coded rows: `q · x̃` is
/// `Σ q·lo + Σ (q·step)·code`.
struct Coded<'a> {
    codes: &'a Codes,
    metric: Metric,
    weights: Vec<f32>,
    bias: f32,
    /// `|q|²` (l2).
    qn2: f32,
}

impl<'a> Coded<'a> {
    fn new(codes: &'a Codes, metric: Metric, q: &[f32]) -> Self {
        let weights = q
            .iter()
            .zip(codes.step.iter())
            .map(|(q, s)| q * s)
            .collect();
        let dot = kernels().dot;
        Coded {
            codes,
            metric,
            weights,
            bias: dot(q, &codes.lo),
            qn2: dot(q, q),
        }
    }
}

impl Dist for Coded<'_> {
    #[inline]
    fn dist(&self, i: u32) -> f32 {
        let ip = self.bias + (kernels().dot_u8)(&self.weights, self.codes.row(i));
        match self.metric {
            Metric::Cosine => 1.0 - ip,
            Metric::Dot => -ip,
            Metric::L2 => self.qn2 + self.codes.sq[i as usize] - 2.0 * ip,
        }
    }
    #[inline]
    fn prefetch(&self, i: u32) {
        let d = self.codes.dim;
        crate::distance::prefetch_rows(&self.codes.codes, i as usize * d, d);
    }
    fn len(&self) -> usize {
        self.codes.sq.len()
    }
}

/// Neighbour lists of a graph, however they are stored.
trait Links {
    fn neighbours(&self, node: u32, level: usize, out: &mut Vec<u32>);
}

/// How many neighbours ahead of the distance computation their vectors are prefetched.
const PREFETCH_AHEAD: usize = 4;

/// Beam search on one layer from `entry`; returns up to `ef` nearest, nearest first.
fn search_layer(
    dist: &impl Dist,
    links: &impl Links,
    entry: &[Near],
    ef: usize,
    level: usize,
    accept: &dyn Fn(u32) -> bool,
) -> Vec<Near> {
    SCRATCH.with(|s| {
        let mut scratch = s.borrow_mut();
        let Scratch {
            visited,
            frontier,
            best,
            nbrs,
        } = &mut *scratch;
        visited.reset(dist.len());
        frontier.clear();
        best.clear();
        for &e in entry {
            visited.insert(e.1);
            frontier.push(Reverse(e));
            if accept(e.1) {
                best.push(e);
            }
        }
        while let Some(Reverse(c)) = frontier.pop() {
            if best.len() >= ef && c.0 > best.peek().map_or(f32::INFINITY, |b| b.0) {
                break;
            }
            links.neighbours(c.1, level, nbrs);
            // Keep the unvisited neighbours, then compute their distances with the next
            // one's vector already on its way into the cache.
            nbrs.retain(|&n| visited.insert(n));
            for &n in nbrs.iter().take(PREFETCH_AHEAD) {
                dist.prefetch(n);
            }
            for (j, &n) in nbrs.iter().enumerate() {
                if let Some(&next) = nbrs.get(j + PREFETCH_AHEAD) {
                    dist.prefetch(next);
                }
                let d = dist.dist(n);
                let worst = best.peek().map_or(f32::INFINITY, |b| b.0);
                if best.len() < ef || d < worst {
                    frontier.push(Reverse(Near(d, n)));
                    if accept(n) {
                        best.push(Near(d, n));
                        if best.len() > ef {
                            best.pop();
                        }
                    }
                }
            }
        }
        let mut found: Vec<Near> = best.drain().collect();
        found.sort_unstable();
        found
    })
}

/// How many candidates ahead re-ranking prefetches their full vectors.
const RERANK_AHEAD: usize = 1;

/// `found` with exact distances, nearest first.
fn rerank(exact: &Exact<'_>, mut found: Vec<Near>) -> Vec<Near> {
    for n in found.iter().take(RERANK_AHEAD) {
        exact.prefetch(n.1);
    }
    for j in 0..found.len() {
        if let Some(next) = found.get(j + RERANK_AHEAD) {
            exact.prefetch(next.1);
        }
        found[j].0 = exact.dist(found[j].1);
    }
    found.sort_unstable();
    found
}

/// The neighbour-selection heuristic: keep a candidate only if it is nearer to the base than
/// to every neighbour already kept (spreads links in different directions).
fn select(space: &Space<'_>, candidates: &[Near], m: usize) -> Vec<u32> {
    let mut kept: Vec<u32> = Vec::with_capacity(m);
    for c in candidates {
        if kept.len() >= m {
            break;
        }
        if kept.iter().all(|&k| space.dist_rows(c.1, k) > c.0) {
            kept.push(c.1);
        }
    }
    kept
}

/// The graph while it is being built: a lock per node and level.
struct Building {
    links: Vec<Vec<Mutex<Vec<u32>>>>,
}

impl Links for Building {
    fn neighbours(&self, node: u32, level: usize, out: &mut Vec<u32>) {
        out.clear();
        out.extend_from_slice(&self.links[node as usize][level].lock().expect("links lock"));
    }
}

/// A frozen graph in its flat layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Hnsw {
    pub m: usize,
    pub entry: u32,
    pub max_level: usize,
    /// `n × (1 + 2m)`: count, then neighbours.
    pub layer0: ScalarBuffer<u32>,
    /// For node i with level ≥ 1, `upper_offsets[i]` indexes `upper`, where its lists for
    /// levels 1..=level follow each other, each `1 + m` words.
    pub upper_offsets: ScalarBuffer<u32>,
    pub upper: ScalarBuffer<u32>,
    /// The quantized vectors search traverses (`None` in graphs without them: searched exactly).
    pub codes: Option<Codes>,
}

impl Links for Hnsw {
    #[inline]
    fn neighbours(&self, node: u32, level: usize, out: &mut Vec<u32>) {
        out.clear();
        // Ids and counts were validated when the graph was opened; a list that a damaged
        // upper offset points past the end of reads as empty rather than panicking.
        let list = if level == 0 {
            let w = 1 + 2 * self.m;
            self.layer0.get(node as usize * w..(node as usize + 1) * w)
        } else {
            let start = self.upper_offsets[node as usize] as usize + (level - 1) * (1 + self.m);
            self.upper.get(start..start + 1 + self.m)
        };
        if let Some(list) = list {
            out.extend_from_slice(&list[1..1 + list[0] as usize]);
        }
    }
}

impl Hnsw {
    /// Builds a graph over every vector of `space` (on the current rayon pool).
    pub fn build(space: &Space<'_>, params: HnswParams) -> Hnsw {
        Self::build_cancellable(space, params, &AtomicBool::new(false)).expect("never cancelled")
    }

    /// As `build`, but gives up (returning `None`) soon after `cancel` is set.
    pub fn build_cancellable(
        space: &Space<'_>,
        params: HnswParams,
        cancel: &AtomicBool,
    ) -> Option<Hnsw> {
        let n = space.len();
        let m = params.m.max(2);
        let ml = 1.0 / (m as f64).ln();
        let levels: Vec<u8> = (0..n)
            .map(|i| {
                let r = splitmix(params.seed ^ i as u64);
                let u = ((r >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                ((-u.ln() * ml) as usize).min(16) as u8
            })
            .collect();
        let graph = Building {
            links: levels
                .iter()
                .map(|&l| (0..=l).map(|_| Mutex::new(Vec::new())).collect())
                .collect(),
        };
        let codes = Codes::encode(space);
        if n == 0 {
            return Some(Hnsw {
                m,
                entry: 0,
                max_level: 0,
                layer0: Vec::new().into(),
                upper_offsets: Vec::new().into(),
                upper: Vec::new().into(),
                codes: Some(codes),
            });
        }
        let entry = RwLock::new((0u32, levels[0] as usize));
        let insert = |i: u32| {
            if cancel.load(Ordering::Relaxed) {
                return;
            }
            let level = levels[i as usize] as usize;
            let (ep, top) = *entry.read().expect("entry lock");
            let q = space.prepare(space.row(i));
            let exact = Exact { space, q: &q };
            let coded = Coded::new(&codes, space.metric, &q);
            let mut eps = vec![Near(coded.dist(ep), ep)];
            for l in (level + 1..=top).rev() {
                eps = search_layer(&coded, &graph, &eps, 1, l, &|_| true);
            }
            for l in (0..=level.min(top)).rev() {
                // Traverse the codes; choose neighbours by exact distance.
                let found = rerank(
                    &exact,
                    search_layer(&coded, &graph, &eps, params.ef_construction, l, &|_| true),
                );
                let cap = if l == 0 { 2 * m } else { m };
                let chosen = select(space, &found, cap);
                *graph.links[i as usize][l].lock().expect("links lock") = chosen.clone();
                for &nb in &chosen {
                    let mut list = graph.links[nb as usize][l].lock().expect("links lock");
                    list.push(i);
                    if list.len() > cap {
                        let mut cands: Vec<Near> = list
                            .iter()
                            .map(|&x| Near(space.dist_rows(nb, x), x))
                            .collect();
                        cands.sort();
                        *list = select(space, &cands, cap);
                    }
                }
                eps = found;
            }
            if level > top {
                let mut e = entry.write().expect("entry lock");
                if level > e.1 {
                    *e = (i, level);
                }
            }
        };
        // A small sequential start gives the parallel phase a connected graph to search.
        let head = n.min(1000) as u32;
        (1..head).for_each(insert);
        (head..n as u32).into_par_iter().for_each(insert);
        if cancel.load(Ordering::Relaxed) {
            return None;
        }

        let (entry, max_level) = *entry.read().expect("entry lock");
        let w0 = 1 + 2 * m;
        let mut layer0 = vec![0u32; n * w0];
        let mut upper_offsets = vec![0u32; n];
        let mut upper = Vec::new();
        for (i, node) in graph.links.iter().enumerate() {
            let l0 = node[0].lock().expect("links lock");
            layer0[i * w0] = l0.len() as u32;
            layer0[i * w0 + 1..i * w0 + 1 + l0.len()].copy_from_slice(&l0);
            if node.len() > 1 {
                upper_offsets[i] = upper.len() as u32;
                for list in &node[1..] {
                    let list = list.lock().expect("links lock");
                    upper.push(list.len() as u32);
                    upper.extend_from_slice(&list);
                    upper.extend(std::iter::repeat_n(0, m - list.len()));
                }
            }
        }
        Some(Hnsw {
            m,
            entry,
            max_level,
            layer0: layer0.into(),
            upper_offsets: upper_offsets.into(),
            upper: upper.into(),
            codes: Some(codes),
        })
    }

    /// Nodes in the graph.
    pub fn len(&self) -> usize {
        self.upper_offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.upper_offsets.is_empty()
    }

    const MAGIC: u64 = u64::from_le_bytes(*b"OMENHNS1");
    const HEADER_WORDS: usize = 8;

    /// The flat file image: a header of eight u32 words (magic ×2, m, entry, max_level, n,
    /// upper length, code dimension or 0) followed by layer 0, the upper offsets and the upper
    /// lists, all little-endian u32; then, with codes, `lo` and `step` (dim f32 each), the
    /// decoded squared norms (n f32) and the n × dim code bytes, zero-padded to a multiple of
    /// four. A mapped file is searched in place.
    pub fn to_bytes(&self) -> Vec<u8> {
        let code_bytes = self.codes.as_ref().map_or(0, |c| {
            (2 * c.dim + c.sq.len()) * 4 + c.codes.len().next_multiple_of(4)
        });
        let words =
            Self::HEADER_WORDS + self.layer0.len() + self.upper_offsets.len() + self.upper.len();
        let mut out = Vec::with_capacity(words * 4 + code_bytes);
        out.extend_from_slice(&Self::MAGIC.to_le_bytes());
        for w in [
            self.m,
            self.entry as usize,
            self.max_level,
            self.len(),
            self.upper.len(),
            self.codes.as_ref().map_or(0, |c| c.dim),
        ] {
            out.extend_from_slice(&(w as u32).to_le_bytes());
        }
        for part in [&self.layer0, &self.upper_offsets, &self.upper] {
            for w in part.iter() {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        if let Some(c) = &self.codes {
            for part in [&c.lo, &c.step, &c.sq] {
                for v in part.iter() {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            out.extend_from_slice(&c.codes);
            out.resize(out.len().next_multiple_of(4), 0);
        }
        out
    }

    /// A graph over the file image in `buffer` (typically a memory map): no copy is made.
    pub fn from_buffer(buffer: Buffer, path: &Path) -> Result<Hnsw> {
        let bad = |why: &str| Error::corrupt(path, format!("bad HNSW index: {why}"));
        if buffer.len() < Self::HEADER_WORDS * 4 || !buffer.len().is_multiple_of(4) {
            return Err(bad("size"));
        }
        if cfg!(target_endian = "big") {
            return Err(bad("big-endian hosts cannot map little-endian index files"));
        }
        let len = buffer.len() / 4;
        let words = ScalarBuffer::<u32>::new(buffer.clone(), 0, len);
        let header = &words[..Self::HEADER_WORDS];
        if u64::from(header[0]) | (u64::from(header[1]) << 32) != Self::MAGIC {
            return Err(bad("magic"));
        }
        let (m, entry, max_level, n, upper_len, dim) = (
            header[2] as usize,
            header[3],
            header[4] as usize,
            header[5] as usize,
            header[6] as usize,
            header[7] as usize,
        );
        let l0 = n * (1 + 2 * m);
        let code_words = if dim == 0 {
            0
        } else {
            2 * dim + n + (n * dim).div_ceil(4)
        };
        if m < 2
            || Self::HEADER_WORDS + l0 + n + upper_len + code_words != words.len()
            || (n > 0 && entry as usize >= n)
        {
            return Err(bad("layout does not match the header"));
        }
        let mut at = Self::HEADER_WORDS;
        let mut take = |len: usize| {
            let s = words.slice(at, len);
            at += len;
            s
        };
        let (layer0, upper_offsets, upper) = (take(l0), take(n), take(upper_len));
        let codes = (dim > 0).then(|| {
            let floats = |at: usize, len: usize| ScalarBuffer::<f32>::new(buffer.clone(), at, len);
            Codes {
                dim,
                lo: floats(at, dim),
                step: floats(at + dim, dim),
                sq: floats(at + 2 * dim, n),
                codes: ScalarBuffer::<u8>::new(buffer.clone(), (at + 2 * dim + n) * 4, n * dim),
            }
        });
        let graph = Hnsw {
            m,
            entry,
            max_level,
            layer0,
            upper_offsets,
            upper,
            codes,
        };
        graph.validate().map_err(|why| bad(&why))?;
        Ok(graph)
    }

    /// Checks every neighbour id and list count, so a damaged file cannot make search panic.
    fn validate(&self) -> Result<(), String> {
        let n = self.len() as u32;
        for list in self.layer0.chunks(1 + 2 * self.m) {
            let c = list[0] as usize;
            if c > 2 * self.m || list[1..1 + c].iter().any(|&x| x >= n) {
                return Err("layer 0 list out of range".into());
            }
        }
        if !self.upper.len().is_multiple_of(1 + self.m) {
            return Err("upper lists are ragged".into());
        }
        for list in self.upper.chunks(1 + self.m) {
            let c = list[0] as usize;
            if c > self.m || list[1..1 + c].iter().any(|&x| x >= n) {
                return Err("upper list out of range".into());
            }
        }
        Ok(())
    }

    /// The `k` nearest accepted nodes to `query` (raw; prepared here), nearest first, with
    /// their ranking distances (squared for l2).
    pub fn search(
        &self,
        space: &Space<'_>,
        query: &[f32],
        k: usize,
        ef: usize,
        accept: &dyn Fn(u32) -> bool,
    ) -> Vec<(u32, f32)> {
        if self.is_empty() || k == 0 {
            return Vec::new();
        }
        let q = space.prepare(query);
        let exact = Exact { space, q: &q };
        let found = match &self.codes {
            Some(codes) if codes.dim == space.dim && codes.sq.len() == space.len() => {
                // Traverse the codes, then re-rank the ef candidates exactly.
                let coded = Coded::new(codes, space.metric, &q);
                let eps = self.descend(&coded);
                rerank(
                    &exact,
                    search_layer(&coded, self, &eps, ef.max(k), 0, accept),
                )
            }
            _ => {
                let eps = self.descend(&exact);
                search_layer(&exact, self, &eps, ef.max(k), 0, accept)
            }
        };
        found.into_iter().take(k).map(|n| (n.1, n.0)).collect()
    }

    /// Greedy search through the upper layers: the entry point of layer 0.
    fn descend(&self, dist: &impl Dist) -> Vec<Near> {
        let mut eps = vec![Near(dist.dist(self.entry), self.entry)];
        for l in (1..=self.max_level).rev() {
            eps = search_layer(dist, self, &eps, 1, l, &|_| true);
        }
        eps
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
