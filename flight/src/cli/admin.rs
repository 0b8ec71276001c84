//! Operator subcommands (`compact`, `alter`, `stats`, `verify`, `backup`): on a database
//! directory no server holds (`--data`), or through a running server's Flight actions
//! (`--addr`). Both print the same JSON object; progress goes to standard error.

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::Action;
use futures::StreamExt;
use omendb_flight::actions::{role_of, ALTER, COMPACT, VERIFY};

use crate::cli::progress::{ticking, Progress};

/// Where the database is: a directory, or a server.
#[derive(clap::Args, Clone)]
pub(crate) struct Conn {
    /// The database: a directory no server holds, or object storage as a URL.
    #[arg(long, conflicts_with = "addr", required_unless_present = "addr")]
    pub data: Option<String>,
    /// A running server: 127.0.0.1:50051, http://127.0.0.1:50051 or grpc://127.0.0.1:50051
    /// (with --token, a token of the role the command needs).
    #[arg(long)]
    pub addr: Option<String>,
    /// The bearer token to send to --addr.
    #[arg(long, requires = "addr")]
    pub token: Option<String>,
    /// With --data as a URL: an option of the object storage client, as key=value
    /// (repeatable; the scheme's environment variables are read first).
    #[arg(long = "storage-option", value_parser = omendb_object::parse_option, requires = "data")]
    pub storage_options: Vec<(String, String)>,
}

/// A command's database and, optionally, one collection.
#[derive(clap::Args)]
pub(crate) struct Target {
    #[command(flatten)]
    pub conn: Conn,
    /// The collection (every collection when left out).
    pub collection: Option<String>,
}

/// Runs maintenance action `kind` (see `omendb_flight::maintenance`) with `body` and prints its
/// JSON; a reply that reports damage fails the command after printing.
pub(crate) async fn run(kind: &str, conn: &Conn, body: String) -> Result<(), String> {
    let out = match (&conn.data, &conn.addr) {
        (Some(dir), _) => {
            let db = omendb_object::open_existing(dir, &conn.storage_options, &Default::default())
                .map_err(|e| e.to_string())?;
            let kind = kind.to_string();
            tokio::task::spawn_blocking(move || local(&db, &kind, &body))
                .await
                .map_err(|e| e.to_string())??
        }
        (None, Some(addr)) => {
            let label = format!("{kind} through {addr}");
            let started = std::time::Instant::now();
            let reply = action(addr, conn.token.as_deref(), kind, body).await?;
            Progress::new(label, "").finish(started.elapsed().as_secs());
            reply
        }
        (None, None) => return Err("give --data DIR or --addr URL".into()),
    };
    println!("{out}");
    if out["ok"] == false {
        return Err(format!("{kind}: damage found (see above)"));
    }
    Ok(())
}

fn local(db: &omendb::Database, kind: &str, body: &str) -> Result<serde_json::Value, String> {
    // One bar per collection checked: (label, bar, bytes done).
    let mut bar: Option<(String, Progress, u64)> = None;
    let mut progress = |label: &str, done: u64, all: u64| {
        if let Some((_, mut old, old_done)) = bar.take_if(|(l, _, _)| l != label) {
            old.finish(old_done);
        }
        let (_, p, seen) =
            bar.get_or_insert_with(|| (label.to_string(), Progress::new(label, "bytes"), 0));
        *seen = done;
        p.update(done, (all > 0).then(|| done as f64 / all as f64));
    };
    let reply = if kind == VERIFY {
        omendb_flight::actions::maintenance::run(db, kind, body, &mut progress)
    } else {
        ticking(kind, || {
            omendb_flight::actions::maintenance::run(db, kind, body, &mut |_, _, _| {})
        })
    };
    if let Some((_, mut p, done)) = bar {
        p.finish(done);
    }
    let reply = reply.map_err(|e| e.to_string())?;
    if kind == ALTER || kind == COMPACT {
        // Merges and builds the new settings call for run before the directory is let go.
        ticking("indexing", || wait_for_indexing(db));
    }
    Ok(reply)
}

/// Waits for every open collection's background index builds and merges.
pub(crate) fn wait_for_indexing(db: &omendb::Database) {
    for name in db.list_collections().unwrap_or_default() {
        if let Ok(c) = db.collection(&name) {
            c.wait_for_indexing();
        }
    }
}

/// The URL a client connects to for a server address written any of the ways users write
/// one: `127.0.0.1:50051`, `http://...`, or Flight's `grpc://`, `grpc+tcp://` and
/// `grpc+tls://` (TLS: `https://`).
pub(crate) fn endpoint_url(addr: &str) -> String {
    let addr = addr.trim();
    for (scheme, as_http) in [
        ("grpc+tls://", "https://"),
        ("grpc+tcp://", "http://"),
        ("grpc://", "http://"),
    ] {
        if let Some(rest) = addr.strip_prefix(scheme) {
            return format!("{as_http}{rest}");
        }
    }
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// The `--help` text saying which role a command's token needs through `--addr`.
pub(crate) fn role_help(role: omendb_flight::auth::Role) -> String {
    format!(
        "Through --addr on a server with --token-file, --token needs the '{}' role (or a \
         higher one).",
        role.as_str()
    )
}

/// `alter`'s `--help` text: the settings it changes, and the role it needs.
pub(crate) fn alter_help() -> String {
    format!(
        "Settings alter changes (metric, id, vector and vector_type are fixed at creation):\n{}\n\n{}",
        omendb::settings_help(true),
        role_help(role_of(ALTER))
    )
}

/// `import`'s `--help` text: the settings of a new collection, and the role it needs.
pub(crate) fn import_help() -> String {
    format!(
        "Settings (--option key=value):\n{}\n\n{}",
        omendb::settings_help(false),
        role_help(omendb_flight::auth::Role::Write)
    )
}

/// The `--help` text of maintenance command `kind` (its role through `--addr`).
pub(crate) fn action_help(kind: &str) -> String {
    role_help(role_of(kind))
}

/// Connects to a server at `addr` (see [`endpoint_url`] for the spellings taken).
pub(crate) async fn connect(
    addr: &str,
) -> Result<FlightServiceClient<tonic::transport::Channel>, String> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint_url(addr))
        .map_err(|e| format!("bad --addr {addr}: {e}"))?
        .connect()
        .await
        .map_err(|e| format!("cannot reach {addr}: {e}"))?;
    Ok(FlightServiceClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX))
}

/// Puts `token` on `request` as a bearer token.
pub(crate) fn authorize<T>(
    request: &mut tonic::Request<T>,
    token: Option<&str>,
) -> Result<(), String> {
    if let Some(t) = token {
        let value = format!("Bearer {t}")
            .parse()
            .map_err(|_| "the token holds characters a header cannot".to_string())?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(())
}

async fn action(
    addr: &str,
    token: Option<&str>,
    kind: &str,
    body: String,
) -> Result<serde_json::Value, String> {
    let mut client = connect(addr).await?;
    let mut request = tonic::Request::new(Action {
        r#type: kind.to_string(),
        body: body.into(),
    });
    authorize(&mut request, token)?;
    let mut results = client
        .do_action(request)
        .await
        .map_err(|s| format!("{kind}: {}", s.message()))?
        .into_inner();
    let first = results
        .next()
        .await
        .ok_or_else(|| format!("{kind}: the server sent no result"))?
        .map_err(|s| format!("{kind}: {}", s.message()))?;
    serde_json::from_slice(&first.body).map_err(|e| format!("{kind}: bad reply: {e}"))
}

#[cfg(test)]
mod tests {
    use super::endpoint_url;

    #[test]
    fn every_spelling_of_an_address_reaches_it() {
        for addr in [
            "127.0.0.1:50051",
            "http://127.0.0.1:50051",
            "grpc://127.0.0.1:50051",
            "grpc+tcp://127.0.0.1:50051",
            " 127.0.0.1:50051 ",
        ] {
            assert_eq!(endpoint_url(addr), "http://127.0.0.1:50051", "{addr}");
        }
        assert_eq!(endpoint_url("grpc+tls://db:1"), "https://db:1");
        assert_eq!(endpoint_url("https://db:1"), "https://db:1");
    }
}
