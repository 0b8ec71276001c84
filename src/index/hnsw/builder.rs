//! Building an HNSW graph in parallel (rayon): writers lock one node's list, searches read
//! layer 0 without a lock, so there is no global lock on the hot path. Each insert walks the
//! graph over the quantizer's codes, re-ranks the `ef_construction` candidates exactly, and
//! keeps links chosen by the neighbour selection heuristic. The result is frozen into the flat
//! layout `Hnsw` searches.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, RwLock};

use rayon::prelude::*;

use super::{rerank, search_layer, Hnsw, Links};
use crate::distance::prefetch_rows;
use crate::error::{lock, read, write};
use crate::options::{IndexSettings, QuantKind};
use crate::quant::{splitmix, with_codes, Codes, Quantizer};
use crate::task::Task;
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
            m: s.graph.m,
            ef_construction: s.graph.ef_construction,
            quant: s.quant,
            ..HnswParams::default()
        }
    }
}

/// A link while building: its distance to the node it leaves (NaN until measured, for links
/// carried over from a base graph), and whether the node's last selection kept it.
#[derive(Debug, Clone, Copy)]
struct Link {
    dist: f32,
    id: u32,
    selected: bool,
}

impl Link {
    fn new(n: Neighbor) -> Self {
        Link {
            dist: n.dist,
            id: n.id,
            selected: false,
        }
    }

    /// A link whose distance is measured only if its list is pruned (carried from a base graph).
    fn unmeasured(id: u32) -> Self {
        Link::new(Neighbor::new(f32::NAN, id))
    }

    /// Nearest first, ties by id: the order selection takes its candidates in.
    fn nearest_first(a: &Link, b: &Link) -> std::cmp::Ordering {
        a.dist.total_cmp(&b.dist).then(a.id.cmp(&b.id))
    }
}

/// At most this many of a node's links go to copies of its own row. A copy lies in no
/// direction: kept as the heuristic would keep it (nearest of all), it would hide every other
/// candidate (each as far from the copy as from the node), and a vector stored many times
/// would become an island of copies that no search enters or leaves.
const COPY_LINKS: usize = 2;

/// The neighbour-selection heuristic: keep a candidate only if it is nearer to the base than
/// to every neighbour already kept (spreads links in different directions). `candidates` come
/// nearest first; the kept ones are marked selected. Two candidates that one earlier selection
/// kept together passed this test against each other then (the distances have not changed),
/// so re-pruning a list measures only the pairs that involve a link added since.
///
/// Copies of the base's row (equal values) are kept apart: at most [`COPY_LINKS`] of them,
/// the nearest copies before and after the base in row order (so the copies of one vector form
/// a chain a search can walk), and they hide no other candidate.
///
/// Rows stored in half precision are widened to f32 once per row compared: where several
/// candidates are new (a first selection, or a list filled by links added since) each kept
/// row is widened once and compared with them; a re-pruning with one new link widens that one.
fn select(view: &VectorView<'_>, base: u32, candidates: &[Link], m: usize) -> Vec<Link> {
    let copies: Vec<Link> = candidates
        .iter()
        .filter(|c| c.id != base && view.same_rows(base, c.id))
        .copied()
        .collect();
    let others = candidates
        .iter()
        .filter(|c| c.id != base && !copies.iter().any(|k| k.id == c.id));
    let mut kept: Vec<Link> = chain_links(base, copies.clone(), m.min(COPY_LINKS));
    let widen_kept = others.clone().filter(|c| !c.selected).nth(1).is_some();
    // The kept links a candidate is tested against: the ones that are not copies.
    let copies_kept = kept.len();
    let mut kept_rows: Vec<std::borrow::Cow<'_, [f32]>> = Vec::new();
    for c in others {
        if kept.len() >= m {
            break;
        }
        let mut row = None;
        let pass = kept[copies_kept..].iter().enumerate().all(|(j, k)| {
            (c.selected && k.selected)
                || if widen_kept {
                    view.dist_from(&kept_rows[j], k.id, c.id) > c.dist
                } else {
                    let row = row.get_or_insert_with(|| view.row(c.id));
                    view.dist_from(row, c.id, k.id) > c.dist
                }
        });
        if pass {
            if widen_kept {
                kept_rows.push(view.row(c.id));
            }
            kept.push(*c);
        }
    }
    for k in &mut kept {
        k.selected = true;
    }
    kept
}

/// Up to `n` of `copies` (links to rows equal to `base`'s): the nearest before `base` and the
/// nearest after it in row order, then the next nearest in row order.
fn chain_links(base: u32, mut by_row: Vec<Link>, n: usize) -> Vec<Link> {
    by_row.sort_unstable_by_key(|c| c.id);
    by_row.dedup_by_key(|c| c.id);
    let after = by_row.partition_point(|c| c.id < base);
    let mut order: Vec<Link> = Vec::with_capacity(by_row.len());
    let (mut lo, mut hi) = (after, after);
    // Alternately the next copy before and after `base`, nearest first.
    while order.len() < n && (lo > 0 || hi < by_row.len()) {
        if lo > 0 {
            lo -= 1;
            order.push(by_row[lo]);
        }
        if hi < by_row.len() && order.len() < n {
            order.push(by_row[hi]);
            hi += 1;
        }
    }
    order
}

/// Cuts `list`, node `node`'s links, back to `cap` by the heuristic.
fn prune(view: &VectorView<'_>, node: u32, list: &mut Vec<Link>, cap: usize) {
    if list.iter().any(|l| l.dist.is_nan()) {
        let row = view.row(node);
        for l in list.iter_mut().filter(|l| l.dist.is_nan()) {
            l.dist = view.dist_from(&row, node, l.id);
        }
    }
    list.sort_unstable_by(Link::nearest_first);
    *list = select(view, node, list, cap);
}

/// The graph while it is being built: every node's list on each of its levels, with each
/// link's distance, under a lock per list. Layer 0, which searches read at every step, is also
/// kept in one flat array of rows in the frozen graph's layout (a count, then up to `2m` ids)
/// that readers copy without a lock; a reader racing a writer may copy a mix of the old and
/// the new list, each of whose ids is a node, which a beam search tolerates.
struct Building {
    /// Words per layer-0 row: `1 + 2m`.
    w0: usize,
    layer0: Vec<AtomicU32>,
    lists: Vec<Vec<Mutex<Vec<Link>>>>,
}

impl Building {
    fn new(levels: &[u8], m: usize) -> Self {
        let w0 = 1 + 2 * m;
        Building {
            w0,
            layer0: (0..levels.len() * w0).map(|_| AtomicU32::new(0)).collect(),
            lists: levels
                .iter()
                .map(|&l| (0..=l).map(|_| Mutex::new(Vec::new())).collect())
                .collect(),
        }
    }

    fn row(&self, node: u32) -> &[AtomicU32] {
        &self.layer0[node as usize * self.w0..(node as usize + 1) * self.w0]
    }

    /// Copies layer-0 list `list` of `node` into its row; the caller holds the list's lock.
    fn mirror(&self, node: u32, list: &[Link]) {
        let row = self.row(node);
        for (slot, l) in row[1..].iter().zip(list) {
            slot.store(l.id, Ordering::Relaxed);
        }
        row[0].store(list.len().min(self.w0 - 1) as u32, Ordering::Release);
    }

    /// Sets node `node`'s links on `level`.
    fn set(&self, node: u32, level: usize, links: Vec<Link>) {
        let mut list = lock(&self.lists[node as usize][level]);
        *list = links;
        if level == 0 {
            self.mirror(node, &list);
        }
    }

    /// Adds `link` to node `node`'s links on `level`, pruning them back to `cap` when that
    /// overfills them.
    fn push(&self, view: &VectorView<'_>, node: u32, level: usize, link: Link, cap: usize) {
        let mut list = lock(&self.lists[node as usize][level]);
        list.push(link);
        if list.len() > cap {
            prune(view, node, &mut list, cap);
            if level == 0 {
                self.mirror(node, &list);
            }
        } else if level == 0 {
            // Only the new id and the count change.
            let row = self.row(node);
            row[list.len()].store(link.id, Ordering::Relaxed);
            row[0].store(list.len() as u32, Ordering::Release);
        }
    }
}

impl Links for Building {
    #[inline]
    fn neighbours(&self, node: u32, level: usize, out: &mut Vec<u32>) {
        out.clear();
        if level > 0 {
            out.extend(lock(&self.lists[node as usize][level]).iter().map(|l| l.id));
            return;
        }
        let row = self.row(node);
        let count = (row[0].load(Ordering::Acquire) as usize).min(self.w0 - 1);
        out.extend(row[1..1 + count].iter().map(|w| w.load(Ordering::Relaxed)));
    }

    #[inline]
    fn prefetch(&self, node: u32, level: usize) {
        if level == 0 {
            prefetch_rows(&self.layer0, node as usize * self.w0, self.w0);
        }
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
pub(crate) fn build(view: &VectorView<'_>, params: HnswParams, cancel: &Task) -> Option<Hnsw> {
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
    cancel: &Task,
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
    let graph = Building::new(&levels, m);
    let (entry, first) = match carried {
        Some((lists, entry, kept)) => {
            for (node, node_lists) in lists.into_iter().enumerate() {
                for (l, list) in node_lists.into_iter().enumerate() {
                    graph.set(node as u32, l, list);
                }
            }
            ((entry, levels[entry as usize] as usize), kept)
        }
        None => ((0, levels[0] as usize), 1),
    };
    let entry = RwLock::new(entry);
    cancel.advance(first);
    let insert = |i: u32| {
        if cancel.cancelled() {
            return;
        }
        cancel.advance(1);
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
    if cancel.cancelled() {
        return None;
    }

    let (entry, max_level) = *read(&entry);
    // Layer 0 is already in the frozen layout.
    let layer0: Vec<u32> = graph
        .layer0
        .into_iter()
        .map(AtomicU32::into_inner)
        .collect();
    let mut upper_offsets = vec![0u32; n];
    let mut upper = Vec::new();
    for (i, lists) in graph.lists.iter().enumerate() {
        // Offsets never decrease (a node without upper lists gets the next one's), so each
        // node's level can be read back when the graph is extended.
        upper_offsets[i] = upper.len() as u32;
        for list in &lists[1..] {
            let list = lock(list);
            upper.push(list.len() as u32);
            upper.extend(list.iter().map(|l| l.id));
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
type Lists = Vec<Vec<Vec<Link>>>;

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
                        return mapped.into_iter().map(Link::unmeasured).collect();
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
                    let mut scored: Vec<Link> = cands.into_iter().map(Link::unmeasured).collect();
                    prune(view, new as u32, &mut scored, cap);
                    scored
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
            let candidates: Vec<Link> = found.iter().map(|&n| Link::new(n)).collect();
            let chosen = select(view, i, &candidates, cap);
            graph.set(i, l, chosen.clone());
            for nb in &chosen {
                let back = Link::new(Neighbor::new(nb.dist, i));
                graph.push(view, nb.id, l, back, cap);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::Metric;
    use crate::quant::uniform_rows;

    /// Re-pruning a list whose links an earlier selection kept, plus links added since (many,
    /// or one), keeps exactly what selecting among all of them afresh keeps (the skipped pairs
    /// are known), for rows stored in f32 and in f16 (where the row widened differs by path).
    #[test]
    fn re_pruning_skips_only_pairs_already_known_to_pass() {
        let (n, dim, cap) = (400, 12, 8);
        let data = uniform_rows(n, dim);
        let half: Vec<half::f16> = data.iter().map(|&v| half::f16::from_f32(v)).collect();
        let views = [Metric::L2, Metric::Cosine].into_iter().flat_map(|metric| {
            [
                VectorView::new(&data, dim, metric),
                VectorView::of(crate::vector::Floats::F16(&half), dim, metric),
            ]
        });
        for view in views {
            for base in 0..40u32 {
                let row = view.row(base);
                let link = |x: u32| Link::new(Neighbor::new(view.dist_from(&row, base, x), x));
                let sorted = |mut v: Vec<Link>| {
                    v.sort_unstable_by(Link::nearest_first);
                    v
                };
                let near = sorted((0..n as u32).filter(|&x| x != base).map(link).collect());
                let near = &near[..60];
                // An earlier selection among the odd ids, then the even ones added.
                let odd: Vec<Link> = near.iter().copied().filter(|l| l.id % 2 == 1).collect();
                let first = select(&view, base, &odd, cap);
                assert!(first.len() > 1 && first.iter().all(|l| l.selected));
                let ids = |v: &[Link]| v.iter().map(|l| l.id).collect::<Vec<_>>();
                // Pruning a list keeps what selecting among its links afresh keeps.
                let prunes_as_fresh = |mut list: Vec<Link>| {
                    let fresh = list.iter().map(|l| Link {
                        selected: false,
                        ..*l
                    });
                    let expect = ids(&select(&view, base, &sorted(fresh.collect()), cap));
                    prune(&view, base, &mut list, cap);
                    assert_eq!(ids(&list), expect);
                };
                let mut grown = first.clone();
                grown.extend(near.iter().copied().filter(|l| l.id % 2 == 0));
                prunes_as_fresh(grown);
                // One link added to a full selection.
                for extra in near.iter().filter(|l| l.id % 2 == 0).take(6) {
                    let mut one = first.clone();
                    one.push(*extra);
                    prunes_as_fresh(one);
                }
                // Links without a distance (carried from a base graph) are measured first.
                let mut carried: Vec<Link> = odd.iter().map(|l| Link::unmeasured(l.id)).collect();
                prune(&view, base, &mut carried, cap);
                assert_eq!(ids(&carried), ids(&first));
            }
        }
    }
}
