//! The OmenDB Arrow Flight server.
//!
//! - `do_put` with a path descriptor `["docs"]` appends the streamed batches to collection
//!   `docs` as one segment, creating the collection on first write. Extra path elements set
//!   options for a new collection: `metric=cosine|l2|dot`, `id=COLUMN`, `vector=COLUMN`, and
//!   the index settings `m=16`, `ef_construction=200`, `ef_search=64`, `index_threshold=10000`
//!   (rows at which a segment is indexed automatically; 0 turns that off).
//! - `do_get` with a ticket holding SQL text streams the result.
//! - `list_flights` / `get_flight_info` / `get_schema` describe collections (path
//!   descriptors) or SQL queries (command descriptors).
//! - `do_action`: `drop_collection`, `build_index`, `compact`, `alter`, `verify`, `backup`
//!   (admin), `stats` (body: a collection's name; JSON result; see [`maintenance`]).
//!
//! The server holds itself to its [`ServerConfig`]: tokens and roles ([`auth`]), one SQL
//! session per client and the files SQL may touch ([`session`]), and limits on k, puts,
//! messages, results, query time and query memory, each refused with an error naming it.
//! CPU work (searches, ingest, opening collections) runs on blocking threads, never on the
//! async workers; a panic in a handler is reported as INTERNAL and the process lives on.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SessionContext};
use futures::stream::{self, StreamExt, TryStreamExt};
use futures::FutureExt;
use omendb::{CollectionOptions, Database, WriteMode};
use tokio::sync::Semaphore;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};

pub mod auth;
pub mod config;
pub mod error;
pub mod maintenance;
pub mod metrics;
pub mod session;
mod shared;
mod sql;
mod wire;

use auth::{require, Role};
pub use config::ServerConfig;
pub use error::{df_status, engine_status};
use error::{flight_status, panic_status};
use session::{FilePolicy, Sessions, SESSION_HEADER};

/// The Flight service over one database.
#[derive(Clone)]
pub struct OmenFlight {
    db: Arc<Database>,
    config: Arc<ServerConfig>,
    sessions: Arc<Sessions>,
    files: Arc<FilePolicy>,
    puts: Arc<Semaphore>,
    /// Signs Flight SQL statement handles.
    signer: Arc<sql::Signer>,
    metrics: Arc<metrics::Metrics>,
}

impl std::fmt::Debug for OmenFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OmenFlight")
            .field("db", &self.db.path())
            .finish()
    }
}

/// Starts blocking work (engine calls) off the async workers at once; the returned future
/// gives its result, with a panic reported as INTERNAL rather than spreading.
fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> impl std::future::Future<Output = Result<T, Status>> {
    let handle = tokio::task::spawn_blocking(f);
    async move {
        match handle.await {
            Ok(r) => r,
            Err(e) if e.is_panic() => Err(panic_status(what, e.into_panic())),
            Err(e) => Err(Status::internal(format!("{what}: {e}"))),
        }
    }
}

/// Awaits a handler, turning a panic into INTERNAL.
async fn caught<T>(
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .unwrap_or_else(|p| Err(panic_status(what, p)))
}

/// A response stream that reports a panic while it is polled as INTERNAL, then ends.
fn caught_stream<T: Send + 'static>(
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

/// Times a call that answers with a stream: recorded when the stream ends or is dropped, as
/// failed if the call or any item failed, naming the query text a handler attached.
fn timed<T: Send + 'static>(
    mut timer: metrics::Timer,
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
            if let Some(q) = ext.get::<metrics::QueryText>() {
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
fn timed_unary<T>(
    mut timer: metrics::Timer,
    answer: Result<Response<T>, Status>,
) -> Result<Response<T>, Status> {
    if answer.is_err() {
        timer.fail();
    }
    answer
}

impl OmenFlight {
    /// A service with the default configuration (no tokens, no file access from SQL).
    pub fn new(db: Arc<Database>) -> Result<Self, DataFusionError> {
        Self::with_config(db, ServerConfig::default())
    }

    pub fn with_config(db: Arc<Database>, config: ServerConfig) -> Result<Self, DataFusionError> {
        let runtime: Arc<RuntimeEnv> = RuntimeEnvBuilder::new()
            .with_memory_limit(config.query_memory_bytes, 1.0)
            // Queries that need more memory fail naming the limit; nothing spills to disk.
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()?;
        let limits = omendb_udfs::KnnLimits {
            max_k: config.max_k,
            max_ef: config.max_ef,
        };
        let files = FilePolicy::new(&config.external_dirs, db.path())
            .map_err(|e| DataFusionError::Configuration(e.to_string()))?;
        let guard: omendb_udfs::FileGuard = {
            let policy = files.clone();
            Arc::new(move |path: &str| {
                policy
                    .check("the file", path)
                    .map_err(|s| s.message().to_string())
            })
        };
        // The catalog's shared tables, declared again on a runtime of their own (this may be
        // called from async code, which must not block on a future).
        let shared = std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(shared::SharedTables::load(db.clone(), || {
                    omendb_udfs::session_in(db.clone(), runtime.clone(), limits, guard.clone())
                }))
            })
            .join()
            .unwrap_or_else(|_| Err("loading the shared tables panicked".into()))
        })
        .map_err(DataFusionError::Configuration)?;
        Ok(OmenFlight {
            sessions: Arc::new(Sessions::new(
                db.clone(),
                runtime,
                limits,
                config.session_idle,
                Arc::new(shared),
                guard,
            )),
            db,
            files: Arc::new(files),
            puts: Arc::new(Semaphore::new(config.max_concurrent_puts)),
            signer: Arc::new(sql::Signer::new().map_err(DataFusionError::Configuration)?),
            metrics: Arc::new(metrics::Metrics::new(config.slow_query)),
            config: Arc::new(config),
        })
    }

    /// The gRPC service, with the configured message limits.
    pub fn into_server(self) -> FlightServiceServer<OmenFlight> {
        let max = self.config.max_message_bytes;
        FlightServiceServer::new(self)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }

    /// The caller's role: checked against the token file when there is one, `admin` otherwise.
    fn role(&self, metadata: &MetadataMap, need: Role, what: &str) -> Result<Role, Status> {
        let role = match &self.config.tokens {
            None => Role::Admin,
            Some(tokens) => tokens.caller(metadata)?,
        };
        require(role, need, what)?;
        Ok(role)
    }

    /// The caller's SQL session.
    fn session<T>(&self, request: &Request<T>) -> Result<Arc<session::Session>, Status> {
        self.session_of(request.metadata(), request.remote_addr())
    }

    /// The SQL session of the caller whose request has `metadata` and came from `peer`.
    fn session_of(
        &self,
        metadata: &MetadataMap,
        peer: Option<SocketAddr>,
    ) -> Result<Arc<session::Session>, Status> {
        let asked = metadata.get(SESSION_HEADER).and_then(|v| v.to_str().ok());
        self.sessions.get(asked, peer)
    }

    /// Plans `sql` in `ctx`, checks it against the caller's role and the file policy, and only
    /// then runs it (DDL takes effect here).
    async fn plan(&self, ctx: &SessionContext, sql: &str, role: Role) -> Result<DataFrame, Status> {
        let timeout = self.config.query_timeout;
        let planned = async {
            let plan = omendb_udfs::sql::logical_plan(&ctx.state(), sql)
                .await
                .map_err(df_status)?;
            self.files.check_plan(&plan, role)?;
            let ddl = matches!(plan, LogicalPlan::Ddl(_)).then(|| plan.clone());
            let df = ctx.execute_logical_plan(plan).await.map_err(df_status)?;
            if let Some(ddl) = ddl {
                self.sessions.ran(&ddl, sql, ctx).await?;
            }
            Ok(df)
        };
        tokio::time::timeout(timeout, planned)
            .await
            .unwrap_or_else(|_| Err(timed_out(timeout)))
    }

    async fn open(&self, name: &str) -> Result<Arc<omendb::Collection>, Status> {
        let (db, name) = (self.db.clone(), name.to_string());
        blocking("opening a collection", move || {
            db.collection(&name).map_err(|e| engine_status(&e))
        })
        .await
    }

    async fn collection_info(&self, name: &str) -> Result<FlightInfo, Status> {
        let c = self.open(name).await?;
        let snap = c.snapshot();
        let ticket = Ticket::new(format!("SELECT * FROM \"{name}\""));
        FlightInfo::new()
            .try_with_schema(&snap.schema())
            .map_err(|e| Status::internal(e.to_string()))
            .map(|info| {
                info.with_descriptor(FlightDescriptor::new_path(vec![name.to_string()]))
                    .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
                    .with_total_records(snap.count() as i64)
            })
    }

    async fn describe<T>(
        &self,
        request: &Request<T>,
        descriptor: &FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        match descriptor.r#type() {
            DescriptorType::Path => {
                self.role(request.metadata(), Role::Read, "describing a collection")?;
                let name = descriptor
                    .path
                    .first()
                    .ok_or_else(|| Status::invalid_argument("empty path descriptor"))?;
                self.collection_info(name).await
            }
            DescriptorType::Cmd => {
                if let Some(command) = sql::command(&descriptor.cmd) {
                    return self.sql_flight_info(request, descriptor, command?).await;
                }
                let role = self.role(request.metadata(), Role::Read, "a query")?;
                let sql = std::str::from_utf8(&descriptor.cmd).map_err(|_| {
                    Status::invalid_argument("command descriptor must be UTF-8 SQL")
                })?;
                let session = self.session(request)?;
                let df = self.plan(&session.ctx, sql, role).await?;
                let schema: Schema = df.schema().as_arrow().clone();
                FlightInfo::new()
                    .try_with_schema(&schema)
                    .map_err(|e| Status::internal(e.to_string()))
                    .map(|info| {
                        info.with_descriptor(FlightDescriptor::new_cmd(sql.to_string()))
                            .with_endpoint(
                                FlightEndpoint::new().with_ticket(Ticket::new(sql.to_string())),
                            )
                    })
            }
            DescriptorType::Unknown => Err(Status::invalid_argument("unknown descriptor type")),
        }
    }
}

fn timed_out(limit: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "the query ran past the server's time limit of {} s (--query-timeout)",
        limit.as_secs_f64()
    ))
}

/// The collection name, creation options and write mode a put descriptor names: `mode=append`
/// (the default) creates the collection on its first rows and refuses stored ids,
/// `mode=upsert` replaces the stored rows.
fn put_target(
    descriptor: &FlightDescriptor,
) -> Result<(String, CollectionOptions, WriteMode), Status> {
    if descriptor.r#type() != DescriptorType::Path {
        return Err(Status::invalid_argument(
            "do_put needs a path descriptor naming the collection, e.g. [\"docs\"]",
        ));
    }
    let mut parts = descriptor.path.iter();
    let name = parts
        .next()
        .ok_or_else(|| Status::invalid_argument("empty path descriptor: name the collection"))?
        .clone();
    let mut mode = WriteMode::CreateOrAppend;
    let mut options = Vec::new();
    for part in parts {
        match part.split_once('=') {
            Some(("mode", "append")) => mode = WriteMode::CreateOrAppend,
            Some(("mode", "upsert")) => mode = WriteMode::Upsert,
            Some(("mode", other)) => {
                return Err(Status::invalid_argument(format!(
                    "bad descriptor option: mode must be append or upsert, got '{other}'"
                )))
            }
            _ => options.push(part.as_str()),
        }
    }
    let opts = CollectionOptions::parse(options).map_err(|e| {
        Status::invalid_argument(format!(
            "bad descriptor option: {}",
            engine_status(&e).message()
        ))
    })?;
    Ok((name, opts, mode))
}

type Stream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The end of a put stream, as the ingest worker hears of it.
enum PutMsg {
    Batch(RecordBatch),
    /// The stream ended cleanly: commit.
    End,
}

impl OmenFlight {
    async fn handshake_inner(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Stream<HandshakeResponse>>, Status> {
        let Some(tokens) = &self.config.tokens else {
            return Err(Status::unimplemented(
                "this server runs without authentication (no --token-file); no handshake is needed",
            ));
        };
        let token = tokens.handshake(request.metadata())?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let mut response: Response<Stream<HandshakeResponse>> =
            Response::new(Box::pin(stream::iter([Ok(reply)])));
        let value = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Status::internal("token is not a valid header value"))?;
        response.metadata_mut().insert("authorization", value);
        Ok(response)
    }

    async fn list_flights_inner(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Stream<FlightInfo>>, Status> {
        self.role(request.metadata(), Role::Read, "listing collections")?;
        let db = self.db.clone();
        let names = blocking("listing collections", move || {
            db.list_collections().map_err(|e| engine_status(&e))
        })
        .await?;
        let mut infos = Vec::with_capacity(names.len());
        for name in names {
            // A damaged collection is listed, saying what is wrong, and does not hide the
            // others.
            let info = match self.collection_info(&name).await {
                Ok(info) => info,
                Err(e) => FlightInfo::new()
                    .try_with_schema(&Schema::empty())
                    .map_err(|e| Status::internal(e.to_string()))?
                    .with_descriptor(FlightDescriptor::new_path(vec![name.clone()]))
                    .with_app_metadata(
                        serde_json::json!({ "damaged": e.message(), "code": format!("{:?}", e.code()) })
                            .to_string(),
                    ),
            };
            infos.push(Ok(info));
        }
        Ok(Response::new(Box::pin(stream::iter(infos))))
    }

    async fn do_get_inner(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Stream<FlightData>>, Status> {
        if let Some(command) = sql::command(&request.get_ref().ticket) {
            return self.sql_do_get(request, command?).await;
        }
        let role = self.role(request.metadata(), Role::Read, "a query")?;
        let sql = std::str::from_utf8(&request.get_ref().ticket)
            .map_err(|_| Status::invalid_argument("ticket must be UTF-8 SQL text"))?
            .to_string();
        let session = self.session(&request)?;
        let df = self.plan(&session.ctx, &sql, role).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.execute_stream().await.map_err(df_status)?;
        let limited = limit_results(
            batches.map_err(df_status),
            self.config.max_result_rows,
            self.config.query_timeout,
        );
        let mut response = Response::new(encode(schema, limited, "a query"));
        response.extensions_mut().insert(metrics::QueryText(sql));
        if let Ok(v) = MetadataValue::try_from(&session.id) {
            response.metadata_mut().insert(SESSION_HEADER, v);
        }
        Ok(response)
    }

    async fn do_put_inner(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Stream<PutResult>>, Status> {
        // Binding parameters is a put too: a read token may do it; what a put writes is
        // checked below.
        let role = self.role(request.metadata(), Role::Read, "a put")?;
        let peer = request.remote_addr();
        let metadata = request.metadata().clone();
        let mut input = request.into_inner();
        let first = input
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty do_put stream"))?;
        let descriptor = first.flight_descriptor.clone().ok_or_else(|| {
            Status::invalid_argument("the first message of do_put must carry a flight descriptor")
        })?;
        if descriptor.r#type() == DescriptorType::Cmd {
            if let Some(command) = sql::command(&descriptor.cmd) {
                let session = self.session_of(&metadata, peer)?;
                let result = self.sql_put(&session, role, command?, first, input).await?;
                return Ok(Response::new(Box::pin(stream::iter([Ok(result)]))));
            }
        }
        require(role, Role::Write, "a put")?;
        let (name, opts, mode) = put_target(&descriptor)?;
        let (name, rows) = self.ingest_stream(first, input, name, mode, opts).await?;
        let mode = match mode {
            WriteMode::Upsert => "upsert",
            _ => "append",
        };
        let meta =
            serde_json::json!({ "collection": name, "rows": rows, "mode": mode }).to_string();
        let result = PutResult {
            app_metadata: meta.into(),
        };
        Ok(Response::new(Box::pin(stream::iter([Ok(result)]))))
    }

    /// Streams the batches of a put (`first`, then `input`) into the ingest `open` starts, and
    /// commits them when the stream has ended cleanly; returns the collection and the rows
    /// written. Nothing is written unless every batch is accepted.
    async fn ingest_stream(
        &self,
        first: FlightData,
        input: Streaming<FlightData>,
        name: String,
        mode: WriteMode,
        opts: CollectionOptions,
    ) -> Result<(String, usize), Status> {
        let _permit = self.puts.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "too many puts in progress: the limit is {} at once (--max-concurrent-puts); retry",
                self.config.max_concurrent_puts
            ))
        })?;
        // Batches go to a blocking worker one at a time as they are decoded: it validates and
        // stages them, and commits only when the stream has ended cleanly. Memory stays at a
        // few batches whatever the size of the stream.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<PutMsg>(2);
        let (db, max_rows) = (self.db.clone(), self.config.max_put_rows);
        let worker = blocking("a put", move || {
            let mut ingest = db
                .ingest(&name, mode, opts)
                .map_err(|e| engine_status(&e))?
                .with_max_rows(max_rows);
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    PutMsg::Batch(b) => ingest.push(&b).map_err(|e| engine_status(&e))?,
                    PutMsg::End => return ingest.commit().map_err(|e| engine_status(&e)),
                }
            }
            // The stream failed or was cut: nothing is committed (dropping the ingest removes
            // what it staged).
            Err(Status::aborted("put stream ended without completing"))
        });
        let mut batches = put_batches(first, input);
        let mut failed = None;
        while let Some(item) = batches.next().await {
            let batch = match item {
                Ok(b) => b,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            if tx.send(PutMsg::Batch(batch)).await.is_err() {
                break; // the worker refused a batch; its error is below
            }
        }
        if failed.is_none() {
            let _ = tx.send(PutMsg::End).await;
        }
        drop(tx);
        let outcome = worker.await;
        if let Some(e) = failed {
            return Err(e);
        }
        outcome
    }

    async fn do_action_inner(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Stream<arrow_flight::Result>>, Status> {
        if let Some(results) = self.sql_action(&request).await {
            return Ok(Response::new(Box::pin(stream::iter(
                results?.into_iter().map(Ok),
            ))));
        }
        let need = maintenance::role_of(&request.get_ref().r#type);
        let what = format!("the action '{}'", request.get_ref().r#type);
        self.role(request.metadata(), need, &what)?;
        let action = request.into_inner();
        let body = std::str::from_utf8(&action.body)
            .map_err(|_| Status::invalid_argument("action body must be a UTF-8 collection name"))?;
        // The collection's name, then (for `alter`) key=value settings.
        let name = body
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let db = self.db.clone();
        let body = match action.r#type.as_str() {
            "drop_collection" => {
                let n = name.clone();
                blocking("drop_collection", move || {
                    db.drop_collection(&n).map_err(|e| engine_status(&e))
                })
                .await?;
                serde_json::json!({ "dropped": name })
            }
            "build_index" => {
                let c = self.open(&name).await?;
                let built = blocking("build_index", move || {
                    c.build_index(1).map_err(|e| engine_status(&e))
                })
                .await?;
                serde_json::json!({ "collection": name, "indexes_built": built })
            }
            kind if maintenance::ACTIONS.contains(&kind) => {
                let (kind, body) = (kind.to_string(), body.to_string());
                blocking("maintenance", move || {
                    maintenance::run(&db, &kind, &body, &mut |_, _, _| {})
                        .map_err(|e| engine_status(&e))
                })
                .await?
            }
            other => {
                let known: Vec<&str> = maintenance::SERVER_ACTIONS.iter().map(|a| a.0).collect();
                return Err(Status::invalid_argument(format!(
                    "unknown action '{other}' (expected one of {})",
                    known.join(", ")
                )));
            }
        };
        let result = arrow_flight::Result {
            body: body.to_string().into(),
        };
        Ok(Response::new(Box::pin(stream::iter([Ok(result)]))))
    }
}

/// Streams `batches` as Flight data under `schema` (batches are given that schema, so the
/// stream's schema is the one described), in messages of at most the encoder's 2 MiB
/// default; a panic while streaming is reported as INTERNAL in `what`.
fn encode(
    schema: SchemaRef,
    batches: impl futures::Stream<Item = Result<RecordBatch, Status>> + Send + 'static,
    what: &'static str,
) -> Stream<FlightData> {
    let target = schema.clone();
    let batches = batches.map(move |b| {
        let b = b?;
        if b.schema() == target {
            return Ok(b);
        }
        RecordBatch::try_new(target.clone(), b.columns().to_vec())
            .map_err(|e| Status::internal(format!("result does not fit its schema: {e}")))
    });
    let flight = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches.map_err(|s| FlightError::Tonic(Box::new(s))))
        .map_err(flight_status);
    caught_stream(what, flight)
}

/// The record batches of a put stream (`first`, then `input`), each message checked before
/// it is decoded; malformed data ends the stream with an error saying what is wrong.
fn put_batches(
    first: FlightData,
    input: Streaming<FlightData>,
) -> impl futures::Stream<Item = Result<RecordBatch, Status>> + Send + Unpin {
    // A message carrying only the descriptor (a Flight SQL update without parameters) holds
    // no data.
    let data = stream::once(async { Ok(first) })
        .chain(input.map_err(FlightError::from))
        .filter(|m| {
            futures::future::ready(m.as_ref().map_or(true, |m| {
                !(m.data_header.is_empty() && m.data_body.is_empty())
            }))
        })
        .map(|m| m.and_then(wire::check_message));
    let batches =
        AssertUnwindSafe(FlightRecordBatchStream::new_from_flight_data(data)).catch_unwind();
    batches
        .map(|item| match item {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(e)) => Err(flight_status(e)),
            Err(p) => Err(Status::invalid_argument(format!(
                "malformed Arrow data: {}",
                panic_status("decoding", p).message()
            ))),
        })
        .scan(false, |failed, item| {
            // The first error ends the stream.
            let out = (!*failed).then_some(item);
            *failed |= out.as_ref().is_some_and(|i| i.is_err());
            futures::future::ready(out)
        })
        .boxed()
}

/// Ends a result stream with an error once it passes `max_rows` rows or `timeout`.
fn limit_results(
    inner: impl futures::Stream<Item = Result<RecordBatch, Status>> + Send + 'static,
    max_rows: usize,
    timeout: Duration,
) -> impl futures::Stream<Item = Result<RecordBatch, Status>> + Send + 'static {
    let deadline = tokio::time::Instant::now() + timeout;
    stream::unfold(
        (Box::pin(inner), 0usize, false),
        move |(mut inner, rows, done)| async move {
            if done {
                return None;
            }
            let item = match tokio::time::timeout_at(deadline, inner.next()).await {
                Err(_) => Err(timed_out(timeout)),
                Ok(None) => return None,
                Ok(Some(item)) => item,
            };
            let rows = rows + item.as_ref().map_or(0, |b| b.num_rows());
            let item = match item {
                Ok(_) if rows > max_rows => Err(Status::resource_exhausted(format!(
                    "the result passes the limit of {max_rows} rows per query \
                     (--max-result-rows); add a LIMIT or a narrower WHERE"
                ))),
                other => other,
            };
            let done = item.is_err();
            Some((item, (inner, rows, done)))
        },
    )
}

#[tonic::async_trait]
impl FlightService for OmenFlight {
    type HandshakeStream = Stream<HandshakeResponse>;
    type ListFlightsStream = Stream<FlightInfo>;
    type DoGetStream = Stream<FlightData>;
    type DoPutStream = Stream<PutResult>;
    type DoExchangeStream = Stream<FlightData>;
    type DoActionStream = Stream<arrow_flight::Result>;
    type ListActionsStream = Stream<ActionType>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        let timer = self.metrics.start("handshake");
        timed(
            timer,
            caught("handshake", self.handshake_inner(request)).await,
        )
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let timer = self.metrics.start("list_flights");
        timed(
            timer,
            caught("list_flights", self.list_flights_inner(request)).await,
        )
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let timer = self.metrics.start("get_flight_info");
        let answer = caught("get_flight_info", async {
            Ok(Response::new(
                self.describe(&request, request.get_ref()).await?,
            ))
        })
        .await;
        timed_unary(timer, answer)
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented(
            "poll_flight_info: queries complete synchronously; use get_flight_info",
        ))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let timer = self.metrics.start("get_schema");
        let answer = caught("get_schema", async {
            let info = self.describe(&request, request.get_ref()).await?;
            let schema = info
                .try_decode_schema()
                .map_err(|e| Status::internal(e.to_string()))?;
            let result: SchemaResult = SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
                .try_into()
                .map_err(|e: datafusion::arrow::error::ArrowError| {
                    Status::internal(e.to_string())
                })?;
            Ok(Response::new(result))
        })
        .await;
        timed_unary(timer, answer)
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let timer = self.metrics.start("do_get");
        timed(timer, caught("do_get", self.do_get_inner(request)).await)
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let timer = self.metrics.start("do_put");
        timed(timer, caught("do_put", self.do_put_inner(request)).await)
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("do_exchange is not supported"))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let timer = self.metrics.start("do_action");
        timed(
            timer,
            caught("do_action", self.do_action_inner(request)).await,
        )
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        self.role(request.metadata(), Role::Read, "listing actions")?;
        let actions = maintenance::SERVER_ACTIONS.map(|(t, role, d)| {
            Ok(ActionType {
                r#type: t.into(),
                description: format!("{d} ({} role)", role.as_str()),
            })
        });
        let flight_sql = sql::ACTIONS.iter().map(|t| {
            Ok(ActionType {
                r#type: t.to_string(),
                description: "Flight SQL (see the Flight SQL protocol)".into(),
            })
        });
        Ok(Response::new(Box::pin(stream::iter(
            actions.into_iter().chain(flight_sql).collect::<Vec<_>>(),
        ))))
    }
}

/// Serves `db` with the default configuration on `listener` until `shutdown` completes.
pub async fn serve(
    db: Arc<Database>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    serve_with(db, ServerConfig::default(), listener, shutdown).await
}

/// Serves `db` under `config` on `listener` until `shutdown` completes.
pub async fn serve_with(
    db: Arc<Database>,
    config: ServerConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // TCP_NODELAY: without it Nagle's algorithm meets the client's delayed ACK and every call
    // waits about 40 ms. Keepalives find clients that went away without closing.
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        let identity = tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| format!("TLS (--tls-cert, --tls-key): {e}"))?;
    }
    let metrics_addr = config.metrics_addr;
    let service = OmenFlight::with_config(db.clone(), config)?;
    if let Some(addr) = metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("--metrics-addr {addr}: {e}"))?;
        eprintln!(
            "omendb: metrics on http://{}/metrics",
            listener.local_addr()?
        );
        tokio::spawn(metrics::serve(listener, service.metrics.clone(), db));
    }
    // The standard gRPC health service (grpc.health.v1), open to every client.
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<FlightServiceServer<OmenFlight>>()
        .await;
    builder
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(health_service)
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// Binds `addr` (port 0 picks a free port) and returns the listener and its address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}
