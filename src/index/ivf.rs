//! IVF: a segment's rows partitioned into lists around k-means centroids. A query ranks the
//! centroids, scans the rows of the `nprobe` nearest lists over the index's codes, and
//! re-ranks the best `ef × oversample` candidates with exact distances from the mapped
//! segment. Building costs a sampled k-means and one pass that assigns and encodes every row,
//! an order of magnitude less than a graph.
//!
//! Centroids are trained on the vectors as search sees them (normalized for cosine); l2 and
//! cosine assign and probe by euclidean distance to the centroid, dot by inner product.
//! With one k-means over every list, each row is also filed in a second list chosen as SOAR
//! does (`spill`): twice the entries, and far fewer lists to probe for the same recall (on
//! minilm-phrases 1M, 0.974 with 30 of 1,000 lists against 0.864); a query's candidates are
//! rows, each re-ranked once. With grouped lists (below) the second list is chosen among the
//! nearest lists of the row's nearest groups.
//! Codes are stored in list order, so a list's codes are read in one sweep (RaBitQ codes are
//! centred on their list's centroid); without codes the lists are scanned exactly.
//!
//! 1-bit codes (`rabitq1`, `binary`) are also stored for fast scan: each list in blocks of 32
//! entries, a block holding 16 bytes per group of four dimensions (two entries' nibbles per
//! byte, see `distance::scalar::fastscan`), so one table lookup scores 32 entries at once.
//!
//! With many lists (from `GROUPED_FROM`) the lists come in groups around group centroids
//! (see `train`): a query ranks the groups, then only the lists of its nearest groups (enough
//! of them to hold 8 × `nprobe` lists, and at least 32 groups), so probing reads a fraction of
//! the centroids; lists past those are ranked only when a filter needs them.
//!
//! Built by `builder` (the centroids trained by `train`, with `kmeans`), persisted and mapped
//! by `format` (the file layout), its lists read by `scan`.

mod builder;
mod format;
mod kmeans;
mod scan;
mod train;

use std::cell::Cell;

use arrow_buffer::ScalarBuffer;

use super::{rerank, Accept, SearchParams, VectorIndex};
use crate::distance::{kernels, Metric};
use crate::options::IndexKind;
use crate::quant::rabitq::fastscan::block_starts;
use crate::quant::sq8::{Sq8, Sq8Scorer};
use crate::quant::{Codes, Quantizer};
use crate::vector::{squared_norms, Floats, Scorer, VectorView};
use kmeans::Probe;

/// An IVF index over one segment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ivf {
    /// Dimensions per vector.
    dim: usize,
    /// Rows of the segment (each in one or two lists).
    segment_rows: usize,
    /// `lists × dim`.
    centroids: ScalarBuffer<f32>,
    /// `lists + 1` offsets into `rows`.
    offsets: ScalarBuffer<u32>,
    /// The segment row of each list entry, list by list.
    rows: ScalarBuffer<u32>,
    /// One per list entry, in list order.
    codes: Option<Codes>,
    /// 1-bit codes in fast-scan blocks (see the module notes).
    blocks: Option<ScalarBuffer<u8>>,
    /// The centroids in 8 bits per dimension, what queries rank lists by: a query reads
    /// every centroid (or its nearest groups' ones), a quarter of the bytes of the f32 ones,
    /// scored by an integer kernel (computed when built or opened; on the 10M stand-in the
    /// same recall at every nprobe as the f32 centroids' half-precision copy gave).
    probing: Sq8,
    /// Per list, its first fast-scan block (`lists + 1`, computed from the offsets).
    block_starts: Vec<usize>,
    /// Lists in groups, when there are many.
    groups: Option<Groups>,
}

/// Lists in groups: group `g` holds lists `starts[g]..starts[g + 1]` around `centroids[g]`.
#[derive(Debug, Clone, PartialEq)]
struct Groups {
    /// `groups × dim`.
    centroids: ScalarBuffer<f32>,
    /// `groups + 1` list numbers.
    starts: ScalarBuffer<u32>,
    /// Per group centroid, its squared norm.
    norms: Vec<f32>,
}

impl Groups {
    /// Groups over these centroids and first lists, with the centroids' norms.
    fn new(dim: usize, centroids: ScalarBuffer<f32>, starts: ScalarBuffer<u32>) -> Groups {
        let norms = squared_norms(Floats::F32(&centroids), dim);
        Groups {
            centroids,
            starts,
            norms,
        }
    }

    /// Groups.
    fn len(&self) -> usize {
        self.starts.len() - 1
    }
}

/// Groups of lists a query probes at least (with grouped lists).
const PROBE_GROUPS: usize = 32;
/// Lists ranked per list probed at least (with grouped lists).
const PROBE_FACTOR: usize = 8;

/// Orders (ranking, list) pairs nearest first.
fn by_rank(a: &(f32, u32), b: &(f32, u32)) -> std::cmp::Ordering {
    a.0.total_cmp(&b.0)
}

impl Ivf {
    /// An IVF over these parts, with what is computed from them (the probing centroids, the
    /// fast-scan block starts) and no groups.
    fn new(
        dim: usize,
        segment_rows: usize,
        centroids: ScalarBuffer<f32>,
        offsets: ScalarBuffer<u32>,
        rows: ScalarBuffer<u32>,
        codes: Option<Codes>,
        blocks: Option<ScalarBuffer<u8>>,
    ) -> Ivf {
        let probing = Sq8::train_rows(&VectorView::new(&centroids, dim.max(1), Metric::L2), None);
        let block_starts = block_starts(&offsets);
        Ivf {
            dim,
            segment_rows,
            centroids,
            offsets,
            rows,
            codes,
            blocks,
            probing,
            block_starts,
            groups: None,
        }
    }

    /// Lists.
    pub(crate) fn lists(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The entries of list `l`.
    fn entries(&self, l: u32) -> std::ops::Range<usize> {
        self.offsets[l as usize] as usize..self.offsets[l as usize + 1] as usize
    }

    /// What ranks the lists' centroids against the prepared query `q` (smaller nearer, in
    /// the order of `Probe::rank`): `|q − c|²` for a euclidean probe, `−⟨q, c⟩` for an inner
    /// product one.
    fn ranker(&self, metric: Metric, q: &[f32]) -> Sq8Scorer<'_> {
        let by = match Probe::of(metric) {
            Probe::Euclid => Metric::L2,
            Probe::Inner => Metric::Dot,
        };
        self.probing.scorer(by, q)
    }

    /// Every list with its centroid's ranking against the prepared query `q`: the `nprobe`
    /// nearest first, nearest first; the rest after them, in no order. With grouped lists only
    /// the lists of the query's nearest groups are ranked; the others follow with an infinite
    /// ranking (see `rank_rest`).
    fn probe(&self, metric: Metric, q: &[f32], nprobe: usize) -> Vec<(f32, u32)> {
        let probe = Probe::of(metric);
        let ranker = self.ranker(metric, q);
        let mut ranked: Vec<(f32, u32)> = match &self.groups {
            None => (0..self.lists() as u32)
                .map(|j| (ranker.dist(j), j))
                .collect(),
            Some(g) => {
                let dot = kernels().dot;
                let mut near: Vec<(f32, u32)> = g
                    .centroids
                    .chunks_exact(self.dim)
                    .zip(&g.norms)
                    .enumerate()
                    .map(|(i, (c, &c2))| (probe.rank(dot(c, q), c2), i as u32))
                    .collect();
                near.sort_unstable_by(by_rank);
                let mut ranked = Vec::with_capacity(self.lists());
                let mut taken = 0;
                for &(_, i) in &near {
                    let lists = g.starts[i as usize]..g.starts[i as usize + 1];
                    if taken < PROBE_GROUPS || ranked.len() < PROBE_FACTOR * nprobe {
                        taken += 1;
                        ranked.extend(lists.map(|j| (ranker.dist(j), j)));
                    } else {
                        ranked.extend(lists.map(|j| (f32::INFINITY, j)));
                    }
                }
                ranked
            }
        };
        let nprobe = nprobe.clamp(1, ranked.len());
        if nprobe < ranked.len() {
            ranked.select_nth_unstable_by(nprobe - 1, by_rank);
        }
        ranked[..nprobe].sort_unstable_by(by_rank);
        ranked
    }

    /// Ranks the lists `probe` left unranked (infinite) in `rest`.
    fn rank_rest(&self, metric: Metric, q: &[f32], rest: &mut [(f32, u32)]) {
        let ranker = self.ranker(metric, q);
        for r in rest.iter_mut().filter(|r| r.0 == f32::INFINITY) {
            r.0 = ranker.dist(r.1);
        }
    }

    /// The `k` nearest accepted rows to `query` (raw; prepared here), nearest first, with
    /// their ranking distances; `nprobe` lists are scanned and `ef` (times the codes'
    /// oversampling) candidates re-ranked exactly. When `accept` leaves fewer than `ef` rows in
    /// those lists, the next nearest lists are scanned too until it does (or none are left),
    /// so a filter that matches k rows gets k back.
    pub(crate) fn search(
        &self,
        view: &VectorView<'_>,
        query: &[f32],
        k: usize,
        ef: usize,
        nprobe: usize,
        accept: &dyn Fn(u32) -> bool,
    ) -> Vec<(u32, f32)> {
        if k == 0 || self.rows.is_empty() || view.dim() != self.dim {
            return Vec::new();
        }
        let q = view.prepare(query);
        let exact = view.scorer(&q);
        let nprobe = nprobe.clamp(1, self.lists());
        let mut order = self.probe(view.metric(), &q, nprobe);
        // A row is in up to `copies` lists, so entries seen count each row that many times.
        let copies = self.rows.len().div_ceil(self.segment_rows.max(1)).max(1);
        let want = ef.max(k) * copies;
        // Lists in order while fewer than `nprobe` were scanned or fewer than `want` accepted
        // rows seen (`seen` is updated by the scans); the lists past the first `nprobe` are
        // sorted only when a filter leaves too few rows in those.
        let seen = Cell::new(0usize);
        let mut next = 0;
        let lists = std::iter::from_fn(|| {
            if next >= order.len() || (next >= nprobe && seen.get() >= want) {
                return None;
            }
            if next == nprobe {
                self.rank_rest(view.metric(), &q, &mut order[nprobe..]);
                order[nprobe..].sort_unstable_by(by_rank);
            }
            next += 1;
            Some(order[next - 1].1)
        });
        let usable = self.codes.as_ref().filter(|c| {
            c.dim() == view.dim() && c.rows() == self.rows.len() && self.segment_rows == view.len()
        });
        let found = match usable {
            None => self.scan_exact(lists, accept, &seen, &exact, k * copies),
            Some(codes) => {
                // Room for k distinct rows however many are there twice.
                let room = (ef.max(k) * codes.oversample()).max(k * copies);
                let mut found =
                    self.scan_codes(codes, view.metric(), &q, lists, accept, &seen, room);
                // A row found in both its lists is re-ranked once.
                found.sort_unstable_by_key(|n| n.id);
                found.dedup_by_key(|n| n.id);
                rerank(&exact, found)
            }
        };
        found.into_iter().take(k).map(|n| (n.id, n.dist)).collect()
    }
}

impl VectorIndex for Ivf {
    fn kind(&self) -> IndexKind {
        IndexKind::Ivf
    }

    fn search(
        &self,
        view: &VectorView<'_>,
        query: &[f32],
        k: usize,
        params: &SearchParams,
        accept: Accept<'_>,
    ) -> Vec<(u32, f32)> {
        let accept = accept.unwrap_or(&|_| true);
        Ivf::search(self, view, query, k, params.ef, params.nprobe, accept)
    }

    /// Ranking the lists (every centroid: an upper bound with groups), the entries of
    /// `nprobe` lists of average length, and the re-ranked candidates.
    fn search_work(&self, params: &super::SearchParams) -> usize {
        let lists = self.lists().max(1);
        let probed = self.rows.len() / lists * params.nprobe.clamp(1, lists);
        let reranked = params
            .ef
            .saturating_mul(self.codes.as_ref().map_or(1, |c| c.oversample()));
        lists + probed + reranked
    }
}

/// Rows in 17 clusters, the same for every call (tests).
#[cfg(test)]
fn clustered(n: usize, dim: usize) -> Vec<f32> {
    (0..n * dim)
        .map(|i| {
            let (row, d) = (i / dim, i % dim);
            let centre = ((row % 17) * 31 + d * 7) % 23;
            centre as f32 / 10.0 + (crate::quant::splitmix(i as u64) % 1000) as f32 / 4000.0
        })
        .collect()
}

/// The `k` rows of `view` nearest to `q` by exact search (tests).
#[cfg(test)]
fn exact_top(view: &VectorView<'_>, q: &[f32], k: usize) -> Vec<u32> {
    let p = view.prepare(q);
    let mut all: Vec<(f32, u32)> = (0..view.len() as u32)
        .map(|i| (view.dist(&p, i), i))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    all.into_iter().take(k).map(|(_, i)| i).collect()
}

/// Whether every one of the `n` rows is in exactly two different lists of `ivf` (tests).
#[cfg(test)]
fn in_two_lists(ivf: &Ivf, n: usize) -> bool {
    let mut lists_of = vec![Vec::new(); n];
    for l in 0..ivf.lists() {
        for &r in &ivf.rows[ivf.entries(l as u32)] {
            lists_of[r as usize].push(l);
        }
    }
    lists_of.iter().all(|l| l.len() == 2 && l[0] != l[1])
}

/// `view` indexed in `nlist` lists with codes `quant`, every other setting the default (tests).
#[cfg(test)]
fn build_in_lists(view: &VectorView<'_>, nlist: usize, quant: crate::options::QuantKind) -> Ivf {
    let settings = crate::options::IndexSettings {
        ivf: crate::options::IvfSettings {
            nlist,
            ..Default::default()
        },
        quant,
        ..Default::default()
    };
    Ivf::build(view, &settings, &crate::task::Task::new()).unwrap()
}
