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
//! - `do_action`: `drop_collection`, `build_index`, `stats` (body: collection name; JSON result).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use futures::stream::{self, StreamExt, TryStreamExt};
use omendb::{CollectionOptions, Database, Metric};
use tonic::{Request, Response, Status, Streaming};

/// Largest gRPC message accepted or sent: a 100,000 × 384 float32 batch is about 154 MB.
pub const MAX_MESSAGE_BYTES: usize = 1 << 31;

/// The Flight service over one database.
/// One SQL session is shared by all clients, so tables registered with
/// `CREATE EXTERNAL TABLE` (Parquet, CSV) stay available for later queries and joins.
#[derive(Clone)]
pub struct OmenFlight {
    db: Arc<Database>,
    ctx: SessionContext,
}

impl std::fmt::Debug for OmenFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OmenFlight")
            .field("db", &self.db.path())
            .finish()
    }
}

impl OmenFlight {
    pub fn new(db: Arc<Database>) -> Result<Self, DataFusionError> {
        let ctx = omendb_udfs::session(db.clone())?;
        Ok(OmenFlight { db, ctx })
    }

    /// The gRPC service, with message limits raised for large batches.
    pub fn into_server(self) -> FlightServiceServer<OmenFlight> {
        FlightServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    async fn collection_info(&self, name: &str) -> Result<FlightInfo, Status> {
        let c = self.db.collection(name).map_err(|e| engine_status(&e))?;
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

    async fn query_info(&self, sql: &str) -> Result<FlightInfo, Status> {
        let df = self.ctx.sql(sql).await.map_err(df_status)?;
        let schema: Schema = df.schema().as_arrow().clone();
        FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(e.to_string()))
            .map(|info| {
                info.with_descriptor(FlightDescriptor::new_cmd(sql.to_string()))
                    .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(sql.to_string())))
            })
    }

    async fn describe(&self, descriptor: &FlightDescriptor) -> Result<FlightInfo, Status> {
        match descriptor.r#type() {
            DescriptorType::Path => {
                let name = descriptor
                    .path
                    .first()
                    .ok_or_else(|| Status::invalid_argument("empty path descriptor"))?;
                self.collection_info(name).await
            }
            DescriptorType::Cmd => {
                let sql = std::str::from_utf8(&descriptor.cmd).map_err(|_| {
                    Status::invalid_argument("command descriptor must be UTF-8 SQL")
                })?;
                self.query_info(sql).await
            }
            DescriptorType::Unknown => Err(Status::invalid_argument("unknown descriptor type")),
        }
    }

    /// Appends `batches` to the collection named by `descriptor`, creating it if needed.
    fn ingest(
        db: &Database,
        descriptor: &FlightDescriptor,
        batches: Vec<RecordBatch>,
    ) -> Result<(String, usize), Status> {
        let (name, opts) = put_target(descriptor)?;
        let collection = match db.collection(&name) {
            Ok(c) => c,
            Err(omendb::Error::NotFound(_)) => {
                let first = batches.iter().find(|b| b.num_rows() > 0).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "collection '{name}' does not exist and the stream has no rows to create it from"
                    ))
                })?;
                let schema = omendb::validate::schema_for_batch(
                    first,
                    &opts.id_column,
                    opts.vector_column.as_deref(),
                )
                .map_err(|e| engine_status(&e))?;
                match db.create_collection(&name, &schema, opts) {
                    Ok(c) => c,
                    Err(omendb::Error::AlreadyExists(_)) => {
                        db.collection(&name).map_err(|e| engine_status(&e))?
                    }
                    Err(e) => return Err(engine_status(&e)),
                }
            }
            Err(e) => return Err(engine_status(&e)),
        };
        let rows = collection.append(&batches).map_err(|e| engine_status(&e))?;
        Ok((name, rows))
    }
}

/// The collection name and creation options a put descriptor names.
fn put_target(descriptor: &FlightDescriptor) -> Result<(String, CollectionOptions), Status> {
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
    let mut opts = CollectionOptions::default();
    for option in parts {
        let (key, value) = option.split_once('=').ok_or_else(|| {
            Status::invalid_argument(format!("descriptor option '{option}' is not key=value"))
        })?;
        match key {
            "metric" => opts.metric = value.parse::<Metric>().map_err(|e| engine_status(&e))?,
            "id" => opts.id_column = value.to_string(),
            "vector" => opts.vector_column = Some(value.to_string()),
            "m" | "ef_construction" | "ef_search" | "index_threshold" => {
                let n: usize = value.parse().map_err(|_| {
                    Status::invalid_argument(format!(
                        "descriptor option '{key}' must be a non-negative integer, got '{value}'"
                    ))
                })?;
                match key {
                    "m" => opts.index.m = n,
                    "ef_construction" => opts.index.ef_construction = n,
                    "ef_search" => opts.index.ef_search = n,
                    _ => opts.index.threshold = n,
                }
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown descriptor option '{other}' (expected metric, id, vector, m, \
                     ef_construction, ef_search or index_threshold)"
                )))
            }
        }
    }
    Ok((name, opts))
}

/// The gRPC status for an engine error.
pub fn engine_status(e: &omendb::Error) -> Status {
    use omendb::Error as E;
    let msg = e.to_string();
    match e {
        E::InvalidInput(_) => Status::invalid_argument(msg),
        E::NotFound(_) => Status::not_found(msg),
        E::AlreadyExists(_) => Status::already_exists(msg),
        E::Corrupt { .. } => Status::data_loss(msg),
        E::Locked(_) => Status::failed_precondition(msg),
        E::Io { .. } | E::Arrow(_) => Status::internal(msg),
    }
}

/// The gRPC status for a DataFusion error (engine errors inside keep their kind).
pub fn df_status(e: DataFusionError) -> Status {
    if let Some(engine) = omendb_udfs::find_engine_error(&e) {
        return engine_status(engine);
    }
    let msg = e.to_string();
    match e.find_root() {
        DataFusionError::Plan(m) if m.contains("not found") => Status::not_found(msg),
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_) => Status::invalid_argument(msg),
        DataFusionError::Execution(_) => Status::invalid_argument(msg),
        _ => Status::internal(msg),
    }
}

fn flight_status(e: FlightError) -> Status {
    match e {
        FlightError::Tonic(s) => *s,
        FlightError::Arrow(e) => Status::invalid_argument(format!("malformed Arrow data: {e}")),
        FlightError::DecodeError(m) | FlightError::ProtocolError(m) => {
            Status::invalid_argument(format!("malformed Flight stream: {m}"))
        }
        other => Status::internal(other.to_string()),
    }
}

type Stream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

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
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented(
            "no authentication is configured; handshake is not needed",
        ))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let names = self.db.list_collections().map_err(|e| engine_status(&e))?;
        let mut infos = Vec::with_capacity(names.len());
        for name in names {
            infos.push(self.collection_info(&name).await);
        }
        Ok(Response::new(Box::pin(stream::iter(infos))))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Ok(Response::new(self.describe(request.get_ref()).await?))
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
        let info = self.describe(request.get_ref()).await?;
        let schema = info
            .try_decode_schema()
            .map_err(|e| Status::internal(e.to_string()))?;
        let result: SchemaResult = SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
            .try_into()
            .map_err(|e: datafusion::arrow::error::ArrowError| Status::internal(e.to_string()))?;
        Ok(Response::new(result))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let sql = std::str::from_utf8(&request.get_ref().ticket)
            .map_err(|_| Status::invalid_argument("ticket must be UTF-8 SQL text"))?
            .to_string();
        let df = self.ctx.sql(&sql).await.map_err(df_status)?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.execute_stream().await.map_err(df_status)?;
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches.map_err(|e| FlightError::Tonic(Box::new(df_status(e)))))
            .map_err(flight_status);
        Ok(Response::new(Box::pin(flight)))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let mut input = request.into_inner();
        let first = input
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty do_put stream"))?;
        let descriptor = first.flight_descriptor.clone().ok_or_else(|| {
            Status::invalid_argument("the first message of do_put must carry a flight descriptor")
        })?;
        put_target(&descriptor)?;
        let data = stream::once(async { Ok(first) }).chain(input.map_err(FlightError::from));
        let batches: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(data)
            .try_collect()
            .await
            .map_err(flight_status)?;
        let db = self.db.clone();
        let (name, rows) =
            tokio::task::spawn_blocking(move || Self::ingest(&db, &descriptor, batches))
                .await
                .map_err(|e| Status::internal(format!("ingest task failed: {e}")))??;
        let meta = serde_json::json!({ "collection": name, "rows": rows }).to_string();
        let result = PutResult {
            app_metadata: meta.into(),
        };
        Ok(Response::new(Box::pin(stream::iter([Ok(result)]))))
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
        let action = request.into_inner();
        let name = std::str::from_utf8(&action.body)
            .map_err(|_| Status::invalid_argument("action body must be a UTF-8 collection name"))?;
        let body = match action.r#type.as_str() {
            "drop_collection" => {
                self.db
                    .drop_collection(name)
                    .map_err(|e| engine_status(&e))?;
                serde_json::json!({ "dropped": name })
            }
            "build_index" => {
                let c = self.db.collection(name).map_err(|e| engine_status(&e))?;
                let built = tokio::task::spawn_blocking(move || c.build_index(1))
                    .await
                    .map_err(|e| Status::internal(format!("index build failed: {e}")))?
                    .map_err(|e| engine_status(&e))?;
                serde_json::json!({ "collection": name, "indexes_built": built })
            }
            "stats" => {
                let s = self
                    .db
                    .collection(name)
                    .and_then(|c| c.stats())
                    .map_err(|e| engine_status(&e))?;
                serde_json::json!({
                    "collection": name, "rows": s.rows, "deleted_rows": s.deleted_rows,
                    "segments": s.segments, "bytes_on_disk": s.bytes_on_disk, "dim": s.dim,
                    "metric": s.metric.as_str(), "index_kinds": s.index_kinds, "version": s.version,
                    "indexing": s.indexing, "index_error": s.index_error,
                    "index": {
                        "m": s.index.m, "ef_construction": s.index.ef_construction,
                        "ef_search": s.index.ef_search, "index_threshold": s.index.threshold,
                    },
                })
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown action '{other}'"
                )))
            }
        };
        let result = arrow_flight::Result {
            body: body.to_string().into(),
        };
        Ok(Response::new(Box::pin(stream::iter([Ok(result)]))))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let actions = [
            ("drop_collection", "Drop the collection named in the body"),
            ("build_index", "Build an HNSW index for every unindexed segment of the collection named in the body"),
            ("stats", "Rows, segments, bytes on disk and index kinds of the collection named in the body (JSON)"),
        ]
        .map(|(t, d)| Ok(ActionType { r#type: t.into(), description: d.into() }));
        Ok(Response::new(Box::pin(stream::iter(actions))))
    }
}

/// Serves `db` on `listener` until `shutdown` completes.
pub async fn serve(
    db: Arc<Database>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tonic::transport::Server::builder()
        .add_service(OmenFlight::new(db)?.into_server())
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await?;
    Ok(())
}

/// Binds `addr` (port 0 picks a free port) and returns the listener and its address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}
