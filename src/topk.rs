//! Candidates ranked by distance: one totally ordered `(distance, id)` entry shared by every
//! search (graph beams, exact scans, the merge across segments), and a bounded best-k heap.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A candidate: its distance in the metric's ranking form and its id (a row within a segment,
/// or a segment and row packed into a `u64`). Ordered by distance, then id, so ties break the
/// same way in every search.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Neighbor<K = u32> {
    pub dist: f32,
    pub id: K,
}

impl<K> Neighbor<K> {
    pub(crate) fn new(dist: f32, id: K) -> Self {
        Neighbor { dist, id }
    }
}

impl<K: Ord> PartialEq for Neighbor<K> {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl<K: Ord> Eq for Neighbor<K> {}
impl<K: Ord> PartialOrd for Neighbor<K> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<K: Ord> Ord for Neighbor<K> {
    fn cmp(&self, o: &Self) -> Ordering {
        self.dist.total_cmp(&o.dist).then(self.id.cmp(&o.id))
    }
}

/// The k best candidates seen so far (a max-heap on distance).
#[derive(Debug)]
pub(crate) struct TopK<K = u64> {
    k: usize,
    heap: BinaryHeap<Neighbor<K>>,
}

impl<K: Ord + Copy> TopK<K> {
    pub(crate) fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// The distance a candidate must beat to enter (infinite until k are held).
    #[inline]
    pub(crate) fn threshold(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::INFINITY
        } else {
            self.heap.peek().map_or(f32::INFINITY, |c| c.dist)
        }
    }

    /// Offers a candidate; it stays if it is among the k best so far.
    #[inline]
    pub(crate) fn push(&mut self, c: Neighbor<K>) {
        if self.heap.len() < self.k {
            self.heap.push(c);
        } else if let Some(mut top) = self.heap.peek_mut() {
            if c < *top {
                *top = c;
            }
        }
    }

    /// Offers every candidate of `other`.
    pub(crate) fn merge(&mut self, other: impl IntoIterator<Item = Neighbor<K>>) {
        for c in other {
            self.push(c);
        }
    }

    /// The candidates held, in no particular order.
    pub(crate) fn into_unsorted(self) -> impl Iterator<Item = Neighbor<K>> {
        self.heap.into_iter()
    }

    /// The candidates held, nearest first.
    pub(crate) fn into_sorted(self) -> Vec<Neighbor<K>> {
        self.heap.into_sorted_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_k_nearest_with_ties_broken_by_id() {
        let mut top = TopK::<u64>::new(2);
        for (d, id) in [(0.5, 7), (0.1, 3), (0.5, 2), (0.9, 1)] {
            top.push(Neighbor::new(d, id));
        }
        let got: Vec<u64> = top.into_sorted().iter().map(|n| n.id).collect();
        assert_eq!(got, vec![3, 2]);
    }
}
