//! How handlers run: CPU work on blocking threads, never on the async workers, and a panic in
//! a handler or while its response streams reported as INTERNAL while the process lives on.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;

use futures::stream::StreamExt;
use futures::FutureExt;
use tonic::Status;

use crate::error::panic_status;

/// A response stream, as the Flight service answers with.
pub(crate) type Stream<T> =
    Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Starts blocking work (engine calls) off the async workers at once; the returned future
/// gives its result as a status (the work's error converted, e.g. an engine error raised
/// with `?` into `error::Error`), with a panic reported as INTERNAL rather than spreading.
pub(crate) fn blocking<T: Send + 'static, E: Into<Status> + Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> impl std::future::Future<Output = Result<T, Status>> {
    let handle = tokio::task::spawn_blocking(f);
    async move {
        match handle.await {
            Ok(r) => r.map_err(Into::into),
            Err(e) if e.is_panic() => Err(panic_status(what, e.into_panic())),
            Err(e) => Err(Status::internal(format!("{what}: {e}"))),
        }
    }
}

/// Awaits a handler, turning a panic into INTERNAL.
pub(crate) async fn caught<T>(
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .unwrap_or_else(|p| Err(panic_status(what, p)))
}

/// A response stream that reports a panic while it is polled as INTERNAL, then ends.
pub(crate) fn caught_stream<T: Send + 'static>(
    what: &'static str,
    s: impl futures::Stream<Item = Result<T, Status>> + Send + 'static,
) -> Stream<T> {
    Box::pin(
        AssertUnwindSafe(s)
            .catch_unwind()
            .scan(false, move |done, item| {
                let out = match (*done, item) {
                    (true, _) => None,
                    (false, Ok(v)) => Some(v),
                    (false, Err(p)) => {
                        *done = true;
                        Some(Err(panic_status(what, p)))
                    }
                };
                futures::future::ready(out)
            }),
    )
}
