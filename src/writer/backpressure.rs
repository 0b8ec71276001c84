//! Backpressure: the rows of segments not yet indexed are scanned exactly by every search, so
//! a write waits while they are past the collection's bound (`max_unindexed_rows`) for the
//! background indexing to catch up, and is refused with `ResourceExhausted` (before anything
//! is written) when it has waited `write_stall_ms` — writes slow down before searches do.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::lock;
use crate::options::{Backpressure, IndexSettings};
use crate::snapshot::Snapshot;
use crate::{Error, Result};

/// Writes that waited, were refused, and how long they waited, since the collection opened.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stalls {
    pub waited: u64,
    pub refused: u64,
    pub wait_ms: u64,
}

/// Where writes wait for room; commits that may have made room wake them.
#[derive(Debug, Default)]
pub(crate) struct Room {
    stalls: Mutex<Stalls>,
    freed: Condvar,
}

/// The rows of `snapshot` that searches scan exactly and the background work will index:
/// every unindexed segment when merges gather small ones, else those big enough to index.
pub(crate) fn unindexed_rows(snapshot: &Snapshot) -> usize {
    let settings = &snapshot.index;
    snapshot
        .parts
        .iter()
        .filter(|p| p.index.is_none())
        .filter(|p| settings.compaction.enabled || p.seg.rows() >= settings.threshold)
        .map(|p| p.seg.rows())
        .sum()
}

impl Room {
    /// Returns once the collection has room for a write: at once when its unindexed rows
    /// (of `current()`, re-read after each commit) are within the bound, else after waiting
    /// for the indexing (`kick` makes sure it runs). Refused with `ResourceExhausted` naming
    /// the setting when `write_stall_ms` (or the caller's `deadline`) passes first. Returns how
    /// long it waited.
    pub(crate) fn admit(
        &self,
        current: impl Fn() -> std::sync::Arc<Snapshot>,
        kick: impl Fn(),
        deadline: Option<Instant>,
    ) -> Result<Duration> {
        let snapshot = current();
        let Some(limit) = Backpressure::limit(&snapshot.index) else {
            return Ok(Duration::ZERO);
        };
        if unindexed_rows(&snapshot) <= limit {
            return Ok(Duration::ZERO);
        }
        kick();
        let start = Instant::now();
        let mut stalls = lock(&self.stalls);
        let (waited, result) = loop {
            let snapshot = current();
            let settings: IndexSettings = snapshot.index;
            let Some(limit) = Backpressure::limit(&settings) else {
                break (start.elapsed(), Ok(()));
            };
            let unindexed = unindexed_rows(&snapshot);
            if unindexed <= limit {
                break (start.elapsed(), Ok(()));
            }
            let mut stall = Duration::from_millis(settings.backpressure.stall_ms);
            if let Some(d) = deadline {
                stall = stall.min(d.saturating_duration_since(start));
            }
            let waited = start.elapsed();
            if waited >= stall {
                stalls.refused += 1;
                break (waited, Err(refusal(&snapshot, unindexed, limit, waited)));
            }
            // A commit wakes the wait; the slice bounds it should a wake-up be missed.
            let slice = (stall - waited).min(Duration::from_millis(100));
            stalls = self
                .freed
                .wait_timeout(stalls, slice)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        };
        stalls.waited += 1;
        stalls.wait_ms += waited.as_millis() as u64;
        result.map(|()| waited)
    }

    /// Wakes the writes waiting for room (after a commit: an index or a merge may have made
    /// some, or the settings changed).
    pub(crate) fn freed(&self) {
        drop(lock(&self.stalls));
        self.freed.notify_all();
    }

    /// The stall counters so far.
    pub(crate) fn stalls(&self) -> Stalls {
        *lock(&self.stalls)
    }
}

fn refusal(snapshot: &Snapshot, unindexed: usize, limit: usize, waited: Duration) -> Error {
    Error::ResourceExhausted(format!(
        "collection '{}' has {unindexed} rows not yet indexed, past its bound of {limit} \
         (max_unindexed_rows); the write waited {} ms (write_stall_ms, or the call's deadline) \
         for the background indexing to catch up and was refused, nothing written: retry \
         shortly",
        snapshot.layout.name,
        waited.as_millis()
    ))
}
