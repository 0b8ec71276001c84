//! Plain Flight puts: a path descriptor naming the collection (and, for a new one, its
//! settings), then record batches streamed into the engine's all-or-nothing ingest. Flight SQL
//! ingest streams through the same [`OmenFlight::ingest_stream`].

use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::{FlightData, FlightDescriptor, PutResult};
use datafusion::arrow::record_batch::RecordBatch;
use futures::stream::{self, StreamExt};
use omendb::{CollectionOptions, WriteMode};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{require, Role};
use crate::error::{engine_status, Error};
use crate::runtime::{blocking, Stream};
use crate::wire::put_batches;
use crate::{sql, OmenFlight};

/// The collection name, creation options and write mode a put descriptor names: `mode=append`
/// (the default) creates the collection on its first rows and refuses stored ids,
/// `mode=upsert` replaces the stored rows; the engine's other modes by their names
/// (`create`: only a new collection, `replace`).
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
            // `append` creates the collection on its first rows, as a put without a mode does.
            Some(("mode", "append")) => mode = WriteMode::CreateOrAppend,
            Some(("mode", other)) => {
                mode = other.parse().map_err(|e: omendb::Error| {
                    Status::invalid_argument(format!(
                        "bad descriptor option: mode: {}",
                        engine_status(&e).message()
                    ))
                })?
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

/// The end of a put stream, as the ingest worker hears of it.
enum PutMsg {
    Batch(RecordBatch),
    /// The stream ended cleanly: commit.
    End,
}

impl OmenFlight {
    pub(crate) async fn do_put_inner(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Stream<PutResult>>, Status> {
        // Binding parameters is a put too: a read token may do it; what a put writes is
        // checked below.
        let role = self.role(request.metadata(), Role::Read, "a put")?;
        let peer = request.remote_addr();
        let metadata = request.metadata().clone();
        let deadline = call_deadline(&metadata);
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
                let result = self
                    .sql_put(&session, role, command?, first, input, deadline)
                    .await?;
                return Ok(Response::new(Box::pin(stream::iter([Ok(result)]))));
            }
        }
        require(role, Role::Write, "a put")?;
        let (name, opts, mode) = put_target(&descriptor)?;
        let (name, rows, stalled) = self
            .ingest_stream(first, input, name, mode, opts, deadline)
            .await?;
        let mode = match mode {
            WriteMode::CreateOrAppend => "append",
            other => other.name(),
        };
        let meta =
            serde_json::json!({ "collection": name, "rows": rows, "mode": mode }).to_string();
        let result = PutResult {
            app_metadata: meta.into(),
        };
        let mut response = Response::new(Box::pin(stream::iter([Ok(result)])) as Stream<_>);
        response
            .extensions_mut()
            .insert(crate::metrics::Stalled(stalled));
        Ok(response)
    }

    /// Streams the batches of a put (`first`, then `input`) into the ingest `open` starts, and
    /// commits them when the stream has ended cleanly; returns the collection, the rows
    /// written and how long the write waited for room (`max_unindexed_rows`, until `deadline`
    /// at the latest). Nothing is written unless every batch is accepted.
    pub(crate) async fn ingest_stream(
        &self,
        first: FlightData,
        input: Streaming<FlightData>,
        name: String,
        mode: WriteMode,
        opts: CollectionOptions,
        deadline: Option<std::time::Instant>,
    ) -> Result<(String, usize, std::time::Duration), Status> {
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
        let worker = blocking("a put", move || -> Result<_, Error> {
            let mut ingest = db
                .ingest(&name, mode, opts)?
                .with_max_rows(max_rows)
                .with_deadline(deadline);
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    PutMsg::Batch(b) => ingest.push(&b)?,
                    PutMsg::End => {
                        let stalled = ingest.stalled();
                        let (name, rows) = ingest.commit()?;
                        return Ok((name, rows, stalled));
                    }
                }
            }
            // The stream failed or was cut: nothing is committed (dropping the ingest removes
            // what it staged).
            Err(Status::aborted("put stream ended without completing").into())
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
}

/// When the caller gives up on this call (its `grpc-timeout`), less a margin for the answer to
/// reach it: a put waiting for room under `max_unindexed_rows` is refused by then, so the
/// caller hears why rather than a bare DEADLINE_EXCEEDED.
pub(crate) fn call_deadline(metadata: &tonic::metadata::MetadataMap) -> Option<std::time::Instant> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (value, unit) = text.split_at(text.len().checked_sub(1)?);
    let value: u64 = value.parse().ok()?;
    let timeout = match unit {
        "H" => std::time::Duration::from_secs(value.saturating_mul(3600)),
        "M" => std::time::Duration::from_secs(value.saturating_mul(60)),
        "S" => std::time::Duration::from_secs(value),
        "m" => std::time::Duration::from_millis(value),
        "u" => std::time::Duration::from_micros(value),
        "n" => std::time::Duration::from_nanos(value),
        _ => return None,
    };
    Some(std::time::Instant::now() + timeout.mul_f64(0.9))
}
