//! The reusable per-thread state of graph search: a visited set cleared in O(1) by bumping an
//! epoch, both beam heaps and the neighbour list, so a query allocates none of them.

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
}

/// A thread's search state.
pub(super) struct Scratch {
    pub visited: Visited,
    pub frontier: BinaryHeap<Reverse<Neighbor>>,
    pub best: BinaryHeap<Neighbor>,
    pub nbrs: Vec<u32>,
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

/// Runs `f` with this thread's search state.
pub(super) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
}
