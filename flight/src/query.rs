//! The query path of plain Flight: SQL planned in the caller's session and checked against
//! its role and the file policy, collections described and listed, results streamed within
//! the server's row and time limits.

use std::sync::Arc;

use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::{Criteria, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use datafusion::arrow::datatypes::Schema;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SessionContext};
use futures::stream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::auth::Role;
use crate::error::Error;
use crate::runtime::{blocking, Stream};
use crate::session::SESSION_HEADER;
use crate::wire::{encode, limit_results, timed_out};
use crate::{metrics, sql, OmenFlight};

impl OmenFlight {
    /// Plans `sql` in `ctx`, checks it against the caller's role and the file policy, and only
    /// then runs it (DDL takes effect here).
    async fn plan(&self, ctx: &SessionContext, sql: &str, role: Role) -> Result<DataFrame, Error> {
        let timeout = self.config.query_timeout;
        let planned = async {
            let plan = omendb_datafusion::sql::logical_plan(&ctx.state(), sql).await?;
            self.files.check_plan(&plan, role)?;
            let ddl = matches!(plan, LogicalPlan::Ddl(_)).then(|| plan.clone());
            let df = ctx.execute_logical_plan(plan).await?;
            if let Some(ddl) = ddl {
                self.sessions.ran(&ddl, sql, ctx).await?;
            }
            Ok(df)
        };
        tokio::time::timeout(timeout, planned)
            .await
            .unwrap_or_else(|_| Err(timed_out(timeout).into()))
    }

    pub(crate) async fn open(&self, name: &str) -> Result<Arc<omendb::Collection>, Status> {
        let (db, name) = (self.db.clone(), name.to_string());
        blocking("opening a collection", move || {
            db.collection(&name).map_err(Error::from)
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
            db.list_collections().map_err(Error::from)
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
        let (schema, batches) = match self.shaped(&session, &sql, role).await? {
            Some((prepared, values)) => (prepared.schema(), prepared.execute(values).await),
            None => {
                let df = self.plan(&session.ctx, &sql, role).await?;
                let schema = Arc::new(df.schema().as_arrow().clone());
                (schema, omendb_datafusion::execute_frame(df).await)
            }
        };
        let batches = batches.map_err(Error::from)?;
        let limited = limit_results(
            batches,
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
