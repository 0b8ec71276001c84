//! What the server reports about itself: request counts and latency histograms by call, and
//! per collection its rows, segments and the merges and index builds running, in the
//! Prometheus text format (`--metrics-addr`, GET /metrics); and a log line for every call over
//! the slow-query threshold (`--slow-query-ms`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use omendb::Database;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Response, Status};

use crate::runtime::Stream;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The SQL text of a query, attached to a response so the slow-query log can name it.
#[derive(Debug, Clone)]
pub(crate) struct QueryText(pub String);

#[derive(Default)]
struct Call {
    ok: u64,
    failed: u64,
    buckets: [u64; BOUNDS.len()],
    sum_seconds: f64,
}

/// Counters of one server.
#[derive(Default)]
pub(crate) struct Metrics {
    calls: Mutex<BTreeMap<&'static str, Call>>,
    slow: Option<Duration>,
}

impl Metrics {
    /// Metrics that log calls slower than `slow`.
    pub(crate) fn new(slow: Option<Duration>) -> Metrics {
        Metrics {
            calls: Mutex::default(),
            slow,
        }
    }

    /// Starts timing one `call`; it is recorded when the timer is dropped.
    pub(crate) fn start(self: &Arc<Self>, call: &'static str) -> Timer {
        Timer {
            metrics: self.clone(),
            call,
            start: Instant::now(),
            detail: None,
            failed: false,
        }
    }

    fn record(&self, call: &'static str, took: Duration, failed: bool, detail: Option<&str>) {
        {
            let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
            let c = calls.entry(call).or_default();
            if failed {
                c.failed += 1;
            } else {
                c.ok += 1;
            }
            let secs = took.as_secs_f64();
            c.sum_seconds += secs;
            if let Some(b) = BOUNDS.iter().position(|&b| secs <= b) {
                c.buckets[b] += 1;
            }
        }
        if self.slow.is_some_and(|limit| took >= limit) {
            let what: String = detail
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .chars()
                .take(500)
                .collect();
            eprintln!(
                "omendb: slow query: {call} took {:.1} ms{}: {what}",
                took.as_secs_f64() * 1e3,
                if failed { " (failed)" } else { "" }
            );
        }
    }

    /// Everything, in the Prometheus text format.
    pub(crate) fn render(&self, db: &Database) -> String {
        let mut out = String::new();
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str("# HELP omendb_requests_total Requests by call and outcome.\n");
        out.push_str("# TYPE omendb_requests_total counter\n");
        for (name, c) in calls.iter() {
            let _ = writeln!(
                out,
                "omendb_requests_total{{call=\"{name}\",outcome=\"ok\"}} {}",
                c.ok
            );
            let _ = writeln!(
                out,
                "omendb_requests_total{{call=\"{name}\",outcome=\"error\"}} {}",
                c.failed
            );
        }
        out.push_str("# HELP omendb_request_seconds Request latency by call, to the end of the response stream.\n");
        out.push_str("# TYPE omendb_request_seconds histogram\n");
        for (name, c) in calls.iter() {
            let mut cumulative = 0;
            for (bound, n) in BOUNDS.iter().zip(c.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "omendb_request_seconds_bucket{{call=\"{name}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = c.ok + c.failed;
            let _ = writeln!(
                out,
                "omendb_request_seconds_bucket{{call=\"{name}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "omendb_request_seconds_sum{{call=\"{name}\"}} {}",
                c.sum_seconds
            );
            let _ = writeln!(
                out,
                "omendb_request_seconds_count{{call=\"{name}\"}} {count}"
            );
        }
        drop(calls);
        let gauges = [
            ("omendb_collection_rows", "Live rows."),
            ("omendb_collection_segments", "Segments."),
            (
                "omendb_collection_deleted_rows",
                "Deleted rows not yet merged away.",
            ),
            ("omendb_collection_bytes", "Bytes on disk."),
            (
                "omendb_merges_running",
                "Segment merges (compactions) running.",
            ),
            ("omendb_index_builds_running", "Index builds running."),
        ];
        let mut rows: Vec<(String, [f64; 6])> = Vec::new();
        for name in db.list_collections().unwrap_or_default() {
            // A damaged collection has no figures; the others still report.
            if let Ok(s) = db.collection(&name).and_then(|c| c.stats()) {
                rows.push((
                    name,
                    [
                        s.rows as f64,
                        s.segments as f64,
                        s.deleted_rows as f64,
                        s.bytes_on_disk as f64,
                        s.merges_running as f64,
                        s.index_builds_running as f64,
                    ],
                ));
            }
        }
        for (i, (metric, help)) in gauges.iter().enumerate() {
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
            for (name, values) in &rows {
                let _ = writeln!(out, "{metric}{{collection=\"{name}\"}} {}", values[i]);
            }
        }
        out
    }
}

/// One call being timed.
pub(crate) struct Timer {
    metrics: Arc<Metrics>,
    call: &'static str,
    start: Instant,
    detail: Option<String>,
    failed: bool,
}

impl Timer {
    /// Marks the call failed.
    pub(crate) fn fail(&mut self) {
        self.failed = true;
    }

    /// What the slow-query log line names (the SQL text).
    pub(crate) fn detail(&mut self, text: String) {
        self.detail = Some(text);
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.metrics.record(
            self.call,
            self.start.elapsed(),
            self.failed,
            self.detail.as_deref(),
        );
    }
}

/// Serves GET /metrics on `listener` until the process ends. The metrics are computed on a
/// blocking thread (they open collections).
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    db: Arc<Database>,
) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let (metrics, db) = (metrics.clone(), db.clone());
        tokio::spawn(async move {
            let mut request = vec![0u8; 4096];
            let mut len = 0;
            // Read up to the end of the request head (a GET has no body).
            while len < request.len() {
                match tokio::time::timeout(Duration::from_secs(5), socket.read(&mut request[len..]))
                    .await
                {
                    Ok(Ok(n)) if n > 0 => len += n,
                    _ => break,
                }
                if request[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&request[..len]);
            let path = head.split_whitespace().nth(1).unwrap_or_default();
            let (status, body) = if head.starts_with("GET ") && (path == "/metrics" || path == "/")
            {
                let text = tokio::task::spawn_blocking(move || metrics.render(&db))
                    .await
                    .unwrap_or_default();
                ("200 OK", text)
            } else {
                ("404 Not Found", "GET /metrics\n".to_string())
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(reply.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}

/// Times a call that answers with a stream: recorded when the stream ends or is dropped, as
/// failed if the call or any item failed, naming the query text a handler attached.
pub(crate) fn timed<T: Send + 'static>(
    mut timer: Timer,
    answer: Result<Response<Stream<T>>, Status>,
) -> Result<Response<Stream<T>>, Status> {
    match answer {
        Err(e) => {
            timer.fail();
            if !e.message().is_empty() {
                timer.detail(e.message().to_string());
            }
            Err(e)
        }
        Ok(response) => {
            let (meta, stream, ext) = response.into_parts();
            if let Some(q) = ext.get::<QueryText>() {
                timer.detail(q.0.clone());
            }
            let stream = stream.inspect(move |item| {
                if item.is_err() {
                    timer.fail();
                }
            });
            Ok(Response::from_parts(meta, Box::pin(stream), ext))
        }
    }
}

/// Times a call with a single answer.
pub(crate) fn timed_unary<T>(
    mut timer: Timer,
    answer: Result<Response<T>, Status>,
) -> Result<Response<T>, Status> {
    if answer.is_err() {
        timer.fail();
    }
    answer
}
