//! The `omendb` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

mod bench;

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
    Serve {
        /// The database directory (created if missing).
        #[arg(long, default_value = "./omendb-data")]
        data: PathBuf,
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:50051")]
        addr: SocketAddr,
    },
    /// Run one SQL statement against a database directory and print the result.
    Sql {
        #[arg(long, default_value = "./omendb-data")]
        data: PathBuf,
        /// The SQL text.
        query: String,
    },
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
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
        Command::Serve { data, addr } => {
            let db = Arc::new(omendb::Database::open(&data)?);
            let (listener, local) = omendb_flight::bind(addr).await?;
            println!("omendb listening on {local} (data: {})", data.display());
            omendb_flight::serve(db, listener, shutdown_signal())
                .await
                .map_err(|e| e.to_string())?;
            eprintln!("omendb: shut down");
        }
        Command::Sql { data, query } => {
            let db = Arc::new(omendb::Database::open(&data)?);
            let ctx = omendb_udfs::session(db)?;
            ctx.sql(&query).await?.show().await?;
        }
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
