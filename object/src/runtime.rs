//! The runtime the async object store client runs on, and the one way the synchronous engine
//! waits for it.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Runtime;

/// The process's object-store runtime: two threads that only wait on the network.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("omendb-object")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the object store runtime: {e}"))
    })
}

/// Runs `work` on the object-store runtime and waits for it. Callable from any thread,
/// a tokio worker's included (it spawns rather than nesting a runtime).
pub(crate) fn wait<F>(work: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = runtime().spawn(work);
    match futures::executor::block_on(task) {
        Ok(out) => out,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
