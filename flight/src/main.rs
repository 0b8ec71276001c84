//! The `omendb` command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Parser, Subcommand};
use omendb_flight::actions;
use omendb_flight::actions::maintenance::DEFAULT_RETAIN;

mod cli;

use cli::{admin, bench, import};

#[derive(Parser)]
#[command(
    name = "omendb",
    version,
    about = "OmenDB: a vector database in the Arrow ecosystem"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a database over Arrow Flight.
    Serve(ServeArgs),
    /// Run SQL statements (separated by `;`, in order) against a database directory that no
    /// server holds, and print each result.
    Sql {
        /// The database: a directory (it must exist), or object storage as a URL.
        #[arg(long, default_value = "./omendb-data")]
        data: String,
        /// An option of the object storage client, as key=value (repeatable; see serve).
        #[arg(long = "storage-option", value_parser = omendb_object::parse_option)]
        storage_options: Vec<(String, String)>,
        /// The SQL text: one statement or several separated by `;`.
        query: String,
    },
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Merge a collection's segments (every collection's, with no name) into as few as its
    /// max_segment_rows allows, dropping deleted rows.
    #[command(after_help = admin::action_help(actions::COMPACT))]
    Compact(admin::Target),
    /// Change a collection's settings (key=value ...); they apply to what is indexed or
    /// merged afterwards.
    #[command(after_help = admin::alter_help())]
    Alter {
        #[command(flatten)]
        conn: admin::Conn,
        /// The collection.
        collection: String,
        /// Settings as key=value (the keys are listed below).
        #[arg(required = true)]
        settings: Vec<String>,
    },
    /// Print a collection's rows, segments, indexes, deleted rows and bytes (JSON; every
    /// collection's, with no name).
    #[command(after_help = admin::action_help(actions::STATS))]
    Stats(admin::Target),
    /// Wait until the background index builds and merges of a collection (of every
    /// collection, with no name) have finished, then print its stats. While a build runs,
    /// `stats` shows how far it is (`index_build`: rows done of the total, elapsed, ETA).
    #[command(after_help = admin::action_help(actions::WAIT))]
    Wait(admin::Target),
    /// Check every file and manifest of a collection (of every collection, with no name)
    /// against its checksum; fails naming any damaged file.
    #[command(after_help = admin::action_help(actions::VERIFY))]
    Verify(admin::Target),
    /// Remove the files no reader can still need from a collection (every collection, with
    /// no name): the manifests of versions replaced more than --retain seconds ago, and the
    /// files no kept version names that are older than that. Over object storage, where
    /// several servers may read older versions, this is how their files go.
    #[command(after_help = admin::action_help(actions::GC))]
    Gc {
        #[command(flatten)]
        target: admin::Target,
        /// Seconds a replaced version stays readable (and a file no version names is left
        /// alone, as another server's write in progress).
        #[arg(long, default_value_t = DEFAULT_RETAIN.as_secs_f64())]
        retain: f64,
    },
    /// Copy one consistent version of the database (or of one collection) into a new
    /// directory or object storage URL, while a server runs (--addr: a directory on the
    /// server's machine). The copy opens as a database: `omendb serve --data DEST` restores it.
    #[command(after_help = admin::action_help(actions::BACKUP))]
    Backup {
        #[command(flatten)]
        conn: admin::Conn,
        /// The new (or empty) directory to copy into, or an object storage URL holding no
        /// database (its client configured by the standard environment variables).
        dest: String,
        /// Only this collection.
        collection: Option<String>,
    },
    /// Load Parquet, CSV, Arrow IPC or .npy files into a collection, in one all-or-nothing
    /// write, with progress.
    #[command(after_help = admin::import_help())]
    Import(import::ImportArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The database: a directory (created if missing), or object storage as a URL
    /// (`file:///dir`, `memory://`; several servers may serve one URL).
    #[arg(long, default_value = "./omendb-data")]
    data: String,
    /// An option of the object storage client, `key=value` (repeatable).
    #[arg(long = "storage-option", value_parser = omendb_object::parse_option)]
    storage_options: Vec<(String, String)>,
    /// Where files read from object storage are cached (default: `omendb-cache` under the
    /// system temp dir).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// The most the cache may hold (`20GiB`, `500MB`, bytes; default: no limit): past it, the
    /// least recently used files are removed (and downloaded again when next opened).
    #[arg(long, value_parser = omendb_object::parse_size)]
    cache_size: Option<u64>,
    /// On object storage, how often (in milliseconds) an open collection looks for versions
    /// other servers committed (0: before every use).
    #[arg(long, default_value_t = 1000)]
    refresh_ms: u64,
    /// On object storage, seconds a replaced version stays readable: every quarter of it (at
    /// most once a second, at least once an hour) the server removes older versions' files
    /// (as `omendb gc --retain` does); 0 leaves them to `omendb gc`.
    #[arg(long, default_value_t = DEFAULT_RETAIN.as_secs_f64())]
    retain: f64,
    /// Address to listen on (port 0 picks a free port); `grpc://` or `http://` before it is
    /// accepted, as clients spell it.
    #[arg(long, default_value = "127.0.0.1:50051", value_parser = listen_addr)]
    addr: SocketAddr,
    /// Require bearer tokens: one `TOKEN ROLE` per line, ROLE read, write or admin.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Serve without tokens on a non-loopback address.
    #[arg(long)]
    allow_anonymous: bool,
    /// A directory SQL may read and write files under (repeatable; none by default).
    #[arg(long = "external-dir")]
    external_dirs: Vec<PathBuf>,
    /// The largest k of a knn() call.
    #[arg(long, default_value_t = 10_000)]
    max_k: usize,
    /// The largest beam width ef of a knn() call.
    #[arg(long, default_value_t = 10_000)]
    max_ef: usize,
    /// The most rows one put may hold.
    #[arg(long, default_value_t = 10_000_000)]
    max_put_rows: usize,
    /// The largest gRPC message accepted or sent, in bytes.
    #[arg(long, default_value_t = 256 << 20)]
    max_message_bytes: usize,
    /// Puts running at once; more are refused.
    #[arg(long, default_value_t = 8)]
    max_concurrent_puts: usize,
    /// The most rows one query may return.
    #[arg(long, default_value_t = 1_000_000)]
    max_result_rows: usize,
    /// How long one query may run, in seconds.
    #[arg(long, default_value_t = 300.0)]
    query_timeout: f64,
    /// Memory all queries together may hold for sorts, joins and aggregations, in bytes.
    #[arg(long, default_value_t = 2 << 30)]
    query_memory: usize,
    /// Seconds after which an unused client session is forgotten.
    #[arg(long, default_value_t = 1800.0)]
    session_idle: f64,
    /// Serve Prometheus metrics over HTTP at this address (GET /metrics).
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Log every call that takes at least this many milliseconds, with its SQL (0: none).
    #[arg(long, default_value_t = 1000)]
    slow_query_ms: u64,
    /// Serve TLS with this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// A listening address, with or without the scheme a client would put before it.
fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    let bare = ["grpc+tcp://", "grpc://", "http://"]
        .iter()
        .find_map(|scheme| text.strip_prefix(scheme))
        .unwrap_or(text)
        .trim_end_matches('/');
    bare.parse().map_err(|_| {
        format!("'{text}' is not an address to listen on (expected IP:PORT, e.g. 127.0.0.1:50051)")
    })
}

impl ServeArgs {
    fn config(&self) -> Result<omendb_flight::ServerConfig, String> {
        let tokens = match &self.token_file {
            Some(f) => Some(omendb_flight::auth::Tokens::load(f)?),
            None => None,
        };
        let secs = |name: &str, v: f64| {
            std::time::Duration::try_from_secs_f64(v)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("--{name} must be a positive number of seconds"))
        };
        Ok(omendb_flight::ServerConfig {
            max_k: self.max_k,
            max_ef: self.max_ef,
            max_put_rows: self.max_put_rows,
            max_message_bytes: self.max_message_bytes,
            max_concurrent_puts: self.max_concurrent_puts.max(1),
            max_result_rows: self.max_result_rows,
            query_timeout: secs("query-timeout", self.query_timeout)?,
            query_memory_bytes: self.query_memory,
            tokens,
            external_dirs: self.external_dirs.clone(),
            session_idle: secs("session-idle", self.session_idle)?,
            slow_query: (self.slow_query_ms > 0)
                .then(|| std::time::Duration::from_millis(self.slow_query_ms)),
            metrics_addr: self.metrics_addr,
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(omendb_flight::config::Tls::load(cert, key)?),
                _ => None,
            },
        })
    }
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Recall@k and queries per second of approximate (or exact) search over a dataset, for a
    /// sweep of ef: one JSON object per line.
    Ann(bench::AnnArgs),
}

#[tokio::main]
async fn main() {
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("omendb: {e}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Serve(args) => {
            let config = args.config()?;
            let auth = match &args.token_file {
                Some(f) => format!("bearer tokens from {}", f.display()),
                None if args.addr.ip().is_loopback() => "anonymous (loopback only)".into(),
                None if args.allow_anonymous => "ANONYMOUS: anyone who can reach it".into(),
                None => {
                    return Err(format!(
                        "refusing to serve {} without authentication: give --token-file FILE, \
                         or --allow-anonymous to serve anyone who can reach it",
                        args.addr
                    )
                    .into())
                }
            };
            let cache = omendb_object::Cache {
                dir: args.cache_dir.clone(),
                max_bytes: args.cache_size,
            };
            let db = Arc::new(
                omendb_object::open(&args.data, &args.storage_options, &cache)?
                    .with_refresh(std::time::Duration::from_millis(args.refresh_ms)),
            );
            if omendb_object::is_url(&args.data) && args.retain > 0.0 {
                tokio::spawn(collect_garbage(
                    db.clone(),
                    std::time::Duration::from_secs_f64(args.retain),
                ));
            }
            let (listener, local) = omendb_flight::bind(args.addr).await?;
            let scheme = if config.tls.is_some() {
                "TLS"
            } else {
                "plain TCP"
            };
            println!(
                "omendb listening on {local} (data: {}, auth: {auth}, {scheme})",
                args.data
            );
            omendb_flight::serve_with(db, config, listener, shutdown_signal())
                .await
                .map_err(|e| e.to_string())?;
            eprintln!("omendb: shut down");
        }
        Command::Sql {
            data,
            storage_options,
            query,
        } => {
            let db = Arc::new(omendb_object::open_existing(
                &data,
                &storage_options,
                &Default::default(),
            )?);
            let ctx = omendb_datafusion::session(db)?;
            for statement in omendb_datafusion::sql::statements(&ctx.state(), &query)? {
                let plan = ctx.state().statement_to_plan(statement).await?;
                ctx.execute_logical_plan(plan).await?.show().await?;
            }
        }
        Command::Compact(t) => {
            admin::run(actions::COMPACT, &t.conn, t.collection.unwrap_or_default()).await?
        }
        Command::Alter {
            conn,
            collection,
            settings,
        } => {
            admin::run(
                actions::ALTER,
                &conn,
                format!("{collection} {}", settings.join(" ")),
            )
            .await?
        }
        Command::Stats(t) => {
            admin::run(actions::STATS, &t.conn, t.collection.unwrap_or_default()).await?
        }
        Command::Wait(t) => {
            admin::run(actions::WAIT, &t.conn, t.collection.unwrap_or_default()).await?
        }
        Command::Verify(t) => {
            admin::run(actions::VERIFY, &t.conn, t.collection.unwrap_or_default()).await?
        }
        Command::Gc { target, retain } => {
            let body = format!("{} retain={retain}", target.collection.unwrap_or_default());
            admin::run(actions::GC, &target.conn, body).await?
        }
        Command::Backup {
            conn,
            dest,
            collection,
        } => {
            let relative = !omendb_object::is_url(&dest) && !Path::new(&dest).is_absolute();
            let dest = match (&conn.data, relative) {
                // A relative destination is the caller's; the server needs it whole.
                (None, true) => std::env::current_dir()?.join(dest).display().to_string(),
                _ => dest,
            };
            let body = format!("{dest}\n{}", collection.unwrap_or_default());
            admin::run(actions::BACKUP, &conn, body).await?
        }
        Command::Import(args) => import::run(args).await?,
        Command::Bench(BenchCommand::Ann(args)) => {
            tokio::task::spawn_blocking(move || bench::ann(args).map_err(|e| e.to_string()))
                .await??
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Removes old versions' files from every collection of `db` (on object storage), every quarter
/// of `retain` (between a second and an hour). A failure is reported and tried next time.
async fn collect_garbage(db: Arc<omendb::Database>, retain: std::time::Duration) {
    let every = (retain / 4).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(3600),
    );
    loop {
        tokio::time::sleep(every).await;
        let db = db.clone();
        let swept = tokio::task::spawn_blocking(move || -> omendb::Result<()> {
            for name in db.list_collections()? {
                db.collection(&name)?.collect_garbage(retain)?;
            }
            Ok(())
        })
        .await;
        if let Ok(Err(e)) = swept {
            eprintln!("omendb: removing old versions' files: {e}");
        }
    }
}
