//! What the operator decides about a server: limits, who may connect, which files SQL may
//! touch. Every limit is refused with an error that names it (the flag that sets it).

use std::path::PathBuf;
use std::time::Duration;

use crate::auth::Tokens;

/// A server's configuration; `Default` is what `omendb serve` uses without flags.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The largest k of a knn() call (`--max-k`).
    pub max_k: usize,
    /// The largest beam width ef of a knn() call (`--max-ef`).
    pub max_ef: usize,
    /// The most rows one put may hold (`--max-put-rows`).
    pub max_put_rows: usize,
    /// The largest gRPC message accepted or sent, in bytes (`--max-message-bytes`).
    pub max_message_bytes: usize,
    /// Puts running at once; more are refused (`--max-concurrent-puts`).
    pub max_concurrent_puts: usize,
    /// The most rows one query may return (`--max-result-rows`).
    pub max_result_rows: usize,
    /// How long one query may run, planning included (`--query-timeout`).
    pub query_timeout: Duration,
    /// Memory all queries together may hold for sorts, joins and aggregations, in bytes
    /// (`--query-memory`).
    pub query_memory_bytes: usize,
    /// Bearer tokens and their roles; `None` serves anyone (`--token-file`).
    pub tokens: Option<Tokens>,
    /// Directories SQL may read and write files under (`--external-dir`); none by default.
    pub external_dirs: Vec<PathBuf>,
    /// A client's SQL session is forgotten after this long unused (`--session-idle`).
    pub session_idle: Duration,
    /// Serve TLS with this certificate chain and private key, both PEM (`--tls-cert`,
    /// `--tls-key`); plain TCP when `None`.
    pub tls: Option<Tls>,
    /// Calls that take at least this long are logged with their SQL text (None: never).
    pub slow_query: Option<Duration>,
    /// Where to serve Prometheus metrics over HTTP (GET /metrics), if anywhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// A server's TLS identity, PEM-encoded.
#[derive(Clone)]
pub struct Tls {
    pub(crate) cert_pem: Vec<u8>,
    pub(crate) key_pem: Vec<u8>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls { .. }")
    }
}

impl Tls {
    /// Reads the certificate chain and the key, naming the file that cannot be read.
    pub fn load(cert: &std::path::Path, key: &std::path::Path) -> Result<Tls, String> {
        let read = |p: &std::path::Path, what: &str| {
            std::fs::read(p).map_err(|e| format!("--{what} {}: {e}", p.display()))
        };
        Ok(Tls {
            cert_pem: read(cert, "tls-cert")?,
            key_pem: read(key, "tls-key")?,
        })
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_k: 10_000,
            max_ef: 10_000,
            max_put_rows: 10_000_000,
            // A 100,000 × 384 float32 batch is about 154 MB.
            max_message_bytes: 256 << 20,
            max_concurrent_puts: 8,
            max_result_rows: 1_000_000,
            query_timeout: Duration::from_secs(300),
            query_memory_bytes: 2 << 30,
            tokens: None,
            external_dirs: Vec::new(),
            session_idle: Duration::from_secs(30 * 60),
            tls: None,
            slow_query: Some(Duration::from_secs(1)),
            metrics_addr: None,
        }
    }
}
