//! The background worker of one collection: runs passes of work (merges and index builds)
//! on its own thread after commits, one pass at a time; work that arrives
//! while a pass runs makes the worker look again before it stops. It is cancellable: `stop`
//! makes the running pass give up soon and keeps new ones from starting (on close and drop).
//!
//! Searches come first: background threads run at a low scheduling priority, and their
//! parallel loops (graph builds, k-means, merges) run on a pool of their own, so a search's
//! parallel loop never queues behind a build's jobs on the global pool searches use.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use crate::error::lock;
use crate::task::{BuildProgress, Task};
use crate::Result;

/// What the worker reports.
#[derive(Debug, Default, Clone)]
pub(crate) struct Status {
    /// A pass is running or queued.
    pub running: bool,
    /// The error of the last failed pass.
    pub last_error: Option<String>,
    /// Damage found and contained since the collection opened.
    pub repairs: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    status: Status,
    /// More work arrived while a pass ran.
    pending: bool,
    handle: Option<JoinHandle<()>>,
    /// Segments whose index was damaged: rebuilt whatever the threshold.
    rebuild: HashSet<u64>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// The running pass's cancellation flag (set by `stop`) and build progress.
    task: Task,
}

/// Runs `work` (a merge or an index build with its commit: nothing that waits for other
/// background work, which could hold every pool thread) on the background pool: its parallel
/// loops use the background threads, not the global pool that searches use. Builds and
/// merges run for a caller (an admin's `build_index` or `compact`) go through here too.
pub(crate) fn run<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    pool().install(work)
}

/// The process's background pool: one thread a core, each at a low priority.
fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("omendb-background-{i}"))
            .start_handler(|_| lower_priority())
            .build()
            .unwrap_or_else(|e| panic!("cannot start the background pool: {e}"))
    })
}

/// Lowers the calling thread's scheduling priority to nice 10, so the OS runs searches and
/// commits first when they want the CPU: a thread at nice 10 gets about a tenth of the share
/// of one at 0. (Not 19, a twentieth of that again: writes wait for the indexing under
/// `max_unindexed_rows`, and other work on the machine must not starve it.)
/// `OMENDB_BACKGROUND_NICE` (0 to 19) overrides the level: lower gives the indexing more of a
/// busy machine (writes wait less under `max_unindexed_rows`), higher gives searches more.
fn lower_priority() {
    static NICE: OnceLock<i32> = OnceLock::new();
    let nice = *NICE.get_or_init(|| {
        std::env::var("OMENDB_BACKGROUND_NICE")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| (0..=19).contains(n))
            .unwrap_or(10)
    });
    // On Linux a priority set for a thread id applies to that thread alone. Best effort: a
    // sandbox that forbids it leaves the thread at normal priority.
    #[cfg(target_os = "linux")]
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice);
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// A collection's background worker.
#[derive(Debug, Default)]
pub(crate) struct Worker {
    shared: Arc<Shared>,
}

impl Worker {
    /// Runs `pass` on the worker thread (or, when a pass is running, has it run again after).
    /// `pass` gets the task to poll for cancellation and to count its progress on.
    pub(crate) fn kick(&self, pass: impl Fn(&Task) -> Result<()> + Send + 'static) {
        if self.stopped() {
            return;
        }
        let mut state = lock(&self.shared.state);
        if state.status.running {
            state.pending = true;
            return;
        }
        if let Some(old) = state.handle.take() {
            let _ = old.join(); // it has finished: `running` is false
        }
        state.status.running = true;
        state.pending = false;
        let shared = self.shared.clone();
        state.handle = Some(std::thread::spawn(move || loop {
            lower_priority();
            let result = pass(&shared.task);
            shared.task.end();
            let mut state = lock(&shared.state);
            state.status.last_error = result.err().map(|e| e.to_string());
            if state.pending && !shared.task.cancelled() {
                state.pending = false;
                continue;
            }
            state.status.running = false;
            break;
        }));
    }

    /// Whether a pass is running or queued.
    pub(crate) fn running(&self) -> bool {
        lock(&self.shared.state).status.running
    }

    /// Whether work arrived while the running pass runs (it is run again after).
    pub(crate) fn pending(&self) -> bool {
        lock(&self.shared.state).pending
    }

    /// Whether `stop` was called.
    pub(crate) fn stopped(&self) -> bool {
        self.shared.task.cancelled()
    }

    /// Waits until no pass is running or queued.
    pub(crate) fn wait(&self) {
        loop {
            let Some(handle) = lock(&self.shared.state).handle.take() else {
                return;
            };
            let _ = handle.join();
        }
    }

    /// Cancels the running pass, waits for it, and starts no other.
    pub(crate) fn stop(&self) {
        self.shared.task.cancel();
        self.wait();
    }

    /// How far the index build the running pass is doing has got, if it is building one.
    pub(crate) fn progress(&self) -> Option<BuildProgress> {
        self.shared.task.progress()
    }

    /// What the worker reports.
    pub(crate) fn status(&self) -> Status {
        lock(&self.shared.state).status.clone()
    }

    /// Records contained damage.
    pub(crate) fn repaired(&self, what: String) {
        lock(&self.shared.state).status.repairs.push(what);
    }

    /// Segments to re-index whatever their size.
    pub(crate) fn rebuilds(&self) -> HashSet<u64> {
        lock(&self.shared.state).rebuild.clone()
    }

    /// Marks segment `seg` for re-indexing (`true`) or done (`false`).
    pub(crate) fn set_rebuild(&self, seg: u64, needed: bool) {
        let mut state = lock(&self.shared.state);
        if needed {
            state.rebuild.insert(seg);
        } else {
            state.rebuild.remove(&seg);
        }
    }
}
