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

/// Marks a call the client keeps open as long as it likes (a stream of searches): its length
/// says nothing about the server, so the slow-query log leaves it out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenCall;

/// How long a put waited for room (`max_unindexed_rows`), attached to its response.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stalled(pub Duration);

/// Time per phase of a call: sum and count.
#[derive(Default)]
struct Phase {
    seconds: f64,
    count: u64,
}

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
    phases: Mutex<BTreeMap<(&'static str, &'static str), Phase>>,
    slow: Option<Duration>,
}

impl Metrics {
    /// Metrics that log calls slower than `slow`.
    pub(crate) fn new(slow: Option<Duration>) -> Metrics {
        Metrics {
            calls: Mutex::default(),
            phases: Mutex::default(),
            slow,
        }
    }

    /// Starts timing one `call`; it is recorded when the timer is dropped.
    pub(crate) fn start(self: &Arc<Self>, call: &'static str) -> Timer {
        let now = Instant::now();
        Timer {
            metrics: self.clone(),
            call,
            start: now,
            since: now,
            phases: Vec::new(),
            waits: None,
            detail: None,
            failed: false,
            open: false,
        }
    }

    fn record(&self, timer: &Timer) {
        let (call, took, failed) = (timer.call, timer.start.elapsed(), timer.failed);
        let detail = timer.detail.as_deref();
        {
            let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
            for (phase, d) in &timer.phases {
                let p = phases.entry((call, *phase)).or_default();
                p.seconds += d.as_secs_f64();
                p.count += 1;
            }
        }
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
        if !timer.open && self.slow.is_some_and(|limit| took >= limit) {
            let what: String = detail
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .chars()
                .take(500)
                .collect();
            let phases: Vec<String> = timer
                .phases
                .iter()
                .map(|(p, d)| format!("{p} {:.1} ms", d.as_secs_f64() * 1e3))
                .collect();
            eprintln!(
                "omendb: slow query: {call} took {:.1} ms{} ({}): {what}",
                took.as_secs_f64() * 1e3,
                if failed { " (failed)" } else { "" },
                phases.join(", ")
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
        out.push_str("# HELP omendb_phase_seconds Time calls spent in each phase: planning (to the response), searching (to the first batch), within it search_queued and search_engine (knn() searches waiting for a blocking thread, and running), streaming (the rest); for puts, stalled (waiting for the indexing, max_unindexed_rows) and writing.\n");
        out.push_str("# TYPE omendb_phase_seconds summary\n");
        for ((call, phase), p) in self.phases.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let labels = format!("call=\"{call}\",phase=\"{phase}\"");
            let _ = writeln!(out, "omendb_phase_seconds_sum{{{labels}}} {}", p.seconds);
            let _ = writeln!(out, "omendb_phase_seconds_count{{{labels}}} {}", p.count);
        }
        let knn = omendb_datafusion::knn_waits();
        for (metric, help, value) in [
            (
                "omendb_knn_searches_total",
                "knn() searches run on a blocking thread.",
                knn.searches as f64,
            ),
            (
                "omendb_knn_queued_seconds_total",
                "Time those searches waited for a blocking thread.",
                knn.queued.as_secs_f64(),
            ),
            (
                "omendb_knn_search_seconds_total",
                "Time those searches ran.",
                knn.searching.as_secs_f64(),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {metric} {help}\n# TYPE {metric} counter\n{metric} {value}"
            );
        }
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
            (
                "omendb_unindexed_rows",
                "Rows not yet indexed (searched exactly); writes wait past max_unindexed_rows.",
            ),
            (
                "omendb_writes_stalled_total",
                "Writes that waited for the indexing.",
            ),
            (
                "omendb_writes_refused_total",
                "Writes refused after write_stall_ms.",
            ),
            (
                "omendb_write_stall_seconds_total",
                "Time writes waited for the indexing.",
            ),
        ];
        let mut rows: Vec<(String, [f64; 10])> = Vec::new();
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
                        s.unindexed_rows as f64,
                        s.writes_stalled as f64,
                        s.writes_refused as f64,
                        s.write_stall_ms as f64 / 1e3,
                    ],
                ));
            }
        }
        for (i, (metric, help)) in gauges.iter().enumerate() {
            let kind = if metric.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} {kind}");
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
    /// When the phase running now began.
    since: Instant,
    phases: Vec<(&'static str, Duration)>,
    /// The knn() searches of a query's stream, when it has one.
    waits: Option<Arc<omendb_datafusion::QueryWaits>>,
    detail: Option<String>,
    failed: bool,
    /// Held open by the client (`OpenCall`): never a slow query.
    open: bool,
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

    /// Ends the phase running now, as `phase`.
    fn phase(&mut self, phase: &'static str) {
        let now = Instant::now();
        self.phases.push((phase, now - self.since));
        self.since = now;
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if !self.phases.is_empty() {
            self.phase("streaming");
        }
        // Parts of `searching`: the knn() searches' wait for a blocking thread, and their run.
        if let Some(w) = self
            .waits
            .take()
            .map(|w| w.get())
            .filter(|w| w.searches > 0)
        {
            self.phases.push(("search_queued", w.queued));
            self.phases.push(("search_engine", w.searching));
        }
        self.metrics.record(self);
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
/// failed if the call or any item failed, naming the query text a handler attached. Its
/// phases: to the response (`planning` a query; `stalled` and `writing` a put; `handling`
/// other calls), to the first item (`searching`), and the rest (`streaming`); `waits` gathers
/// the knn() searches of its plans.
pub(crate) fn timed<T: Send + 'static>(
    mut timer: Timer,
    answer: Result<Response<Stream<T>>, Status>,
    waits: Arc<omendb_datafusion::QueryWaits>,
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
            timer.open = ext.get::<OpenCall>().is_some();
            match (timer.call, ext.get::<Stalled>()) {
                ("do_get", _) => timer.phase("planning"),
                (_, Some(Stalled(d))) => {
                    timer.phases.push(("stalled", *d));
                    let writing = timer.since.elapsed().saturating_sub(*d);
                    timer.phases.push(("writing", writing));
                    timer.since = Instant::now();
                }
                _ => timer.phase("handling"),
            }
            let mut first = timer.call == "do_get";
            timer.waits = Some(waits.clone());
            let mut stream = stream.inspect(move |item| {
                if item.is_err() {
                    timer.fail();
                }
                if std::mem::take(&mut first) {
                    timer.phase("searching");
                }
            });
            // Each poll runs with the query's waits in scope, so its searches add theirs.
            let stream =
                futures::stream::poll_fn(move |cx| waits.poll_in(|| stream.poll_next_unpin(cx)));
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
