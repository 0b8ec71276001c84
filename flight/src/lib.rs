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
//!   (admin), `stats` (body: a collection's name; JSON result; see [`actions`] and
//!   [`actions::maintenance`]).
//!
//! The server holds itself to its [`ServerConfig`]: tokens and roles ([`auth`]), one SQL
//! session per client and the files SQL may touch (`session`), and limits on k, puts,
//! messages, results, query time and query memory, each refused with an error naming it.
//! CPU work (searches, ingest, opening collections) runs on blocking threads, never on the
//! async workers; a panic in a handler is reported as INTERNAL and the process lives on.
//!
//! Where things are: this file holds the service and how it is served; `service` the
//! `FlightService` calls (role check, timer, delegate); `query` and `put` plain Flight's
//! queries and puts; [`actions`] the action table and dispatch; `sql` Flight SQL;
//! `runtime` blocking work and panics; `metrics` timing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use omendb::Database;
use tokio::sync::Semaphore;

pub mod actions;
pub mod auth;
pub mod config;
mod error;
mod metrics;
mod put;
mod query;
mod runtime;
mod service;
mod session;
mod shared;
mod sql;
mod wire;

pub use config::ServerConfig;
use session::{FilePolicy, Sessions};

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
    /// Set when the server begins to shut down: calls that stay open until the client ends
    /// them (a stream of searches) end then, so shutting down does not wait on idle clients.
    stopping: Arc<tokio::sync::watch::Sender<bool>>,
}

impl std::fmt::Debug for OmenFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OmenFlight")
            .field("db", &self.db.path())
            .finish()
    }
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
        let limits = omendb_datafusion::KnnLimits {
            max_k: config.max_k,
            max_ef: config.max_ef,
        };
        let files = FilePolicy::new(&config.external_dirs, db.path())
            .map_err(|e| DataFusionError::Configuration(e.to_string()))?;
        let guard: omendb_datafusion::FileGuard = {
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
                    omendb_datafusion::session_in(
                        db.clone(),
                        runtime.clone(),
                        limits,
                        guard.clone(),
                    )
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
            stopping: Arc::new(tokio::sync::watch::channel(false).0),
        })
    }

    /// Resolves when the server begins to shut down (never, for a service that
    /// [`serve_with`] does not run).
    pub(crate) fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stopping = self.stopping.subscribe();
        async move {
            if stopping.wait_for(|s| *s).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The gRPC service, with the configured message limits.
    pub fn into_server(self) -> FlightServiceServer<OmenFlight> {
        let max = self.config.max_message_bytes;
        FlightServiceServer::new(self)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
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
    let stopping = service.stopping.clone();
    let shutdown = async move {
        shutdown.await;
        stopping.send_replace(true);
    };
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
