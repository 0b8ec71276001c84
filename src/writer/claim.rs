//! What a running merge or index build holds while it runs (tantivy's `MergeOperation`):
//! the segments it claimed, so no other merge takes them, and its place in the running count.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::lock;

/// One running merge or index build, counted while it lives.
pub(crate) struct Running<'a>(&'a AtomicUsize);

impl<'a> Running<'a> {
    /// Counts one more in `counter` until the guard drops.
    pub(crate) fn count(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Running(counter)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Segments claimed by a running merge, released when it ends however it ends.
pub(crate) struct Claim<'a> {
    set: &'a Mutex<HashSet<u64>>,
    ids: Vec<u64>,
}

impl<'a> Claim<'a> {
    /// Claims `ids` in `set`; `None` when another claim holds any of them.
    pub(crate) fn take(set: &'a Mutex<HashSet<u64>>, ids: &[u64]) -> Option<Claim<'a>> {
        let mut claimed = lock(set);
        if ids.iter().any(|id| claimed.contains(id)) {
            return None;
        }
        claimed.extend(ids);
        Some(Claim {
            set,
            ids: ids.to_vec(),
        })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut claimed = lock(self.set);
        for id in &self.ids {
            claimed.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_exclude_each_other_and_release_on_drop() {
        let set = Mutex::new(HashSet::new());
        let first = Claim::take(&set, &[1, 2]).unwrap();
        assert!(Claim::take(&set, &[2, 3]).is_none(), "segment 2 is held");
        let other = Claim::take(&set, &[3]).unwrap();
        drop(first);
        assert!(Claim::take(&set, &[1, 2]).is_some(), "released on drop");
        drop(other);
        assert!(lock(&set).is_empty());
    }

    #[test]
    fn running_counts_while_alive() {
        let n = AtomicUsize::new(0);
        let a = Running::count(&n);
        let b = Running::count(&n);
        assert_eq!(n.load(Ordering::Relaxed), 2);
        drop((a, b));
        assert_eq!(n.load(Ordering::Relaxed), 0);
    }
}
