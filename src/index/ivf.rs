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
//! nearest lists of the row's nearest groups. Files of the first format (`OMENIVF1`, eight
//! header words, one entry per row) are read as before.
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
//! File, all words little-endian: header of nine u32 (magic `OMENIVF2`, two words; rows,
//! dimension, lists, the codes' kind (`quant::quant_tag`), 1 when fast-scan blocks follow the
//! codes, the number of groups, 0 for none; list entries); the centroids (`lists × dim` f32);
//! list offsets (`lists + 1` u32, into the next part); the row of each list entry (`entries`
//! u32); the codes' section (one code per entry); the fast-scan blocks (`Σ ⌈list length / 32⌉
//! × 4-dimension groups × 16` bytes); the group centroids (`groups × dim` f32) and each
//! group's first list (`groups + 1` u32).

use std::cell::Cell;
use std::path::Path;

use arrow_buffer::{Buffer, ScalarBuffer};
use rayon::prelude::*;

use super::hnsw::rerank;
use super::{Accept, SearchParams, VectorIndex};
use crate::distance::{kernels, Metric};
use crate::options::{IndexKind, IndexSettings, QuantKind};
use crate::quant::rabitq::{RaBitQ, RaBitQScorer};
use crate::quant::sq8::{Sq8, Sq8Scorer};
use crate::quant::{quant_of_tag, quant_tag, splitmix, Codes, Quantizer};
use crate::task::Task;
use crate::topk::{Neighbor, TopK};
use crate::vector::{squared_norms, Floats, Scorer, VectorView};
use crate::{Error, Result};

const MAGIC: u64 = u64::from_le_bytes(*b"OMENIVF2");
const HEADER_WORDS: usize = 9;
/// The first format: eight header words (no entry count), one entry per row.
const MAGIC_V1: u64 = u64::from_le_bytes(*b"OMENIVF1");
const HEADER_WORDS_V1: usize = 8;
/// Each row's second list is chosen among this many of its nearest centroids.
const SPILL_CANDIDATES: usize = 16;
/// SOAR's weight on the part of a second list's residual parallel to the first one's.
const SPILL_LAMBDA: f32 = 1.0;
/// k-means rounds over the training sample.
const ROUNDS: usize = 10;
/// Training rows per list (at most): enough for stable centroids, bounded work.
const SAMPLE_PER_LIST: usize = 64;
/// Rows per assignment block (a block × lists score tile).
const ASSIGN_BLOCK: usize = 64;
/// How many entries ahead an exact scan prefetches their rows.
const PREFETCH_AHEAD: usize = 4;

/// An IVF index over one segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Ivf {
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
    fn new(dim: usize, centroids: ScalarBuffer<f32>, starts: ScalarBuffer<u32>) -> Groups {
        let norms = squared_norms(Floats::F32(&centroids), dim);
        Groups {
            centroids,
            starts,
            norms,
        }
    }

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

/// Entries per fast-scan block.
const BLOCK: usize = 32;

/// The fast-scan blocks of 1-bit codes, list by list (`starts` from `block_starts`).
fn pack_blocks(codes: &RaBitQ, offsets: &[u32], starts: &[usize]) -> Vec<u8> {
    let groups = codes.groups();
    let lists = offsets.len() - 1;
    let mut out = vec![0u8; starts[lists] * groups * 16];
    for l in 0..lists {
        let (first, last) = (offsets[l] as usize, offsets[l + 1] as usize);
        for (b, block) in (first..last).step_by(BLOCK).enumerate() {
            let at = (starts[l] + b) * groups * 16;
            let bytes = &mut out[at..at + groups * 16];
            for i in 0..BLOCK.min(last - block) {
                let e = (block + i) as u32;
                for g in 0..groups {
                    let nibble = codes.nibble(e, g);
                    bytes[g * 16 + i % 16] |= if i < 16 { nibble } else { nibble << 4 };
                }
            }
        }
    }
    out
}

/// Per list, its first fast-scan block, and the total after the last.
fn block_starts(offsets: &[u32]) -> Vec<usize> {
    let mut starts = Vec::with_capacity(offsets.len());
    let mut at = 0;
    starts.push(0);
    for w in offsets.windows(2) {
        at += (w[1] - w[0]).div_ceil(BLOCK as u32) as usize;
        starts.push(at);
    }
    starts
}

/// The number of lists for `rows` rows when the settings leave it open: about 4·√rows.
pub(crate) fn auto_lists(rows: usize) -> usize {
    ((4.0 * (rows as f64).sqrt()).round() as usize).clamp(1, 1 << 16)
}

/// How rows are compared with centroids.
#[derive(Clone, Copy)]
enum Probe {
    /// Smallest `|c|² − 2⟨x, c⟩` (euclidean).
    Euclid,
    /// Largest `⟨x, c⟩`.
    Inner,
}

impl Probe {
    fn of(metric: Metric) -> Probe {
        match metric {
            Metric::Dot => Probe::Inner,
            _ => Probe::Euclid,
        }
    }

    /// The ranking (smaller nearer) of a centroid with squared norm `c2` and inner product
    /// `ip` with the row or query.
    #[inline]
    fn rank(self, ip: f32, c2: f32) -> f32 {
        match self {
            Probe::Euclid => c2 - 2.0 * ip,
            Probe::Inner => -ip,
        }
    }
}

/// The `t` nearest centroids of each row of `data` (`dim` values each, row-major), nearest
/// first, with their rankings (`Probe::rank`, comparable across calls for the same row):
/// `t` entries per row.
fn nearest(data: &[f32], dim: usize, centroids: &[f32], probe: Probe, t: usize) -> Vec<(f32, u32)> {
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
fn keep_nearest(best: &mut [(f32, u32)], item: (f32, u32)) {
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
fn assign(data: &[f32], dim: usize, centroids: &[f32], probe: Probe) -> Vec<u32> {
    nearest(data, dim, centroids, probe, 1)
        .into_iter()
        .map(|(_, j)| j)
        .collect()
}

/// Each row's nearest list and a second one, chosen as SOAR (Sun et al., "SOAR: improved
/// indexing for approximate nearest neighbor search", 2023) does: among its nearest lists
/// `near` (`t` per row, nearest first, as `Trained::nearest` gives them), the one least in
/// `|x − c|² + λ⟨r, x − c⟩² / |r|²`, `r` the row's residual from its nearest centroid. The
/// second residual then tends to be orthogonal to the first, so a query that the first
/// list's centroid misranks (its error lies along `r`) usually finds the row through the
/// second. On minilm-phrases 1M with 1,000 lists (`benches/ivf_partition_recall.py`), the
/// true top-10 lie in the 30 nearest lists 97.4% of the time with a second list against
/// 86.4% without.
fn spill(
    data: &[f32],
    dim: usize,
    centroids: &[f32],
    near: &[(f32, u32)],
    t: usize,
) -> Vec<(u32, u32)> {
    let centroid = |j: u32| &centroids[j as usize * dim..(j as usize + 1) * dim];
    data.par_chunks(dim)
        .zip(near.par_chunks(t))
        .map(|(x, cands)| {
            let first = cands[0].1;
            let r: Vec<f32> = x.iter().zip(centroid(first)).map(|(a, c)| a - c).collect();
            let r2 = r.iter().map(|v| v * v).sum::<f32>().max(f32::MIN_POSITIVE);
            // With a single list in reach (never with more than one list in all) the row's
            // second entry is in its first list again; search counts each row once.
            let mut best = (f32::INFINITY, first);
            for &(_, j) in cands[1..].iter().filter(|(rank, _)| rank.is_finite()) {
                let (mut l2, mut along) = (0f32, 0f32);
                for ((a, c), rv) in x.iter().zip(centroid(j)).zip(&r) {
                    let d = a - c;
                    l2 += d * d;
                    along += rv * d;
                }
                let loss = l2 + SPILL_LAMBDA * along * along / r2;
                if loss < best.0 {
                    best = (loss, j);
                }
            }
            (first, best.1)
        })
        .collect()
}

/// The vectors of `rows` of `view` as search sees them, row-major.
fn gather(view: &VectorView<'_>, rows: &[u32]) -> Vec<f32> {
    let dim = view.dim();
    let mut out = vec![0f32; rows.len() * dim];
    out.par_chunks_mut(dim.max(1))
        .zip(rows)
        .for_each(|(o, &r)| o.copy_from_slice(&view.normalized_row(r as usize)));
    out
}

/// Lists from which k-means goes through groups of lists (see `train`): about 4M rows with
/// the automatic number of lists. Below, one k-means over every list partitions better (on
/// the 1M stand-in, recall 0.947 against 0.924 at nprobe 64) and costs minutes, not hours.
const GROUPED_FROM: usize = 8192;
/// Lloyd rounds over every list after the grouped k-means.
const REFINE_ROUNDS: usize = 4;
/// Groups each row is compared within when assigned to a list of grouped centroids.
const GROUPS_PER_ROW: usize = 6;
/// Groups each row is compared within for its nearest lists and its second list (`spill`) when
/// grouped lists are built: twice `GROUPS_PER_ROW`, which on minilm-phrases x10 (10M) raised
/// recall at every nprobe by half a point (0.954 to 0.960 at nprobe 16) for 100 s more build.
const SPILL_GROUPS: usize = 12;

/// Trained centroids (`lists × dim`). With many lists they come in groups: group `g` holds
/// lists `starts[g]..starts[g + 1]` around the group centroid `groups[g]`.
struct Trained {
    centroids: Vec<f32>,
    groups: Option<(Vec<f32>, Vec<usize>)>,
}

/// `k` k-means centroids of `data` (`dim` values per row, at least `k` rows); `seed`
/// varies the restarts of empty clusters. `None` when cancelled.
fn kmeans(
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
fn recentre(data: &[f32], dim: usize, owner: &[u32], centroids: &mut [f32]) -> Vec<usize> {
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

/// `lists` shared among groups in proportion to their `sizes`, each non-empty group getting
/// at least one and at most its size (largest remainders first).
fn share(lists: usize, sizes: &[usize]) -> Vec<usize> {
    let total: usize = sizes.iter().sum();
    let exact: Vec<f64> = sizes
        .iter()
        .map(|&s| lists as f64 * s as f64 / total as f64)
        .collect();
    let mut out: Vec<usize> = exact
        .iter()
        .zip(sizes)
        .map(|(&e, &s)| (e.floor() as usize).clamp(usize::from(s > 0), s))
        .collect();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    let mut given: usize = out.iter().sum();
    // Hand out what flooring left (to groups with room), or take back what the minimum of one
    // gave beyond `lists` (from groups with more than one).
    for &g in order.iter().cycle().take(4 * sizes.len()) {
        if given < lists && out[g] < sizes[g] {
            out[g] += 1;
            given += 1;
        } else if given > lists && out[g] > 1 {
            out[g] -= 1;
            given -= 1;
        }
    }
    out
}

/// k-means centroids of a sample of `view`. Up to `GROUPED_FROM` lists, one k-means over
/// the sample; from there, two levels: √lists group centroids, then each group's sample rows
/// clustered into its share of the lists, which costs about √lists times less than one
/// k-means over every list (12,649 lists for 10M rows). `None` when cancelled.
fn train(view: &VectorView<'_>, lists: usize, cancel: &Task) -> Option<Trained> {
    let (n, dim) = (view.len(), view.dim());
    let probe = Probe::of(view.metric());
    // A pseudo-random sample: each row gets a hash, the smallest hashes are kept.
    let want = (lists * SAMPLE_PER_LIST).min(n);
    let sample: Vec<u32> = if want == n {
        (0..n as u32).collect()
    } else {
        let mut keyed: Vec<(u64, u32)> = (0..n as u32)
            .into_par_iter()
            .map(|i| (splitmix(0x1DF ^ u64::from(i)), i))
            .collect();
        keyed.select_nth_unstable(want - 1);
        let mut rows: Vec<u32> = keyed[..want].iter().map(|&(_, i)| i).collect();
        rows.sort_unstable();
        rows
    };
    let data = gather(view, &sample);
    if lists < GROUPED_FROM {
        let centroids = kmeans(&data, dim, lists, probe, 0, cancel)?;
        return Some(Trained {
            centroids,
            groups: None,
        });
    }
    let g = (lists as f64).sqrt().round() as usize;
    let groups = kmeans(&data, dim, g, probe, 1, cancel)?;
    let mut members: Vec<Vec<f32>> = vec![Vec::new(); g];
    for (row, o) in data
        .chunks_exact(dim)
        .zip(assign(&data, dim, &groups, probe))
    {
        members[o as usize].extend_from_slice(row);
    }
    let sizes: Vec<usize> = members.iter().map(|m| m.len() / dim).collect();
    let shares = share(lists, &sizes);
    let mut centroids = Vec::with_capacity(lists * dim);
    let mut starts = vec![0usize];
    for (j, (rows, &k)) in members.iter().zip(&shares).enumerate() {
        if k > 0 {
            centroids.extend(kmeans(rows, dim, k, probe, 2 + j as u64, cancel)?);
        }
        starts.push(starts[j] + k);
    }
    drop(members);
    let mut trained = Trained {
        centroids,
        groups: Some((groups, starts)),
    };
    // Lloyd rounds over the whole sample with the grouped assignment: each group's lists were
    // fitted to the rows of its cell alone, and rows near the cells' borders move to the
    // lists that are nearest to them across groups.
    for _ in 0..REFINE_ROUNDS {
        if cancel.cancelled() {
            return None;
        }
        let owner = trained.assign(&data, dim, probe);
        // A list left empty keeps its centroid.
        let counts = recentre(&data, dim, &owner, &mut trained.centroids);
        // Each group centred again on its lists, weighted by their rows.
        let (groups, starts) = trained.groups.as_mut().expect("grouped");
        for (j, group) in groups.chunks_exact_mut(dim).enumerate() {
            let (mut acc, mut rows) = (vec![0f64; dim], 0usize);
            let (first, last) = (starts[j], starts[j + 1]);
            let members = trained.centroids[first * dim..last * dim].chunks_exact(dim);
            for (&count, centroid) in counts[first..last].iter().zip(members) {
                rows += count;
                for (a, &x) in acc.iter_mut().zip(centroid) {
                    *a += count as f64 * f64::from(x);
                }
            }
            if rows > 0 {
                for (g, a) in group.iter_mut().zip(acc) {
                    *g = (a / rows as f64) as f32;
                }
            }
        }
    }
    Some(trained)
}

impl Trained {
    /// The list of each row of `data`: its nearest centroid, among the lists of its
    /// `GROUPS_PER_ROW` nearest groups when the centroids are grouped.
    fn assign(&self, data: &[f32], dim: usize, probe: Probe) -> Vec<u32> {
        self.nearest(data, dim, probe, 1, GROUPS_PER_ROW)
            .into_iter()
            .map(|(_, j)| j)
            .collect()
    }

    /// The `t` nearest lists of each row of `data` with their rankings, nearest first (as
    /// `nearest`). With grouped centroids, among the lists of the row's `reach` nearest
    /// groups; where fewer lists are in reach the last entries have an infinite ranking.
    fn nearest(
        &self,
        data: &[f32],
        dim: usize,
        probe: Probe,
        t: usize,
        reach: usize,
    ) -> Vec<(f32, u32)> {
        let Some((groups, starts)) = &self.groups else {
            return nearest(data, dim, &self.centroids, probe, t);
        };
        let g = starts.len() - 1;
        let per_row = reach.min(g);
        let near = nearest(data, dim, groups, probe, per_row);
        let mut members: Vec<Vec<u32>> = vec![Vec::new(); g];
        for (r, gs) in near.chunks_exact(per_row).enumerate() {
            for &(_, j) in gs {
                members[j as usize].push(r as u32);
            }
        }
        // Each group scores its member rows against its own lists.
        // Per group, (row, ranking, list) of each member row's nearest lists in it.
        let found: Vec<Vec<(u32, f32, u32)>> = members
            .into_par_iter()
            .enumerate()
            .filter(|(j, rows)| !rows.is_empty() && starts[*j] < starts[j + 1])
            .map(|(j, rows)| {
                let block: Vec<f32> = rows
                    .iter()
                    .flat_map(|&r| {
                        data[r as usize * dim..(r as usize + 1) * dim]
                            .iter()
                            .copied()
                    })
                    .collect();
                let lists = &self.centroids[starts[j] * dim..starts[j + 1] * dim];
                let tg = t.min(starts[j + 1] - starts[j]);
                let best = nearest(&block, dim, lists, probe, tg);
                rows.into_iter()
                    .zip(best.chunks_exact(tg))
                    .flat_map(|(r, b)| {
                        b.iter()
                            .map(move |&(rank, l)| (r, rank, l + starts[j] as u32))
                    })
                    .collect()
            })
            .collect();
        let mut best = vec![(f32::INFINITY, 0u32); data.len() / dim * t];
        for (r, rank, l) in found.into_iter().flatten() {
            keep_nearest(&mut best[r as usize * t..(r as usize + 1) * t], (rank, l));
        }
        best
    }
}

impl Ivf {
    /// Builds an IVF over every row of `view` with `settings`' lists and codes; `None` when
    /// `cancel` was set meanwhile.
    pub(crate) fn build(
        view: &VectorView<'_>,
        settings: &IndexSettings,
        cancel: &Task,
    ) -> Option<Ivf> {
        let (n, dim) = (view.len(), view.dim());
        let lists = match settings.nlist {
            0 => auto_lists(n),
            l => l,
        }
        .min(n.max(1));
        if n == 0 {
            return Some(Ivf::new(
                dim,
                0,
                vec![0f32; dim].into(),
                vec![0u32, 0].into(),
                Vec::new().into(),
                Codes::train(settings.quant, view),
                None,
            ));
        }
        let trained = train(view, lists, cancel)?;
        // Every row to its nearest list and, with more than one list, to a second list too
        // (`spill`), a block at a time so the copy stays small.
        let spilled = trained.centroids.len() / dim > 1;
        let probe = Probe::of(view.metric());
        let mut owner = Vec::with_capacity(n);
        let mut second: Vec<u32> = Vec::with_capacity(if spilled { n } else { 0 });
        let all: Vec<u32> = (0..n as u32).collect();
        for chunk in all.chunks(1 << 16) {
            if cancel.cancelled() {
                return None;
            }
            let data = gather(view, chunk);
            if spilled {
                let near = trained.nearest(&data, dim, probe, SPILL_CANDIDATES, SPILL_GROUPS);
                let pairs = spill(&data, dim, &trained.centroids, &near, SPILL_CANDIDATES);
                for (first, other) in pairs {
                    owner.push(first);
                    second.push(other);
                }
            } else {
                owner.extend(trained.assign(&data, dim, probe));
            }
            cancel.advance(chunk.len());
        }
        let Trained { centroids, groups } = trained;
        let lists = centroids.len() / dim;
        let groups = groups.map(|(g, starts)| {
            let starts: Vec<u32> = starts.iter().map(|&s| s as u32).collect();
            Groups::new(dim, g.into(), starts.into())
        });
        let mut offsets = vec![0u32; lists + 1];
        for &c in owner.iter().chain(&second) {
            offsets[c as usize + 1] += 1;
        }
        for c in 0..lists {
            offsets[c + 1] += offsets[c];
        }
        let mut next = offsets.clone();
        let mut rows = vec![0u32; n + second.len()];
        let mut list_of = vec![0u32; n + second.len()];
        for (r, &c) in owner.iter().enumerate().chain(second.iter().enumerate()) {
            rows[next[c as usize] as usize] = r as u32;
            list_of[next[c as usize] as usize] = c;
            next[c as usize] += 1;
        }
        // RaBitQ codes are centred on their list's centroid; the others train as anywhere.
        let codes = match settings.quant {
            QuantKind::RaBitQ(bits) => Some(Codes::RaBitQ(RaBitQ::encode(
                view,
                &rows,
                centroids.clone(),
                &|i| list_of[i] as usize,
                usize::from(bits),
                true,
            ))),
            other => Codes::train_rows(other, view, &rows),
        };
        if cancel.cancelled() {
            return None;
        }
        let mut ivf = Ivf::new(
            dim,
            n,
            centroids.into(),
            offsets.into(),
            rows.into(),
            codes,
            None,
        );
        ivf.groups = groups;
        if let Some(Codes::RaBitQ(c)) = &ivf.codes {
            if c.bits() == 1 {
                ivf.blocks = Some(pack_blocks(c, &ivf.offsets, &ivf.block_starts).into());
            }
        }
        Some(ivf)
    }

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
    pub fn lists(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The file image.
    pub fn to_bytes(&self) -> Vec<u8> {
        let words = HEADER_WORDS + self.centroids.len() + self.offsets.len() + self.rows.len();
        let mut out = Vec::with_capacity(words * 4);
        out.extend_from_slice(&MAGIC.to_le_bytes());
        let kind = self.codes.as_ref().map_or(QuantKind::None, Codes::kind);
        for w in [
            self.segment_rows as u32,
            self.dim as u32,
            self.lists() as u32,
            quant_tag(kind),
            u32::from(self.blocks.is_some()),
            self.groups.as_ref().map_or(0, |g| g.len() as u32),
            self.rows.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        for v in self.centroids.iter() {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for part in [&self.offsets, &self.rows] {
            for w in part.iter() {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        if let Some(c) = &self.codes {
            c.write(&mut out);
        }
        if let Some(b) = &self.blocks {
            out.extend_from_slice(b);
        }
        if let Some(g) = &self.groups {
            for v in g.centroids.iter() {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for w in g.starts.iter() {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        out
    }

    /// An IVF over the file image in `buffer` (typically a memory map), read in place and
    /// checked so a damaged file cannot make search panic. `path` names it in errors.
    pub fn from_buffer(buffer: Buffer, path: &Path) -> Result<Ivf> {
        let bad = |why: &str| Error::corrupt(path, format!("bad IVF index: {why}"));
        if buffer.len() < HEADER_WORDS * 4 || !buffer.len().is_multiple_of(4) {
            return Err(bad("size"));
        }
        if cfg!(target_endian = "big") {
            return Err(bad("big-endian hosts cannot map little-endian index files"));
        }
        let words = ScalarBuffer::<u32>::new(buffer.clone(), 0, buffer.len() / 4);
        let (header, entries) = match u64::from(words[0]) | (u64::from(words[1]) << 32) {
            MAGIC => (HEADER_WORDS, words[8] as usize),
            MAGIC_V1 => (HEADER_WORDS_V1, words[2] as usize),
            _ => return Err(bad("magic")),
        };
        let (n, dim, lists) = (words[2] as usize, words[3] as usize, words[4] as usize);
        let quant = quant_of_tag(words[5]).ok_or_else(|| bad("unknown code kind"))?;
        let floats = lists
            .checked_mul(dim)
            .ok_or_else(|| bad("layout does not match the header"))?;
        let head = header + floats + lists + 1 + entries;
        if dim == 0 || lists == 0 || head > words.len() {
            return Err(bad("layout does not match the header"));
        }
        let centroids = ScalarBuffer::<f32>::new(buffer.clone(), header, floats);
        let offsets = words.slice(header + floats, lists + 1);
        let rows = words.slice(header + floats + lists + 1, entries);
        let centres = match quant {
            QuantKind::RaBitQ(_) => lists,
            _ => 1,
        };
        let (codes, code_bytes) = Codes::read(quant, &buffer, head * 4, entries, dim, centres)
            .map_err(|why| bad(&why))?;
        let fast = match (words[6], &codes) {
            (0, _) => None,
            (1, Some(Codes::RaBitQ(c))) if c.bits() == 1 => Some(c.groups()),
            _ => return Err(bad("fast-scan blocks without 1-bit codes")),
        };
        let block_at = head * 4 + code_bytes;
        let block_bytes = fast.map_or(0, |groups| {
            // Counted the way `block_starts` counts them, from offsets not yet checked.
            let blocks: usize = (0..lists)
                .map(|l| {
                    (words[header + floats + l + 1].saturating_sub(words[header + floats + l])
                        as usize)
                        .div_ceil(BLOCK)
                })
                .sum();
            blocks * groups * 16
        });
        let group_at = block_at + block_bytes;
        let group_count = words[7] as usize;
        let group_bytes = match group_count {
            0 => 0,
            g => g
                .checked_mul(dim)
                .and_then(|f| f.checked_add(g + 1))
                .and_then(|w| w.checked_mul(4))
                .ok_or_else(|| bad("layout does not match the header"))?,
        };
        if group_at.checked_add(group_bytes) != Some(buffer.len()) || !group_at.is_multiple_of(4) {
            return Err(bad("layout does not match the header"));
        }
        let blocks = fast.map(|_| ScalarBuffer::<u8>::new(buffer.clone(), block_at, block_bytes));
        let groups = match group_count {
            0 => None,
            g => {
                let centroids = ScalarBuffer::<f32>::new(buffer.clone(), group_at / 4, g * dim);
                let starts = words.slice(group_at / 4 + g * dim, g + 1);
                if starts[0] != 0
                    || starts[g] as usize != lists
                    || starts.windows(2).any(|w| w[0] > w[1])
                {
                    return Err(bad("list groups out of order"));
                }
                Some(Groups::new(dim, centroids, starts))
            }
        };
        if offsets[0] != 0
            || offsets[lists] as usize != entries
            || offsets.windows(2).any(|w| w[0] > w[1])
        {
            return Err(bad("list offsets out of order"));
        }
        if rows.iter().any(|&r| r as usize >= n) {
            return Err(bad("list entry out of range"));
        }
        if let Some(Codes::RaBitQ(c)) = &codes {
            if c.rotated() && c.centres() != &centroids[..] {
                return Err(bad("code centres differ from the centroids"));
            }
        }
        let mut ivf = Ivf::new(dim, n, centroids, offsets, rows, codes, blocks);
        ivf.groups = groups;
        Ok(ivf)
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

    /// The `k` nearest accepted rows to `query` (raw; prepared here), nearest first, with
    /// their ranking distances; `nprobe` lists are scanned and `ef` (times the codes'
    /// oversampling) candidates re-ranked exactly. When `accept` leaves fewer than `ef` rows in
    /// those lists, the next nearest lists are scanned too until it does (or none are left),
    /// so a filter that matches k rows gets k back.
    pub fn search(
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
            None => {
                let mut top = TopK::<u32>::new(k * copies);
                for l in lists {
                    let list = &self.rows[self.entries(l)];
                    for (j, &row) in list.iter().enumerate() {
                        if let Some(&next) = list.get(j + PREFETCH_AHEAD) {
                            exact.prefetch(next);
                        }
                        if accept(row) {
                            seen.set(seen.get() + 1);
                            top.push(Neighbor::new(exact.dist(row), row));
                        }
                    }
                }
                let mut found = top.into_sorted();
                found.dedup_by_key(|n| n.id);
                found
            }
            Some(codes) => {
                // Room for k distinct rows however many are there twice.
                let mut top = TopK::<u32>::new((ef.max(k) * codes.oversample()).max(k * copies));
                match codes {
                    Codes::Sq8(c) => {
                        let s = c.scorer(view.metric(), &q);
                        self.scan(lists, accept, &seen, &mut top, |at, _| s.dist(at), &|_| 0.0);
                    }
                    Codes::Sq4(c) => {
                        let s = c.scorer(view.metric(), &q);
                        self.scan(lists, accept, &seen, &mut top, |at, _| s.dist(at), &|_| 0.0);
                    }
                    Codes::RaBitQ(c) => {
                        let s = c.scorer(view.metric(), &q);
                        let rotated = c.rotated();
                        let term = |l: u32| s.centre_term(if rotated { l as usize } else { 0 });
                        match (&self.blocks, s.tables()) {
                            (Some(blocks), Some(lut)) => {
                                let scan = FastScan {
                                    blocks,
                                    lut: &lut,
                                    scorer: &s,
                                };
                                self.scan_fast(lists, accept, &seen, &mut top, scan, &term);
                            }
                            _ => {
                                let dist = |at, t| s.estimate(at, t);
                                self.scan(lists, accept, &seen, &mut top, dist, &term);
                            }
                        }
                    }
                }
                // A row found in both its lists is re-ranked once.
                let mut found: Vec<Neighbor> = top.into_unsorted().collect();
                found.sort_unstable_by_key(|n| n.id);
                found.dedup_by_key(|n| n.id);
                rerank(&exact, found)
            }
        };
        found.into_iter().take(k).map(|n| (n.id, n.dist)).collect()
    }
}

impl Ivf {
    /// Ranks the lists `probe` left unranked (infinite) in `rest`.
    fn rank_rest(&self, metric: Metric, q: &[f32], rest: &mut [(f32, u32)]) {
        let ranker = self.ranker(metric, q);
        for r in rest.iter_mut().filter(|r| r.0 == f32::INFINITY) {
            r.0 = ranker.dist(r.1);
        }
    }

    /// The entries of list `l`.
    fn entries(&self, l: u32) -> std::ops::Range<usize> {
        self.offsets[l as usize] as usize..self.offsets[l as usize + 1] as usize
    }

    /// Offers every accepted entry of `lists` to `top` with distance `dist(at, term(list))`,
    /// counting them in `seen`.
    fn scan(
        &self,
        lists: impl Iterator<Item = u32>,
        accept: &dyn Fn(u32) -> bool,
        seen: &Cell<usize>,
        top: &mut TopK<u32>,
        dist: impl Fn(u32, f32) -> f32,
        term: &dyn Fn(u32) -> f32,
    ) {
        for l in lists {
            let t = term(l);
            let range = self.entries(l);
            for (at, &row) in range.clone().zip(&self.rows[range]) {
                if accept(row) {
                    seen.set(seen.get() + 1);
                    top.push(Neighbor::new(dist(at as u32, t), row));
                }
            }
        }
    }

    /// `scan` over 1-bit codes, 32 entries per fast-scan kernel call. Only the entries that
    /// would enter `top` are looked up and filtered: a finite threshold means it already holds
    /// `ef` accepted rows, so `seen` needs no count of the others.
    fn scan_fast(
        &self,
        lists: impl Iterator<Item = u32>,
        accept: &dyn Fn(u32) -> bool,
        seen: &Cell<usize>,
        top: &mut TopK<u32>,
        scan: FastScan<'_>,
        term: &dyn Fn(u32) -> f32,
    ) {
        let bytes = scan.scorer.groups() * 16;
        let fastscan = kernels().fastscan;
        let mut ints = [0u16; BLOCK];
        let mut dists = [0f32; BLOCK];
        for l in lists {
            let t = term(l);
            let range = self.entries(l);
            let start = self.block_starts[l as usize];
            for (b, block) in range.clone().step_by(BLOCK).enumerate() {
                let at = (start + b) * bytes;
                fastscan(&scan.blocks[at..at + bytes], scan.lut, &mut ints);
                let n = BLOCK.min(range.end - block);
                scan.scorer.estimate_block(block, &ints[..n], t, &mut dists);
                for (e, &d) in (block..range.end).zip(&dists[..n]) {
                    if d >= top.threshold() {
                        continue;
                    }
                    let row = self.rows[e];
                    if accept(row) {
                        seen.set(seen.get() + 1);
                        top.push(Neighbor::new(d, row));
                    }
                }
            }
        }
    }
}

/// What a fast scan reads: the blocks, the query's tables and the scorer of its estimates.
struct FastScan<'a> {
    blocks: &'a [u8],
    lut: &'a [u8],
    scorer: &'a RaBitQScorer<'a>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::uniform_rows;

    fn clustered(n: usize, dim: usize) -> Vec<f32> {
        (0..n * dim)
            .map(|i| {
                let (row, d) = (i / dim, i % dim);
                let centre = ((row % 17) * 31 + d * 7) % 23;
                centre as f32 / 10.0 + (splitmix(i as u64) % 1000) as f32 / 4000.0
            })
            .collect()
    }

    fn exact_top(view: &VectorView<'_>, q: &[f32], k: usize) -> Vec<u32> {
        let p = view.prepare(q);
        let mut all: Vec<(f32, u32)> = (0..view.len() as u32)
            .map(|i| (view.dist(&p, i), i))
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        all.into_iter().take(k).map(|(_, i)| i).collect()
    }

    /// Whether every one of the `n` rows is in exactly two different lists of `ivf`.
    fn in_two_lists(ivf: &Ivf, n: usize) -> bool {
        let mut lists_of = vec![Vec::new(); n];
        for l in 0..ivf.lists() {
            for &r in &ivf.rows[ivf.entries(l as u32)] {
                lists_of[r as usize].push(l);
            }
        }
        lists_of.iter().all(|l| l.len() == 2 && l[0] != l[1])
    }

    #[test]
    fn lists_are_shared_by_size_with_one_per_group() {
        assert_eq!(share(10, &[50, 30, 20]), [5, 3, 2]);
        assert_eq!(share(10, &[97, 1, 1, 1]).iter().sum::<usize>(), 10);
        assert_eq!(share(10, &[97, 1, 1, 1])[1..], [1, 1, 1]);
        assert_eq!(share(5, &[3, 0, 2]), [3, 0, 2]);
        let s = share(1000, &[7, 300, 2, 691]);
        assert_eq!(s.iter().sum::<usize>(), 1000);
        assert!(s
            .iter()
            .zip([7, 300, 2, 691])
            .all(|(&k, n)| k >= 1 && k <= n));
    }

    /// From `GROUPED_FROM` lists, training and assignment go through groups of lists: almost
    /// every row still lands in its nearest list, most of its nearest lists are found through
    /// the groups (so most second lists are the ones chosen among every list), every row is
    /// in two lists, and probing every list is exact.
    #[test]
    fn grouped_lists_assign_rows_to_their_nearest_list() {
        let (n, dim, lists) = (40_000, 16, 8300);
        let data = uniform_rows(n, dim);
        let view = VectorView::new(&data, dim, Metric::L2);
        let cancel = Task::new();
        let trained = train(&view, lists, &cancel).unwrap();
        let (_, starts) = trained.groups.as_ref().expect("grouped");
        assert_eq!(starts.len() - 1, 91);
        assert_eq!(trained.centroids.len(), lists * dim);
        let grouped = trained.assign(&data, dim, Probe::Euclid);
        let nearest = assign(&data, dim, &trained.centroids, Probe::Euclid);
        let same = grouped.iter().zip(&nearest).filter(|(a, b)| a == b).count();
        eprintln!("{same} of {n} rows in their nearest list");
        assert!(
            same as f64 >= 0.97 * n as f64,
            "{same} of {n} in their nearest list"
        );
        let t = SPILL_CANDIDATES;
        let (some, m) = (&data[..4000 * dim], 4000);
        let through_groups = trained.nearest(some, dim, Probe::Euclid, t, SPILL_GROUPS);
        let of_all = super::nearest(some, dim, &trained.centroids, Probe::Euclid, t);
        let found = through_groups
            .chunks_exact(t)
            .zip(of_all.chunks_exact(t))
            .map(|(a, b)| a.iter().filter(|x| b.iter().any(|y| y.1 == x.1)).count())
            .sum::<usize>();
        eprintln!(
            "{found} of {} nearest lists found through the groups",
            m * t
        );
        let a = spill(some, dim, &trained.centroids, &through_groups, t);
        let b = spill(some, dim, &trained.centroids, &of_all, t);
        let agree = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        eprintln!("{agree} of {m} second lists agree");
        // Uniform rows are the hard case: their nearest lists spread over many groups.
        assert!(
            found as f64 >= 0.85 * (m * t) as f64,
            "{found} of {}",
            m * t
        );
        assert!(agree as f64 >= 0.9 * m as f64, "{agree} of {m}");
        let settings = IndexSettings {
            nlist: lists,
            quant: QuantKind::RaBitQ(4),
            ..IndexSettings::default()
        };
        let built = Ivf::build(&view, &settings, &cancel).unwrap();
        assert_eq!(built.offsets.len(), lists + 1);
        assert!(in_two_lists(&built, n));
        assert_eq!(built.groups.as_ref().map(Groups::len), Some(91));
        let ivf = Ivf::from_buffer(Buffer::from(built.to_bytes()), Path::new("g.ivf")).unwrap();
        assert_eq!(ivf, built);
        let (mut same, mut probed) = (0, 0);
        for qi in 0..20 {
            let q = view.row(qi * 997 + 3).to_vec();
            if qi < 5 {
                let got: Vec<u32> = ivf
                    .search(&view, &q, 10, n, lists, &|_| true)
                    .into_iter()
                    .map(|(r, _)| r)
                    .collect();
                assert_eq!(got, exact_top(&view, &q, 10));
            }
            // The 16 nearest lists found among the nearest groups' lists, against every list
            // ranked.
            let p = view.prepare(&q);
            let ranker = ivf.ranker(Metric::L2, &p);
            let mut all: Vec<(f32, u32)> = (0..lists as u32).map(|j| (ranker.dist(j), j)).collect();
            all.sort_unstable_by(by_rank);
            let grouped = ivf.probe(Metric::L2, &p, 16);
            same += grouped[..16]
                .iter()
                .filter(|l| all[..16].iter().any(|a| a.1 == l.1))
                .count();
            probed += 16;
            // A filter that only the rows of far lists pass still gets k rows.
            let far: Vec<u32> = all[lists - 100..]
                .iter()
                .flat_map(|&(_, l)| ivf.rows[ivf.entries(l)].to_vec())
                .collect();
            let got = ivf.search(&view, &q, 10, 64, 16, &|r| far.contains(&r));
            assert_eq!(got.len(), 10);
        }
        eprintln!("{same} of {probed} nearest lists among the nearest groups' lists");
        assert!(same as f64 >= 0.95 * probed as f64, "{same} of {probed}");
    }

    /// Every list probed finds what exact search finds, for every code kind and metric; the
    /// file round-trips; damaged files are refused.
    #[test]
    fn probing_every_list_is_exact_and_files_round_trip() {
        let (n, dim, k) = (2000, 24, 10);
        let data = clustered(n, dim);
        for metric in [Metric::Cosine, Metric::L2, Metric::Dot] {
            let view = VectorView::new(&data, dim, metric);
            for quant in [
                QuantKind::None,
                QuantKind::Sq8,
                QuantKind::RaBitQ(4),
                QuantKind::RaBitQ(1),
                QuantKind::Binary,
            ] {
                let settings = IndexSettings {
                    nlist: 20,
                    quant,
                    ..IndexSettings::default()
                };
                let ivf = Ivf::build(&view, &settings, &Task::new()).unwrap();
                assert_eq!(ivf.lists(), 20);
                let bytes = ivf.to_bytes();
                let read =
                    Ivf::from_buffer(Buffer::from(bytes.clone()), Path::new("i.ivf")).unwrap();
                assert_eq!(read, ivf);
                assert!(in_two_lists(&ivf, n));
                let mut hits = 0;
                for qi in 0..20u32 {
                    let q = view.row(qi * 97 + 5).to_vec();
                    let want = exact_top(&view, &q, k);
                    // Every list and every entry re-ranked: exact.
                    let got: Vec<u32> = read
                        .search(&view, &q, k, n, 20, &|_| true)
                        .into_iter()
                        .map(|(r, _)| r)
                        .collect();
                    assert_eq!(got.len(), k);
                    let mut distinct = got.clone();
                    distinct.sort_unstable();
                    distinct.dedup();
                    assert_eq!(distinct.len(), k, "{metric} {quant:?}: a row twice");
                    hits += got.iter().filter(|r| want.contains(r)).count();
                }
                assert!(hits >= 20 * k * 99 / 100, "{metric} {quant:?}: {hits}");
                // A filter returns only accepted rows.
                let q = view.row(1).to_vec();
                let even = read.search(&view, &q, k, 64, 20, &|r| r % 2 == 0);
                assert_eq!(even.len(), k);
                assert!(even.iter().all(|(r, _)| r % 2 == 0));
                // A filter that leaves few rows in the nearest list: more lists are scanned
                // until k are found.
                let rare = read.search(&view, &q, k, k, 1, &|r| r % 50 == 0);
                assert_eq!(rare.len(), k, "{metric} {quant:?}");
                assert!(rare.iter().all(|(r, _)| r % 50 == 0));
                // Damage.
                let mut bad = bytes.clone();
                let entry = HEADER_WORDS + 20 * dim + 21;
                bad[entry * 4..entry * 4 + 4].copy_from_slice(&(n as u32).to_le_bytes());
                let err = Ivf::from_buffer(Buffer::from(bad), Path::new("i.ivf")).unwrap_err();
                assert!(err.to_string().contains("list entry out of range"), "{err}");
                let short = Buffer::from(bytes[..bytes.len() - 8].to_vec());
                assert!(Ivf::from_buffer(short, Path::new("i.ivf")).is_err());
            }
        }
    }

    /// A file of the first format (eight header words, one entry per row) reads as the index
    /// it was written from; one list is such an index (no second list to file rows in).
    #[test]
    fn first_format_files_still_open() {
        let (n, dim) = (300, 16);
        let data = clustered(n, dim);
        let view = VectorView::new(&data, dim, Metric::Cosine);
        for quant in [QuantKind::None, QuantKind::RaBitQ(1)] {
            let settings = IndexSettings {
                nlist: 1,
                quant,
                ..IndexSettings::default()
            };
            let ivf = Ivf::build(&view, &settings, &Task::new()).unwrap();
            assert_eq!(ivf.rows.len(), n);
            let bytes = ivf.to_bytes();
            // The same words under the old header; the codes' section, placed by its offset
            // in the file, is written afresh after them.
            let mut v1 = b"OMENIVF1".to_vec();
            v1.extend_from_slice(&bytes[8..HEADER_WORDS_V1 * 4]);
            let words = ivf.centroids.len() + ivf.offsets.len() + ivf.rows.len();
            v1.extend_from_slice(&bytes[HEADER_WORDS * 4..(HEADER_WORDS + words) * 4]);
            if let Some(c) = &ivf.codes {
                c.write(&mut v1);
            }
            if let Some(b) = &ivf.blocks {
                v1.extend_from_slice(b);
            }
            let read = Ivf::from_buffer(Buffer::from(v1), Path::new("v1.ivf")).unwrap();
            assert_eq!(read, ivf, "{quant:?}");
            let q = view.row(7).to_vec();
            assert_eq!(read.search(&view, &q, 5, 50, 1, &|_| true)[0].0, 7);
        }
    }
}
