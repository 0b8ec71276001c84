//! Arrow over Flight, in and out. Incoming messages are checked before arrow decodes them
//! (arrow's IPC reader trusts the buffer offsets and lengths in a message header and panics
//! when they point past the body, so a truncated or forged message is refused here, naming
//! what is wrong), put streams are decoded into batches, and results are encoded, and ended
//! once they pass the server's row or time limit.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use arrow_flight::decode::{DecodedFlightData, DecodedPayload, FlightDataDecoder};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::FlightData;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc;
use datafusion::arrow::record_batch::RecordBatch;
use futures::stream::{self, StreamExt, TryStreamExt};
use tonic::{Status, Streaming};

use crate::error::{flight_status, panic_status};
use crate::runtime::{caught_stream, Stream};

/// Passes `data` on if its header is a readable IPC message whose buffers lie in its body.
pub(crate) fn check_message(data: FlightData) -> Result<FlightData, FlightError> {
    if data.data_header.is_empty() {
        return Ok(data);
    }
    let bad = |m: String| FlightError::DecodeError(m);
    let message = ipc::root_as_message(&data.data_header)
        .map_err(|e| bad(format!("unreadable IPC message header: {e}")))?;
    let body = data.data_body.len() as u64;
    let declared =
        u64::try_from(message.bodyLength()).map_err(|_| bad("negative IPC body length".into()))?;
    if declared > body {
        return Err(bad(format!(
            "the message declares a body of {declared} bytes but carries {body} (truncated?)"
        )));
    }
    let batch = match message.header_type() {
        ipc::MessageHeader::RecordBatch => message.header_as_record_batch(),
        ipc::MessageHeader::DictionaryBatch => {
            message.header_as_dictionary_batch().and_then(|d| d.data())
        }
        _ => None,
    };
    if let Some(batch) = batch {
        if batch.length() < 0 {
            return Err(bad("negative row count".into()));
        }
        for (i, b) in batch.buffers().into_iter().flatten().enumerate() {
            let end = u64::try_from(b.offset())
                .ok()
                .zip(u64::try_from(b.length()).ok())
                .and_then(|(o, l)| o.checked_add(l));
            if end.is_none_or(|end| end > body) {
                return Err(bad(format!(
                    "buffer {i} (offset {}, length {}) lies outside the {body}-byte body",
                    b.offset(),
                    b.length()
                )));
            }
        }
        for (i, n) in batch.nodes().into_iter().flatten().enumerate() {
            if n.length() < 0 || n.null_count() < 0 || n.null_count() > n.length() {
                return Err(bad(format!("field node {i} has invalid counts")));
            }
        }
    }
    Ok(data)
}

/// The record batches of a put stream (`first`, then `input`), each message checked before
/// it is decoded; malformed data ends the stream with an error saying what is wrong.
pub(crate) fn put_batches(
    first: FlightData,
    input: Streaming<FlightData>,
) -> impl futures::Stream<Item = Result<RecordBatch, Status>> + Send + Unpin {
    put_batches_with_metadata(first, input).map_ok(|(batch, _)| batch)
}

/// As [`put_batches`], each batch with the `app_metadata` of its message (empty when none).
pub(crate) fn put_batches_with_metadata(
    first: FlightData,
    input: Streaming<FlightData>,
) -> impl futures::Stream<Item = Result<(RecordBatch, prost::bytes::Bytes), Status>> + Send + Unpin
{
    // A message carrying only the descriptor (a Flight SQL update without parameters) holds
    // no data.
    let data = stream::once(async { Ok(first) })
        .chain(input.map_err(FlightError::from))
        .filter(|m| {
            futures::future::ready(m.as_ref().map_or(true, |m| {
                !(m.data_header.is_empty() && m.data_body.is_empty())
            }))
        })
        .map(|m| m.and_then(check_message));
    let decoded = AssertUnwindSafe(FlightDataDecoder::new(data)).catch_unwind();
    decoded
        .filter_map(|item| {
            futures::future::ready(match item {
                Ok(Ok(DecodedFlightData {
                    inner,
                    payload: DecodedPayload::RecordBatch(b),
                })) => Some(Ok((b, inner.app_metadata))),
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(Err(flight_status(e))),
                Err(p) => Some(Err(Status::invalid_argument(format!(
                    "malformed Arrow data: {}",
                    panic_status("decoding", p).message()
                )))),
            })
        })
        .scan(false, |failed, item| {
            // The first error ends the stream.
            let out = (!*failed).then_some(item);
            *failed |= out.as_ref().is_some_and(|i| i.is_err());
            futures::future::ready(out)
        })
        .boxed()
}

/// The error of a query past the server's time limit.
pub(crate) fn timed_out(limit: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "the query ran past the server's time limit of {} s (--query-timeout)",
        limit.as_secs_f64()
    ))
}

/// Streams `batches` as Flight data under `schema` (batches are given that schema, so the
/// stream's schema is the one described), in messages of at most the encoder's 2 MiB
/// default; a panic while streaming is reported as INTERNAL in `what`.
pub(crate) fn encode(
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

/// Ends a result stream with an error once it passes `max_rows` rows or `timeout`; the
/// stream's own errors (DataFusion's, the engine's) become statuses here.
pub(crate) fn limit_results<E: Into<crate::error::Error> + Send + 'static>(
    inner: impl futures::Stream<Item = Result<RecordBatch, E>> + Send + 'static,
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
                Ok(Some(item)) => item.map_err(|e| Status::from(e.into())),
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
