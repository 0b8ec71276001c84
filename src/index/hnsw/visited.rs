//! The reusable per-thread state of graph search: a visited set cleared in O(1) by bumping an
//! epoch, the sorted beam of unfiltered search, the heaps of filtered search and the
//! neighbour list, so a query allocates none of them.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::topk::Neighbor;

/// A visited set cleared by bumping an epoch.
pub(super) struct Visited {
    marks: Vec<u32>,
    epoch: u32,
}

impl Visited {
    const fn new() -> Visited {
        Visited {
            marks: Vec::new(),
            epoch: 0,
        }
    }

    /// Empties the set and makes room for nodes `0..n`.
    pub(super) fn reset(&mut self, n: usize) {
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
    pub(super) fn insert(&mut self, i: u32) -> bool {
        let m = &mut self.marks[i as usize];
        let fresh = *m != self.epoch;
        *m = self.epoch;
        fresh
    }

    /// Marks every node of `nodes` and keeps only those that were unvisited, in order. Written
    /// without a branch per node: whether a neighbour was seen is unpredictable.
    #[inline]
    pub(super) fn keep_unvisited(&mut self, nodes: &mut Vec<u32>) {
        let mut kept = 0;
        for r in 0..nodes.len() {
            let n = nodes[r];
            nodes[kept] = n;
            kept += usize::from(self.insert(n));
        }
        nodes.truncate(kept);
    }
}

/// The candidates of an unfiltered beam search: at most `ef`, nearest first, each marked once
/// its neighbours have been visited. Kept sorted by insertion (a beam is at most a few hundred
/// entries, so moving the tail costs less than a heap's reordering), it needs no second
/// structure for the results and drops a candidate as soon as `ef` nearer ones are known.
pub(super) struct Beam {
    items: Vec<(Neighbor, bool)>,
    ef: usize,
    /// No unexpanded candidate sits before this position.
    cursor: usize,
}

impl Beam {
    const fn new() -> Beam {
        Beam {
            items: Vec::new(),
            ef: 0,
            cursor: 0,
        }
    }

    /// Empties the beam, which then holds at most `ef` (at least one) candidates.
    pub(super) fn clear(&mut self, ef: usize) {
        self.items.clear();
        self.ef = ef.max(1);
        self.cursor = 0;
    }

    /// Keeps `n` if it is among the `ef` nearest offered so far.
    #[inline]
    pub(super) fn offer(&mut self, n: Neighbor) {
        // Distances are finite (a query is refused otherwise), so plain comparisons order
        // them; a tie with the farthest is not kept.
        let full = self.items.len() >= self.ef;
        if full
            && self
                .items
                .last()
                .is_some_and(|(last, _)| n.dist >= last.dist)
        {
            return;
        }
        let at = self.items.partition_point(|(c, _)| c.dist <= n.dist);
        if full {
            self.items.pop();
        }
        self.items.insert(at, (n, false));
        self.cursor = self.cursor.min(at);
    }

    /// The nearest candidate not yet expanded, now marked expanded; `None` when none is left.
    #[inline]
    pub(super) fn next_unexpanded(&mut self) -> Option<u32> {
        while let Some((c, expanded)) = self.items.get_mut(self.cursor) {
            self.cursor += 1;
            if !*expanded {
                *expanded = true;
                return Some(c.id);
            }
        }
        None
    }

    /// The nearest candidate not yet expanded, left unmarked.
    #[inline]
    pub(super) fn peek_unexpanded(&self) -> Option<u32> {
        self.items[self.cursor.min(self.items.len())..]
            .iter()
            .find(|(_, expanded)| !expanded)
            .map(|(c, _)| c.id)
    }

    /// The candidates, nearest first.
    pub(super) fn to_vec(&self) -> Vec<Neighbor> {
        self.items.iter().map(|&(n, _)| n).collect()
    }
}

/// A thread's search state.
pub(super) struct Scratch {
    pub visited: Visited,
    pub beam: Beam,
    pub frontier: BinaryHeap<Reverse<Neighbor>>,
    pub best: BinaryHeap<Neighbor>,
    pub nbrs: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            visited: Visited::new(),
            beam: Beam::new(),
            frontier: BinaryHeap::new(),
            best: BinaryHeap::new(),
            nbrs: Vec::new(),
        })
    };
}

/// Runs `f` with this thread's search state.
pub(super) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_unvisited_keeps_first_sightings_in_order() {
        let mut visited = Visited::new();
        visited.reset(10);
        assert!(visited.insert(3));
        let mut nodes = vec![5, 3, 7, 5, 9, 0, 7];
        visited.keep_unvisited(&mut nodes);
        assert_eq!(nodes, [5, 7, 9, 0]);
        // A new epoch forgets every mark.
        visited.reset(10);
        let mut again = vec![3, 3, 5];
        visited.keep_unvisited(&mut again);
        assert_eq!(again, [3, 5]);
    }
}
