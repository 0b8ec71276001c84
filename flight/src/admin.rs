//! Operator subcommands (`compact`, `alter`, `stats`, `verify`): on a database directory no
//! server holds (`--data`), or through a running server's Flight actions (`--addr`). Both
//! print the same JSON object.

use std::path::PathBuf;
use std::sync::Arc;

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::Action;
use futures::StreamExt;

/// Where the collection is: a directory, or a server.
#[derive(clap::Args)]
pub struct Target {
    /// The database directory (no server may hold it).
    #[arg(long, conflicts_with = "addr", required_unless_present = "addr")]
    pub data: Option<PathBuf>,
    /// A running server, e.g. http://127.0.0.1:50051 (its admin token with --token).
    #[arg(long)]
    pub addr: Option<String>,
    /// The bearer token to send to --addr.
    #[arg(long, requires = "addr")]
    pub token: Option<String>,
    /// The collection.
    pub collection: String,
}

/// Runs the action `kind` (`args`: its key=value settings, for `alter`) and prints its JSON.
pub async fn run(kind: &str, target: Target, args: Vec<String>) -> Result<(), String> {
    let out = match (&target.data, &target.addr) {
        (Some(dir), _) => {
            let db = omendb::Database::open(dir).map_err(|e| e.to_string())?;
            let (kind, name) = (kind.to_string(), target.collection.clone());
            tokio::task::spawn_blocking(move || local(&db, &kind, &name, &args))
                .await
                .map_err(|e| e.to_string())??
        }
        (None, Some(addr)) => {
            remote(
                addr,
                target.token.as_deref(),
                kind,
                &target.collection,
                &args,
            )
            .await?
        }
        (None, None) => return Err("give --data DIR or --addr URL".into()),
    };
    println!("{out}");
    Ok(())
}

fn local(
    db: &omendb::Database,
    kind: &str,
    name: &str,
    args: &[String],
) -> Result<serde_json::Value, String> {
    let c: Arc<omendb::Collection> = db.collection(name).map_err(|e| e.to_string())?;
    let e = |e: omendb::Error| e.to_string();
    Ok(match kind {
        "compact" => omendb_flight::maintenance::compact(&c).map_err(e)?,
        "alter" => {
            let reply = omendb_flight::maintenance::alter(&c, args).map_err(e)?;
            // Merges and builds the new settings call for run before the directory is let go.
            c.wait_for_indexing();
            reply
        }
        "stats" => serde_json::to_value(c.stats().map_err(e)?).map_err(|e| e.to_string())?,
        "verify" => {
            let (files, bytes) = c.verify().map_err(e)?;
            serde_json::json!({ "collection": name, "files": files, "bytes": bytes, "ok": true })
        }
        other => return Err(format!("unknown command {other}")),
    })
}

async fn remote(
    addr: &str,
    token: Option<&str>,
    kind: &str,
    name: &str,
    args: &[String],
) -> Result<serde_json::Value, String> {
    let channel = tonic::transport::Endpoint::from_shared(addr.to_string())
        .map_err(|e| format!("bad --addr {addr}: {e}"))?
        .connect()
        .await
        .map_err(|e| format!("cannot reach {addr}: {e}"))?;
    let mut client = FlightServiceClient::new(channel);
    let mut body = name.to_string();
    for a in args {
        body.push(' ');
        body.push_str(a);
    }
    let mut request = tonic::Request::new(Action {
        r#type: kind.to_string(),
        body: body.into(),
    });
    if let Some(t) = token {
        let value = format!("Bearer {t}")
            .parse()
            .map_err(|_| "the token holds characters a header cannot".to_string())?;
        request.metadata_mut().insert("authorization", value);
    }
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
