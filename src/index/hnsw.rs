//! HNSW (hierarchical navigable small world) graph over a segment's vectors: the frozen graph
//! and its search (read side only). Built in parallel by `builder`, persisted and mapped by
//! `format`, searched with per-thread state from `visited`.
//!
//! Search descends the upper layers greedily, runs a beam of width `ef` on layer 0 over the
//! index's compact codes when it has them (a `Quantizer` scorer), and re-ranks the beam with
//! exact distances read from the mapped segment.

pub(crate) mod builder;
pub(crate) mod format;
mod visited;

use std::cmp::Reverse;

use arrow_buffer::ScalarBuffer;

pub use builder::HnswParams;

use super::{rerank, Accept};
use crate::distance::prefetch_rows;
use crate::options::IndexKind;
use crate::quant::{with_codes, Codes, Quantizer};
use crate::topk::Neighbor;
use crate::vector::{Scorer, VectorView};
use visited::{with_scratch, Scratch};

/// Neighbour lists of a graph, however they are stored.
pub(super) trait Links {
    fn neighbours(&self, node: u32, level: usize, out: &mut Vec<u32>);
    /// Starts loading `node`'s list on `level` into the cache (where that helps).
    fn prefetch(&self, _node: u32, _level: usize) {}
}

/// A frozen graph in its flat layout: layer 0 is `n × (1 + 2m)` u32 words (a count, then the
/// neighbour ids); upper layers are stored only for the few nodes that reach them.
#[derive(Debug, Clone, PartialEq)]
pub struct Hnsw {
    /// Neighbours per node on upper layers (layer 0 keeps 2m).
    pub m: usize,
    pub(crate) entry: u32,
    pub(crate) max_level: usize,
    /// `n × (1 + 2m)`: count, then neighbours.
    pub layer0: ScalarBuffer<u32>,
    /// For node i with level ≥ 1, `upper_offsets[i]` indexes `upper`, where its lists for
    /// levels 1..=level follow each other, each `1 + m` words.
    pub(crate) upper_offsets: ScalarBuffer<u32>,
    pub(crate) upper: ScalarBuffer<u32>,
    /// The codes search traverses (`None`: traversed with exact distances).
    pub(crate) codes: Option<Codes>,
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

    #[inline]
    fn prefetch(&self, node: u32, level: usize) {
        if level == 0 {
            let w = 1 + 2 * self.m;
            prefetch_rows(&self.layer0, node as usize * w, w);
        }
    }
}

/// Beam search on one layer from `entry`; returns up to `ef` nearest accepted nodes, nearest
/// first.
pub(super) fn search_layer(
    dist: &impl Scorer,
    links: &impl Links,
    entry: &[Neighbor],
    ef: usize,
    level: usize,
    accept: Accept<'_>,
) -> Vec<Neighbor> {
    match accept {
        None => search_beam(dist, links, entry, ef, level),
        Some(accept) => search_filtered(dist, links, entry, ef, level, accept),
    }
}

/// Computes the distances of `nbrs` (unvisited neighbours) four at a time, with the vectors of
/// the scorer's `lookahead` next ones already on their way into the cache, handing each to
/// `offer` in order.
#[inline]
fn score_all(dist: &impl Scorer, nbrs: &[u32], mut offer: impl FnMut(Neighbor)) {
    let ahead = dist.lookahead();
    for &n in nbrs.iter().take(ahead) {
        dist.prefetch(n);
    }
    let mut fours = nbrs.chunks_exact(4);
    for (j, four) in fours.by_ref().enumerate() {
        for &next in nbrs.iter().skip(4 * j + ahead).take(4) {
            dist.prefetch(next);
        }
        let ids = [four[0], four[1], four[2], four[3]];
        for (d, id) in dist.dist4(ids).into_iter().zip(ids) {
            offer(Neighbor::new(d, id));
        }
    }
    for &n in fours.remainder() {
        offer(Neighbor::new(dist.dist(n), n));
    }
}

/// The unfiltered search: one sorted beam of at most `ef` candidates, each marked once its
/// neighbours are visited; it ends when every candidate in the beam has been expanded (which
/// is when the nearest unexpanded one would be farther than the beam's farthest).
fn search_beam(
    dist: &impl Scorer,
    links: &impl Links,
    entry: &[Neighbor],
    ef: usize,
    level: usize,
) -> Vec<Neighbor> {
    with_scratch(|scratch| {
        let Scratch {
            visited,
            beam,
            nbrs,
            ..
        } = scratch;
        visited.reset(dist.len());
        beam.clear(ef);
        for &e in entry {
            if visited.insert(e.id) {
                beam.offer(e);
            }
        }
        while let Some(c) = beam.next_unexpanded() {
            // The next candidate's list is most likely the next one read.
            if let Some(next) = beam.peek_unexpanded() {
                links.prefetch(next, level);
            }
            links.neighbours(c, level, nbrs);
            visited.keep_unvisited(nbrs);
            score_all(dist, nbrs, |n| beam.offer(n));
        }
        beam.to_vec()
    })
}

/// The filtered search: a frontier of every candidate nearer than the farthest of the `ef`
/// best accepted ones, so the search goes on through rejected rows.
fn search_filtered(
    dist: &impl Scorer,
    links: &impl Links,
    entry: &[Neighbor],
    ef: usize,
    level: usize,
    accept: &dyn Fn(u32) -> bool,
) -> Vec<Neighbor> {
    with_scratch(|scratch| {
        let Scratch {
            visited,
            frontier,
            best,
            nbrs,
            ..
        } = scratch;
        visited.reset(dist.len());
        frontier.clear();
        best.clear();
        for &e in entry {
            visited.insert(e.id);
            frontier.push(Reverse(e));
            if accept(e.id) {
                best.push(e);
            }
        }
        while let Some(Reverse(c)) = frontier.pop() {
            if best.len() >= ef && c.dist > best.peek().map_or(f32::INFINITY, |b| b.dist) {
                break;
            }
            links.neighbours(c.id, level, nbrs);
            visited.keep_unvisited(nbrs);
            score_all(dist, nbrs, |n| {
                let worst = best.peek().map_or(f32::INFINITY, |b| b.dist);
                if best.len() < ef || n.dist < worst {
                    frontier.push(Reverse(n));
                    if accept(n.id) {
                        best.push(n);
                        if best.len() > ef {
                            best.pop();
                        }
                    }
                }
            });
        }
        let mut found: Vec<Neighbor> = best.drain().collect();
        found.sort_unstable();
        found
    })
}

impl Hnsw {
    /// Builds a graph over every row of `view` (on the current rayon pool).
    pub fn build(view: &VectorView<'_>, params: HnswParams) -> Hnsw {
        builder::build(view, params, &crate::task::Task::new()).expect("never cancelled")
    }

    /// Nodes in the graph.
    pub fn len(&self) -> usize {
        self.upper_offsets.len()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.upper_offsets.is_empty()
    }

    /// The `k` nearest accepted rows to `query` (raw; prepared here), nearest first, with
    /// their ranking distances (squared for l2).
    pub fn search(
        &self,
        view: &VectorView<'_>,
        query: &[f32],
        k: usize,
        ef: usize,
        accept: Accept<'_>,
    ) -> Vec<(u32, f32)> {
        if self.is_empty() || k == 0 {
            return Vec::new();
        }
        let q = view.prepare(query);
        let exact = view.scorer(&q);
        let ef = ef.max(k);
        let found = match &self.codes {
            Some(codes) if codes.dim() == view.dim() && codes.rows() == view.len() => {
                // Traverse the codes, then re-rank the beam's nearest exactly (a beam wider
                // than ef for coarse codes, only its head for fine ones).
                let beam = ef * codes.oversample();
                with_codes!(codes, |c| {
                    let coded = c.scorer(view.metric(), &q);
                    let eps = self.descend(&coded);
                    let mut found = search_layer(&coded, self, &eps, beam, 0, accept);
                    found.truncate(codes.rerank_depth(k));
                    rerank(&exact, found)
                })
            }
            _ => {
                let eps = self.descend(&exact);
                search_layer(&exact, self, &eps, ef, 0, accept)
            }
        };
        found.into_iter().take(k).map(|n| (n.id, n.dist)).collect()
    }

    /// Greedy search through the upper layers: the entry point of layer 0.
    fn descend(&self, dist: &impl Scorer) -> Vec<Neighbor> {
        let mut eps = vec![Neighbor::new(dist.dist(self.entry), self.entry)];
        for l in (1..=self.max_level).rev() {
            eps = search_layer(dist, self, &eps, 1, l, None);
        }
        eps
    }
}

impl super::VectorIndex for Hnsw {
    fn kind(&self) -> IndexKind {
        IndexKind::Hnsw
    }

    fn search(
        &self,
        view: &VectorView<'_>,
        query: &[f32],
        k: usize,
        params: &super::SearchParams,
        accept: Accept<'_>,
    ) -> Vec<(u32, f32)> {
        Hnsw::search(self, view, query, k, params.ef, accept)
    }

    /// A search expands about `ef` nodes on layer 0 and compares each one's list of up to
    /// `2m` neighbours (the upper layers add a few lists).
    fn search_work(&self, params: &super::SearchParams) -> usize {
        params.ef.saturating_mul(2 * self.m)
    }

    fn graph(&self) -> Option<&Hnsw> {
        Some(self)
    }
}
