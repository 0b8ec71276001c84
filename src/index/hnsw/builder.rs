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
use crate::quant::{Codes, Quantizer};
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
            quant: QuantKind::Sq8,
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
        if kept.iter().all(|&k| view.dist_rows(c.id, k) > c.dist) {
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

/// Builds a graph over every row of `view`; gives up (`None`) soon after `cancel` is set.
pub(crate) fn build(
    view: &VectorView<'_>,
    params: HnswParams,
    cancel: &AtomicBool,
) -> Option<Hnsw> {
    let n = view.len();
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
    let entry = RwLock::new((0u32, levels[0] as usize));
    let insert = |i: u32| {
        if cancel.load(Ordering::Relaxed) {
            return;
        }
        let q = view.prepare(view.row(i));
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
            Some(Codes::Sq8(c)) => ctx.run(i, &c.scorer(view.metric(), &q)),
            None => ctx.run(i, &exact),
        }
    };
    // A small sequential start gives the parallel phase a connected graph to search.
    let head = n.min(1000) as u32;
    (1..head).for_each(insert);
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
        if node.len() > 1 {
            upper_offsets[i] = upper.len() as u32;
            for list in &node[1..] {
                let list = lock(list);
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
        codes,
    })
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
            eps = search_layer(coded, graph, &eps, 1, l, &|_| true);
        }
        for l in (0..=self.level.min(top)).rev() {
            let found = rerank(
                self.exact,
                search_layer(coded, graph, &eps, self.ef, l, &|_| true),
            );
            let cap = if l == 0 { 2 * m } else { m };
            let chosen = select(view, &found, cap);
            *lock(&graph.links[i as usize][l]) = chosen.clone();
            for &nb in &chosen {
                let mut list = lock(&graph.links[nb as usize][l]);
                list.push(i);
                if list.len() > cap {
                    let mut cands: Vec<Neighbor> = list
                        .iter()
                        .map(|&x| Neighbor::new(view.dist_rows(nb, x), x))
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

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
