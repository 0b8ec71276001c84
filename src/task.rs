//! A long background computation's cancellation flag and progress. Index builds and merges
//! poll it to give up soon after it is cancelled, and count the rows they have placed, so
//! `stats` can say truthfully how far a build is and when it should end.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use crate::error::lock;

/// A cancellable computation and the rows it has done.
#[derive(Debug, Default)]
pub struct Task {
    stop: AtomicBool,
    done: AtomicUsize,
    /// What is being built and when it started; `None` while nothing is counted.
    running: Mutex<Option<(&'static str, usize, Instant)>>,
}

/// How far a running index build is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildProgress {
    /// The index being built: `hnsw` or `ivf`.
    pub index: &'static str,
    /// Rows placed in the index so far (a graph extended by a merge starts at the rows it
    /// carries over; IVF counts rows once its centroids are trained).
    pub rows_done: usize,
    /// Rows the index will hold.
    pub rows_total: usize,
    /// Seconds since the build started.
    pub elapsed_s: f64,
    /// Seconds left at the rate so far (`None` until a row is done).
    pub eta_s: Option<f64>,
}

impl Task {
    /// A task that is not cancelled.
    pub fn new() -> Task {
        Task::default()
    }

    /// Whether the computation should give up.
    pub fn cancelled(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Asks the computation to give up.
    pub fn cancel(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Starts counting a build of `index` over `rows` rows.
    pub(crate) fn begin(&self, index: &'static str, rows: usize) {
        self.done.store(0, Ordering::Relaxed);
        *lock(&self.running) = Some((index, rows, Instant::now()));
    }

    /// `rows` more rows are done.
    pub(crate) fn advance(&self, rows: usize) {
        self.done.fetch_add(rows, Ordering::Relaxed);
    }

    /// The build has ended (built, cancelled or failed).
    pub(crate) fn end(&self) {
        *lock(&self.running) = None;
    }

    /// How far the running build is, if one is.
    pub fn progress(&self) -> Option<BuildProgress> {
        let (index, total, started) = (*lock(&self.running))?;
        let done = self.done.load(Ordering::Relaxed).min(total);
        let elapsed = started.elapsed().as_secs_f64();
        let eta = (done > 0).then(|| elapsed * (total - done) as f64 / done as f64);
        Some(BuildProgress {
            index,
            rows_done: done,
            rows_total: total,
            elapsed_s: (elapsed * 10.0).round() / 10.0,
            eta_s: eta.map(|e| (e * 10.0).round() / 10.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_rows_and_ends() {
        let task = Task::new();
        assert_eq!(task.progress(), None);
        task.begin("hnsw", 100);
        task.advance(25);
        let p = task.progress().unwrap();
        assert_eq!((p.index, p.rows_done, p.rows_total), ("hnsw", 25, 100));
        assert!(p.eta_s.is_some());
        task.end();
        assert_eq!(task.progress(), None);
        assert!(!task.cancelled());
        task.cancel();
        assert!(task.cancelled());
    }
}
