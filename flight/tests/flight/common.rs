//! Helpers shared by the Flight tests: puts, SQL tickets and error statuses over a real client.

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightClient, FlightData, FlightDescriptor, FlightInfo, Ticket};
use datafusion::arrow::array::{Int64Array, RecordBatch};
use futures::TryStreamExt;

pub(crate) fn status(e: arrow_flight::error::FlightError) -> tonic::Status {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        other => tonic::Status::unknown(other.to_string()),
    }
}

pub(crate) fn messages(path: &[&str], batches: Vec<RecordBatch>) -> Vec<FlightData> {
    let descriptor = FlightDescriptor::new_path(path.iter().map(|s| s.to_string()).collect());
    futures::executor::block_on(
        FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(descriptor))
            .build(futures::stream::iter(batches.into_iter().map(Ok)))
            .try_collect::<Vec<_>>(),
    )
    .unwrap()
}

pub(crate) async fn put_messages(
    client: &mut FlightClient,
    messages: Vec<FlightData>,
) -> Result<String, tonic::Status> {
    let stream = futures::stream::iter(messages.into_iter().map(Ok));
    let results: Vec<_> = match client.do_put(stream).await {
        Ok(s) => s.try_collect().await.map_err(status)?,
        Err(e) => return Err(status(e)),
    };
    Ok(String::from_utf8(results[0].app_metadata.to_vec()).unwrap())
}

pub(crate) async fn put(
    client: &mut FlightClient,
    path: &[&str],
    batches: Vec<RecordBatch>,
) -> Result<String, tonic::Status> {
    put_messages(client, messages(path, batches)).await
}

/// Puts each of `batches` to `path` in a put of its own, in order; each must be accepted.
pub(crate) async fn put_each(
    client: &mut FlightClient,
    path: &[&str],
    batches: impl IntoIterator<Item = RecordBatch>,
) {
    for b in batches {
        put(client, path, vec![b]).await.unwrap();
    }
}

pub(crate) async fn sql(
    client: &mut FlightClient,
    text: &str,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    match client.do_get(Ticket::new(text.to_string())).await {
        Ok(s) => s.try_collect().await.map_err(status),
        Err(e) => Err(status(e)),
    }
}

/// Every flight the server lists.
pub(crate) async fn flights(client: &mut FlightClient) -> Vec<FlightInfo> {
    client
        .list_flights(Vec::<u8>::new())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// Starts the Flight service over a fresh database in this process on 127.0.0.1; it stops
/// when the sender is dropped.
pub(crate) async fn serve_in_process() -> (
    tempfile::TempDir,
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
) {
    let tmp = tempfile::tempdir().unwrap();
    let db = std::sync::Arc::new(omendb::Database::open(tmp.path()).unwrap());
    let (listener, addr) = omendb_flight::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(omendb_flight::serve(db, listener, async {
        let _ = stopped.await;
    }));
    (tmp, addr, stop)
}

/// Column `i` of `batch`, which must be Utf8.
pub(crate) fn strings(batch: &RecordBatch, i: usize) -> &datafusion::arrow::array::StringArray {
    batch
        .column(i)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::StringArray>()
        .unwrap()
}

/// Column `i` of `batch`, which must be Int64.
pub(crate) fn int64s(batch: &RecordBatch, i: usize) -> &Int64Array {
    batch
        .column(i)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
}
