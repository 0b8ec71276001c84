//! The query path of plain Flight: SQL planned in the caller's session and checked against
//! its role and the file policy, collections described and listed, results streamed within
//! the server's row and time limits.

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::{Criteria, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SessionContext};
use futures::stream::{self, StreamExt, TryStreamExt};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::auth::Role;
use crate::error::{df_status, engine_status, flight_status};
use crate::runtime::{blocking, caught_stream, Stream};
use crate::session::SESSION_HEADER;
use crate::{metrics, sql, OmenFlight};

impl OmenFlight {
    /// Plans `sql` in `ctx`, checks it against the caller's role and the file policy, and only
    /// then runs it (DDL takes effect here).
    async fn plan(&self, ctx: &SessionContext, sql: &str, role: Role) -> Result<DataFrame, Status> {
        let timeout = self.config.query_timeout;
        let planned = async {
            let plan = omendb_udfs::sql::logical_plan(&ctx.state(), sql)
                .await
                .map_err(df_status)?;
            self.files.check_plan(&plan, role)?;
            let ddl = matches!(plan, LogicalPlan::Ddl(_)).then(|| plan.clone());
            let df = ctx.execute_logical_plan(plan).await.map_err(df_status)?;
            if let Some(ddl) = ddl {
                self.sessions.ran(&ddl, sql, ctx).await?;
            }
            Ok(df)
        };
        tokio::time::timeout(timeout, planned)
            .await
            .unwrap_or_else(|_| Err(timed_out(timeout)))
    }

    pub(crate) async fn open(&self, name: &str) -> Result<Arc<omendb::Collection>, Status> {
        let (db, name) = (self.db.clone(), name.to_string());
        blocking("opening a collection", move || {
            db.collection(&name).map_err(|e| engine_status(&e))
        })
        .await
    }

    async fn collection_info(&self, name: &str) -> Result<FlightInfo, Status> {
        let c = self.open(name).await?;
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

    pub(crate) async fn describe<T>(
        &self,
        request: &Request<T>,
        descriptor: &FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        match descriptor.r#type() {
            DescriptorType::Path => {
                self.role(request.metadata(), Role::Read, "describing a collection")?;
                let name = descriptor
                    .path
                    .first()
                    .ok_or_else(|| Status::invalid_argument("empty path descriptor"))?;
                self.collection_info(name).await
            }
            DescriptorType::Cmd => {
                if let Some(command) = sql::command(&descriptor.cmd) {
                    return self.sql_flight_info(request, descriptor, command?).await;
                }
                let role = self.role(request.metadata(), Role::Read, "a query")?;
                let sql = std::str::from_utf8(&descriptor.cmd).map_err(|_| {
                    Status::invalid_argument("command descriptor must be UTF-8 SQL")
                })?;
                let session = self.session(request)?;
                let df = self.plan(&session.ctx, sql, role).await?;
                let schema: Schema = df.schema().as_arrow().clone();
                FlightInfo::new()
                    .try_with_schema(&schema)
                    .map_err(|e| Status::internal(e.to_string()))
                    .map(|info| {
                        info.with_descriptor(FlightDescriptor::new_cmd(sql.to_string()))
                            .with_endpoint(
                                FlightEndpoint::new().with_ticket(Ticket::new(sql.to_string())),
                            )
                    })
            }
            DescriptorType::Unknown => Err(Status::invalid_argument("unknown descriptor type")),
        }
    }

    pub(crate) async fn list_flights_inner(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Stream<FlightInfo>>, Status> {
        self.role(request.metadata(), Role::Read, "listing collections")?;
        let db = self.db.clone();
        let names = blocking("listing collections", move || {
            db.list_collections().map_err(|e| engine_status(&e))
        })
        .await?;
        let mut infos = Vec::with_capacity(names.len());
        for name in names {
            // A damaged collection is listed, saying what is wrong, and does not hide the
            // others.
            let info = match self.collection_info(&name).await {
                Ok(info) => info,
                Err(e) => FlightInfo::new()
                    .try_with_schema(&Schema::empty())
                    .map_err(|e| Status::internal(e.to_string()))?
                    .with_descriptor(FlightDescriptor::new_path(vec![name.clone()]))
                    .with_app_metadata(
                        serde_json::json!({ "damaged": e.message(), "code": format!("{:?}", e.code()) })
                            .to_string(),
                    ),
            };
            infos.push(Ok(info));
        }
        Ok(Response::new(Box::pin(stream::iter(infos))))
    }

    pub(crate) async fn do_get_inner(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Stream<FlightData>>, Status> {
        if let Some(command) = sql::command(&request.get_ref().ticket) {
            return self.sql_do_get(request, command?).await;
        }
        let role = self.role(request.metadata(), Role::Read, "a query")?;
        let sql = std::str::from_utf8(&request.get_ref().ticket)
            .map_err(|_| Status::invalid_argument("ticket must be UTF-8 SQL text"))?
            .to_string();
        let session = self.session(&request)?;
        let df = self.plan(&session.ctx, &sql, role).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.execute_stream().await.map_err(df_status)?;
        let limited = limit_results(
            batches.map_err(df_status),
            self.config.max_result_rows,
            self.config.query_timeout,
        );
        let mut response = Response::new(encode(schema, limited, "a query"));
        response.extensions_mut().insert(metrics::QueryText(sql));
        if let Ok(v) = MetadataValue::try_from(&session.id) {
            response.metadata_mut().insert(SESSION_HEADER, v);
        }
        Ok(response)
    }
}

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

/// Ends a result stream with an error once it passes `max_rows` rows or `timeout`.
pub(crate) fn limit_results(
    inner: impl futures::Stream<Item = Result<RecordBatch, Status>> + Send + 'static,
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
                Ok(Some(item)) => item,
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
