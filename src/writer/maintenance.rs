//! A collection's background maintenance (Qdrant's `update_handler`, tantivy's
//! `segment_updater`): after each commit it decides what to merge and what to index, runs it
//! on the collection's two workers (the merger for merges of small unindexed segments, the
//! worker for index builds and merges into graphs), claims the segments each merge reads,
//! and waits for a quiet moment before merging fresh rows into a graph. Which segments merge
//! is `policy`'s decision; how a merge or a build is made and committed is the collection's
//! ([`Maintained`]), so the scheduling can be exercised on its own.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::background::{self, Status, Worker};
use super::claim::{Claim, Running};
use super::policy::{self, Moment, SegInfo};
use crate::error::lock;
use crate::options::{IndexKind, IndexSettings};
use crate::segment::Segment;
use crate::snapshot::{SegmentView, Snapshot};
use crate::task::{BuildProgress, Task};
use crate::Result;

/// What maintenance needs of the collection it looks after.
pub(crate) trait Maintained: Send + Sync + Sized + 'static {
    /// The collection's maintenance state.
    fn maintenance(&self) -> &Maintenance<Self>;
    /// The current snapshot.
    fn snapshot(&self) -> Arc<Snapshot>;
    /// The settings as last committed.
    fn settings(&self) -> IndexSettings;
    /// Merges `inputs` into new segments with the index `settings` ask for and commits them
    /// in their place; `false` when cancelled or when an input went away meanwhile.
    fn merge(
        &self,
        inputs: Vec<SegmentView>,
        settings: &IndexSettings,
        cancel: &Task,
    ) -> Result<bool>;
    /// Builds `seg`'s index and commits it; `None` when cancelled, `Some(false)` when the
    /// segment went away or got an index meanwhile.
    fn index(&self, seg: &Segment, settings: &IndexSettings, cancel: &Task)
        -> Result<Option<bool>>;
}

/// The background state of one collection.
#[derive(Debug)]
pub(crate) struct Maintenance<C> {
    /// The collection, for the workers to hold while they work.
    me: Weak<C>,
    /// Index builds, damaged-index rebuilds and merges into graphs.
    worker: Worker,
    /// Merges of small unindexed segments, beside the worker, so small writes do not pile up
    /// while a graph is built.
    merger: Worker,
    /// Segments a running merge or build is reading: no other takes them.
    claimed: Mutex<HashSet<u64>>,
    /// When rows were last written (merges of fresh rows wait for a quiet moment).
    last_write: Mutex<Instant>,
    merges_running: AtomicUsize,
    builds_running: AtomicUsize,
}

/// What maintenance reports in a collection's stats.
pub(crate) struct Report {
    pub worker: Status,
    pub merges_running: usize,
    pub builds_running: usize,
    pub index_build: Option<BuildProgress>,
}

impl<C: Maintained> Maintenance<C> {
    /// The maintenance of the collection `me` will point to.
    pub(crate) fn new(me: Weak<C>) -> Self {
        Maintenance {
            me,
            worker: Worker::default(),
            merger: Worker::default(),
            claimed: Mutex::new(HashSet::new()),
            last_write: Mutex::new(Instant::now()),
            merges_running: AtomicUsize::new(0),
            builds_running: AtomicUsize::new(0),
        }
    }

    /// Notes a write and schedules what it calls for.
    pub(crate) fn written(&self) {
        *lock(&self.last_write) = Instant::now();
        self.schedule();
    }

    /// Has the merger merge what the policy asks for, and the worker index the segments that
    /// reached the threshold and have none yet.
    pub(crate) fn schedule(&self) {
        if self.worker.stopped() {
            return;
        }
        let Some(c) = self.me.upgrade() else { return };
        let settings = c.settings();
        let infos = self.seg_infos(&c);
        if settings.compaction.enabled && policy::choose_small(&infos, &settings).is_some() {
            let me = c.clone();
            self.merger
                .kick(move |cancel| me.maintenance().merge_small(&me, cancel));
        }
        let merges = settings.compaction.enabled
            && policy::choose(&infos, &settings, Moment::Idle).is_some();
        if !merges && self.unindexed(&c, auto_threshold(&settings)).is_empty() {
            return;
        }
        self.worker
            .kick(move |cancel| c.maintenance().maintain(&c, cancel));
    }

    /// Queues `seg_id` for an index rebuild whatever the threshold (its index was damaged:
    /// `note` says how) and schedules it.
    pub(crate) fn rebuild(&self, seg_id: u64, note: String) {
        self.worker.set_rebuild(seg_id, true);
        self.worker.repaired(note);
    }

    /// One pass of the merger: small merges (no graph built) while the policy asks for them;
    /// then the worker looks at what they made.
    fn merge_small(&self, c: &Arc<C>, cancel: &Task) -> Result<()> {
        let mut merged = false;
        while !cancel.cancelled() {
            let settings = c.settings();
            if !settings.compaction.enabled {
                break;
            }
            let Some(plan) = policy::choose_small(&self.seg_infos(c), &settings) else {
                break;
            };
            let flat = IndexSettings {
                kind: IndexKind::Flat,
                ..settings
            };
            if !self.run_merge(c, &plan.segments, &flat, cancel)? {
                break;
            }
            merged = true;
        }
        if merged {
            let me = c.clone();
            self.worker
                .kick(move |cancel| me.maintenance().maintain(&me, cancel));
        }
        Ok(())
    }

    /// One pass of the worker: merges (those due after a commit, then, once the collection
    /// has been quiet for `compaction_idle_ms`, the fresh rows into the largest graph) and
    /// index builds, until none is left or `cancel` is set.
    fn maintain(&self, c: &C, cancel: &Task) -> Result<()> {
        while !cancel.cancelled() {
            let settings = c.settings();
            if settings.compaction.enabled {
                if let Some(plan) = policy::choose(&self.seg_infos(c), &settings, Moment::Commit) {
                    if self.run_merge(c, &plan.segments, &settings, cancel)? {
                        continue;
                    }
                    return Ok(());
                }
            }
            self.build_indexes(c, auto_threshold(&settings), cancel)?;
            if !settings.compaction.enabled
                || policy::choose(&self.seg_infos(c), &settings, Moment::Idle).is_none()
            {
                return Ok(());
            }
            let quiet = Duration::from_millis(settings.compaction.idle_ms);
            loop {
                let since = lock(&self.last_write).elapsed();
                if since >= quiet {
                    break;
                }
                if cancel.cancelled() || self.worker.pending() {
                    return Ok(()); // a write came: the worker runs the pass again
                }
                std::thread::sleep((quiet - since).min(Duration::from_millis(20)));
            }
            match policy::choose(&self.seg_infos(c), &settings, Moment::Idle) {
                Some(plan) if self.run_merge(c, &plan.segments, &settings, cancel)? => continue,
                _ => return Ok(()),
            }
        }
        Ok(())
    }

    /// Merges every segment that fits into as few segments as `max_segment_rows` allows;
    /// returns how many merges ran (see `Collection::compact`).
    pub(crate) fn compact(&self, c: &C) -> Result<usize> {
        let cancel = Task::new();
        let mut merges = 0;
        loop {
            let settings = c.settings();
            let Some(plan) = policy::choose(&self.seg_infos(c), &settings, Moment::Full) else {
                return Ok(merges);
            };
            // A background merge reading some of them: wait until it ends and releases them
            // (its result is planned with the rest), rather than report nothing merged.
            if self.wait_released(plan.segments.clone()) {
                continue;
            }
            if !self.run_merge(c, &plan.segments, &settings, &cancel)? {
                return Ok(merges);
            }
            merges += 1;
        }
    }

    /// Merges the segments `ids` with the index `settings` ask for; `false` when cancelled,
    /// or when an input went away or another merge has it.
    fn run_merge(
        &self,
        c: &C,
        ids: &[u64],
        settings: &IndexSettings,
        cancel: &Task,
    ) -> Result<bool> {
        let Some(_claim) = Claim::take(&self.claimed, ids) else {
            return Ok(false);
        };
        let _running = Running::count(&self.merges_running);
        let snapshot = c.snapshot();
        let inputs: Option<Vec<SegmentView>> = ids
            .iter()
            .map(|id| snapshot.parts.iter().find(|p| p.seg.id == *id).cloned())
            .collect();
        let Some(inputs) = inputs else {
            return Ok(false);
        };
        drop(snapshot);
        background::run(|| c.merge(inputs, settings, cancel))
    }

    /// Waits until no merge or build holds any of the segments `ids` (each ends committed,
    /// cancelled or failed, and releases them); whether it had to wait.
    fn wait_released(&self, mut ids: Vec<u64>) -> bool {
        let mut waited = false;
        loop {
            ids.retain(|id| lock(&self.claimed).contains(id));
            if ids.is_empty() {
                return waited;
            }
            waited = true;
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Indexes every unindexed segment of at least `min_rows` rows now, waiting for the
    /// merges that read them (see `Collection::build_index`).
    pub(crate) fn build_now(&self, c: &C, min_rows: usize) -> Result<usize> {
        const BUILD_PASSES: usize = 16;
        let cancel = Task::new();
        let mut built = 0;
        for _ in 0..BUILD_PASSES {
            built += self.build_indexes(c, min_rows, &cancel)?;
            let left: Vec<u64> = self.unindexed(c, min_rows).iter().map(|s| s.id).collect();
            if left.is_empty() {
                break;
            }
            // Those a merge is reading: the next pass indexes what it made, or them.
            self.wait_released(left);
        }
        Ok(built)
    }

    /// Builds the index of every unindexed segment of at least `min_rows` rows (and of those
    /// queued for a rebuild); returns how many were built.
    fn build_indexes(&self, c: &C, min_rows: usize, cancel: &Task) -> Result<usize> {
        let mut settings = c.settings();
        if settings.kind == IndexKind::Flat {
            // Damaged indexes of a collection made flat since are rebuilt as graphs.
            settings.kind = IndexKind::Hnsw;
        }
        let mut built = 0;
        for seg in self.unindexed(c, min_rows) {
            // A segment a merge is reading gets its index from the merge.
            let Some(_claim) = Claim::take(&self.claimed, &[seg.id]) else {
                continue;
            };
            let _running = Running::count(&self.builds_running);
            match background::run(|| c.index(&seg, &settings, cancel))? {
                None => return Ok(built), // cancelled
                Some(true) => {
                    self.worker.set_rebuild(seg.id, false);
                    built += 1;
                }
                Some(false) => {}
            }
        }
        Ok(built)
    }

    /// The segments that still need an index under `min_rows`.
    fn unindexed(&self, c: &C, min_rows: usize) -> Vec<Arc<Segment>> {
        let rebuild = self.worker.rebuilds();
        c.snapshot()
            .parts
            .iter()
            .filter(|p| {
                p.index.is_none()
                    && (p.seg.rows() >= min_rows.max(1) || rebuild.contains(&p.seg.id))
            })
            .map(|p| p.seg.clone())
            .collect()
    }

    /// The live segments as the merge policy sees them (those a merge is reading left out).
    fn seg_infos(&self, c: &C) -> Vec<SegInfo> {
        let claimed = lock(&self.claimed).clone();
        c.snapshot()
            .parts
            .iter()
            .filter(|p| !claimed.contains(&p.seg.id))
            .map(|p| SegInfo {
                id: p.seg.id,
                rows: p.seg.rows(),
                live: p.live_rows(),
                indexed: p.index.is_some(),
            })
            .collect()
    }

    /// Waits until the workers have nothing left to do (at once when idle).
    pub(crate) fn wait(&self) {
        loop {
            self.merger.wait();
            self.worker.wait();
            if !self.merger.running() && !self.worker.running() {
                return;
            }
        }
    }

    /// Stops both workers (an unfinished index is discarded) and starts no other pass.
    pub(crate) fn stop(&self) {
        self.merger.stop();
        self.worker.stop();
    }

    /// What maintenance is doing now, for stats.
    pub(crate) fn report(&self) -> Report {
        Report {
            worker: self.worker.status(),
            merges_running: self.merges_running.load(Ordering::Relaxed),
            builds_running: self.builds_running.load(Ordering::Relaxed),
            index_build: self.worker.progress(),
        }
    }
}

/// The row threshold of automatic index builds (`usize::MAX`: off, though damaged indexes
/// are still rebuilt).
fn auto_threshold(settings: &IndexSettings) -> usize {
    match (settings.kind, settings.threshold) {
        (IndexKind::Flat, _) | (_, 0) => usize::MAX,
        (_, t) => t,
    }
}
