//! Building an HNSW graph in parallel (rayon): a lock per node and level, so there is no
//! global lock on the hot path. Each insert walks the graph over the quantizer's codes,
//! re-ranks the `ef_construction` candidates exactly, and keeps links chosen by the neighbour
//! selection heuristic. The result is frozen into the flat layout `Hnsw` searches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use rayon::prelude::*;

use super::{rerank, search_layer, Hnsw, Links};
use crate::error::{lock, read, write};
use crate::options::{IndexSettings, QuantKind};
use crate::quant::{splitmix, with_codes, Codes, Quantizer};
use crate::topk::Neighbor;
use crate::vector::{Scorer, VectorView};

/// Build parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    /// Neighbours per node on upper layers (layer 0 keeps 2m).
    pub m: usize,
    /// The beam width while inserting.
    pub ef_construction: usize,
    /// Seeds the level of each node.
    pub seed: u64,
    /// The codes the build and searches traverse.
    pub quant: QuantKind,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 200,
            seed: 0x5EED,
            quant: QuantKind::Sq4,
        }
    }
}

impl HnswParams {
    /// The parameters a collection's settings give.
    pub(crate) fn from_settings(s: &IndexSettings) -> Self {
        HnswParams {
            m: s.m,
            ef_construction: s.ef_construction,
            quant: s.quant,
            ..HnswParams::default()
        }
    }
}

/// The neighbour-selection heuristic: keep a candidate only if it is nearer to the base than
/// to every neighbour already kept (spreads links in different directions).
fn select(view: &VectorView<'_>, candidates: &[Neighbor], m: usize) -> Vec<u32> {
    let mut kept: Vec<u32> = Vec::with_capacity(m);
    for c in candidates {
        if kept.len() >= m {
            break;
        }
        let row = view.row(c.id);
        if kept.iter().all(|&k| view.dist_from(&row, c.id, k) > c.dist) {
            kept.push(c.id);
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
        out.extend_from_slice(&lock(&self.links[node as usize][level]));
    }
}

/// The graph a build starts from: `graph` was built over another segment, and `keep[old]` is
/// the row of the new view its node `old` becomes (`DROPPED` for rows left out). The kept rows
/// must be the first rows of the new view, in their old order.
pub(crate) struct Base<'a> {
    pub graph: &'a Hnsw,
    pub keep: &'a [u32],
}

/// A row of a base graph that the new view leaves out.
pub(crate) const DROPPED: u32 = u32::MAX;

/// Builds a graph over every row of `view`; gives up (`None`) soon after `cancel` is set.
pub(crate) fn build(
    view: &VectorView<'_>,
    params: HnswParams,
    cancel: &AtomicBool,
) -> Option<Hnsw> {
    extend(view, params, None, cancel)
}

/// Builds a graph over every row of `view`, starting from `base` when it is given and fits
/// (same `m`, levels readable): its links are carried over (through `keep`), the links that
/// pointed at dropped rows are repaired from their neighbours, and only the other rows are
/// inserted. Merging segments this way costs the new rows, not a rebuild. Gives up (`None`)
/// soon after `cancel` is set.
pub(crate) fn extend(
    view: &VectorView<'_>,
    params: HnswParams,
    base: Option<Base<'_>>,
    cancel: &AtomicBool,
) -> Option<Hnsw> {
    let n = view.len();
    let m = params.m.max(2);
    let ml = 1.0 / (m as f64).ln();
    let mut levels: Vec<u8> = (0..n)
        .map(|i| {
            let r = splitmix(params.seed ^ i as u64);
            let u = ((r >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            ((-u.ln() * ml) as usize).min(16) as u8
        })
        .collect();
    let codes = Codes::train(params.quant, view);
    if n == 0 {
        return Some(Hnsw {
            m,
            entry: 0,
            max_level: 0,
            layer0: Vec::new().into(),
            upper_offsets: Vec::new().into(),
            upper: Vec::new().into(),
            codes,
        });
    }
    let carried = base.and_then(|b| carry(view, b, m, &mut levels));
    let graph = Building {
        links: levels
            .iter()
            .map(|&l| (0..=l).map(|_| Mutex::new(Vec::new())).collect())
            .collect(),
    };
    let (entry, first) = match carried {
        Some((lists, entry, kept)) => {
            for (node, node_lists) in lists.into_iter().enumerate() {
                for (l, list) in node_lists.into_iter().enumerate() {
                    *lock(&graph.links[node][l]) = list;
                }
            }
            ((entry, levels[entry as usize] as usize), kept)
        }
        None => ((0, levels[0] as usize), 1),
    };
    let entry = RwLock::new(entry);
    let insert = |i: u32| {
        if cancel.load(Ordering::Relaxed) {
            return;
        }
        let q = view.prepare(&view.row(i));
        let exact = view.scorer(&q);
        let ctx = Insert {
            view,
            graph: &graph,
            entry: &entry,
            exact: &exact,
            m,
            ef: params.ef_construction,
            level: levels[i as usize] as usize,
        };
        match &codes {
            Some(codes) => with_codes!(codes, |c| ctx.run(i, &c.scorer(view.metric(), &q))),
            None => ctx.run(i, &exact),
        }
    };
    // A small sequential start gives the parallel phase a connected graph to search.
    let head = n.min(1000).max(first) as u32;
    (first as u32..head).for_each(insert);
    (head..n as u32).into_par_iter().for_each(insert);
    if cancel.load(Ordering::Relaxed) {
        return None;
    }

    let (entry, max_level) = *read(&entry);
    let w0 = 1 + 2 * m;
    let mut layer0 = vec![0u32; n * w0];
    let mut upper_offsets = vec![0u32; n];
    let mut upper = Vec::new();
    for (i, node) in graph.links.iter().enumerate() {
        let l0 = lock(&node[0]);
        layer0[i * w0] = l0.len() as u32;
        layer0[i * w0 + 1..i * w0 + 1 + l0.len()].copy_from_slice(&l0);
        // Offsets never decrease (a node without upper lists gets the next one's), so each
        // node's level can be read back when the graph is extended.
        upper_offsets[i] = upper.len() as u32;
        for list in &node[1..] {
            let list = lock(list);
            upper.push(list.len() as u32);
            upper.extend_from_slice(&list);
            upper.extend(std::iter::repeat_n(0, m - list.len()));
        }
    }
    Some(Hnsw {
        m,
        entry,
        max_level,
        layer0: layer0.into(),
        upper_offsets: upper_offsets.into(),
        upper: upper.into(),
        codes,
    })
}

/// Each node's lists by level, as `Building` holds them.
type Lists = Vec<Vec<Vec<u32>>>;

/// The links of `base` renumbered into `view`'s rows (repaired where they lost a neighbour to a
/// dropped row), the new entry point, and how many rows they cover; `levels` gets the kept
/// nodes' levels. `None` when the base cannot be carried over (another `m`, unreadable levels,
/// rows out of order, nothing kept): the caller builds from scratch.
fn carry(
    view: &VectorView<'_>,
    base: Base<'_>,
    m: usize,
    levels: &mut [u8],
) -> Option<(Lists, u32, usize)> {
    let Base { graph, keep } = base;
    let old_levels = graph_levels(graph)?;
    if graph.m != m || keep.len() != graph.len() {
        return None;
    }
    // The kept rows must be 0..kept in their old order.
    let mut kept = 0usize;
    for &new in keep {
        if new != DROPPED {
            if new as usize != kept || kept >= view.len() {
                return None;
            }
            kept += 1;
        }
    }
    if kept == 0 {
        return None;
    }
    let mut old_of = vec![0u32; kept];
    for (old, &new) in keep.iter().enumerate() {
        if new != DROPPED {
            old_of[new as usize] = old as u32;
            levels[new as usize] = old_levels[old];
        }
    }
    let lists: Lists = (0..kept)
        .into_par_iter()
        .map(|new| {
            let old = old_of[new];
            let mut scratch = Vec::new();
            (0..=old_levels[old as usize] as usize)
                .map(|l| {
                    graph.neighbours(old, l, &mut scratch);
                    let cap = if l == 0 { 2 * m } else { m };
                    let mapped: Vec<u32> = scratch
                        .iter()
                        .filter_map(|&x| Some(keep[x as usize]).filter(|&y| y != DROPPED))
                        .collect();
                    if mapped.len() == scratch.len() {
                        return mapped;
                    }
                    // Lost links: choose again among the neighbours left and the kept
                    // neighbours of the dropped ones.
                    let dropped: Vec<u32> = scratch
                        .iter()
                        .copied()
                        .filter(|&x| keep[x as usize] == DROPPED)
                        .collect();
                    let mut cands = mapped;
                    let mut two_hop = Vec::new();
                    for d in dropped {
                        graph.neighbours(d, l, &mut two_hop);
                        cands.extend(
                            two_hop
                                .iter()
                                .map(|&x| keep[x as usize])
                                .filter(|&y| y != DROPPED && y != new as u32),
                        );
                    }
                    cands.sort_unstable();
                    cands.dedup();
                    let mut scored: Vec<Neighbor> = cands
                        .into_iter()
                        .map(|x| Neighbor::new(view.dist_rows(new as u32, x), x))
                        .collect();
                    scored.sort();
                    select(view, &scored, cap)
                })
                .collect()
        })
        .collect();
    let entry = match keep[graph.entry as usize] {
        DROPPED => (0..kept).max_by_key(|&i| (levels[i], std::cmp::Reverse(i)))? as u32,
        e => e,
    };
    Some((lists, entry, kept))
}

/// The level of every node of `graph`, read from its upper offsets (which never decrease in
/// graphs this builder writes); `None` for graphs written before they did.
fn graph_levels(graph: &Hnsw) -> Option<Vec<u8>> {
    let n = graph.len();
    let w = 1 + graph.m;
    let offsets = &graph.upper_offsets;
    let mut levels = Vec::with_capacity(n);
    for i in 0..n {
        let end = if i + 1 < n {
            offsets[i + 1] as usize
        } else {
            graph.upper.len()
        };
        let start = offsets[i] as usize;
        if end < start || !(end - start).is_multiple_of(w) || (end - start) / w > 16 {
            return None;
        }
        levels.push(((end - start) / w) as u8);
    }
    let top = levels.iter().copied().max().unwrap_or(0) as usize;
    (top == graph.max_level && n > 0 && levels[graph.entry as usize] as usize == top)
        .then_some(levels)
}

/// One node's insertion.
struct Insert<'a> {
    view: &'a VectorView<'a>,
    graph: &'a Building,
    entry: &'a RwLock<(u32, usize)>,
    exact: &'a crate::vector::Exact<'a>,
    m: usize,
    ef: usize,
    level: usize,
}

impl Insert<'_> {
    /// Links node `i`, traversing with `coded` and choosing neighbours by exact distance.
    fn run(&self, i: u32, coded: &impl Scorer) {
        let (graph, view, m) = (self.graph, self.view, self.m);
        let (ep, top) = *read(self.entry);
        let mut eps = vec![Neighbor::new(coded.dist(ep), ep)];
        for l in (self.level + 1..=top).rev() {
            eps = search_layer(coded, graph, &eps, 1, l, None);
        }
        for l in (0..=self.level.min(top)).rev() {
            let found = rerank(
                self.exact,
                search_layer(coded, graph, &eps, self.ef, l, None),
            );
            let cap = if l == 0 { 2 * m } else { m };
            let chosen = select(view, &found, cap);
            *lock(&graph.links[i as usize][l]) = chosen.clone();
            for &nb in &chosen {
                let mut list = lock(&graph.links[nb as usize][l]);
                list.push(i);
                if list.len() > cap {
                    let row = view.row(nb);
                    let mut cands: Vec<Neighbor> = list
                        .iter()
                        .map(|&x| Neighbor::new(view.dist_from(&row, nb, x), x))
                        .collect();
                    cands.sort();
                    *list = select(view, &cands, cap);
                }
            }
            eps = found;
        }
        if self.level > top {
            let mut e = write(self.entry);
            if self.level > e.1 {
                *e = (i, self.level);
            }
        }
    }
}
