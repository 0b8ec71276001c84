//! Arrow Flight SQL, on the same port as plain Flight: a descriptor, ticket or put whose
//! command is a packed Flight SQL message goes here; anything else is plain Flight.
//!
//! - Statements: `CommandStatementQuery` → FlightInfo (schema, a ticket holding a signed
//!   handle) → DoGet streams the rows.
//! - Prepared statements: `CreatePreparedStatement` plans the SQL once per session and
//!   answers the dataset and parameter schemas; `DoPut(CommandPreparedStatementQuery)` binds
//!   one row of parameters and answers a new handle carrying them; FlightInfo and DoGet with
//!   that handle run the planned statement with them (see `omendb_udfs::Prepared`: a search
//!   is bound again, never re-planned).
//! - Updates: `CommandStatementUpdate` / `CommandPreparedStatementUpdate` run DML and DDL and
//!   answer the rows affected (a prepared update runs once per row of parameters).
//! - Bulk ingest: `CommandStatementIngest` streams into the engine's all-or-nothing ingest.
//! - Metadata: `GetSqlInfo`, `GetCatalogs`, `GetDbSchemas`, `GetTables`, `GetTableTypes`,
//!   `GetXdbcTypeInfo` (see `metadata`).
//!
//! Handles carry their session and are signed (`handle`): a handle is refused in another
//! session. Roles, file access and limits are those of plain Flight.

mod handle;
mod metadata;

use std::sync::Arc;

use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, Command, CommandPreparedStatementQuery,
    CommandStatementIngest, DoPutPreparedStatementResult, DoPutUpdateResult, ProstMessageExt,
    TableExistsOption, TableNotExistOption, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, PutResult,
    SchemaAsIpc, Ticket,
};
use datafusion::arrow::array::{Array, RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::LogicalPlan;
use futures::stream::{self, TryStreamExt};
use omendb::{CollectionOptions, WriteMode};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

pub use handle::{Handle, Signer};

use crate::auth::{require, Role};
use crate::error::{df_status, engine_status};
use crate::session::Session;
use crate::{encode, limit_results, put_batches, OmenFlight, Stream};

/// The type URL prefix of every Flight SQL message.
const PREFIX: &str = "type.googleapis.com/arrow.flight.protocol.sql.";

/// The Flight SQL actions (the rest of the action names are plain Flight's).
pub(crate) const ACTIONS: [&str; 8] = [
    "CreatePreparedStatement",
    "ClosePreparedStatement",
    "CreatePreparedSubstraitPlan",
    "BeginTransaction",
    "EndTransaction",
    "BeginSavepoint",
    "EndSavepoint",
    "CancelQuery",
];

/// The Flight SQL command packed in `bytes`, if they hold one (`None`: plain Flight).
pub(crate) fn command(bytes: &[u8]) -> Option<Result<Command, Status>> {
    let any = Any::decode(bytes).ok()?;
    if !any.type_url.starts_with(PREFIX) {
        return None;
    }
    Some(
        Command::try_from(any)
            .map_err(|e| Status::invalid_argument(format!("malformed Flight SQL command: {e}"))),
    )
}

/// Whether a planned statement only reads (it runs when its rows are fetched); others (DDL,
/// DML, COPY, SET) run when they are described, once.
fn only_reads(plan: &LogicalPlan) -> bool {
    !matches!(
        plan,
        LogicalPlan::Dml(_)
            | LogicalPlan::Ddl(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::Statement(_)
    )
}

fn ipc_error(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("encoding Arrow IPC: {e}"))
}

/// `batches` as an Arrow IPC stream.
fn to_ipc(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, Status> {
    let mut w = StreamWriter::try_new(Vec::new(), schema).map_err(ipc_error)?;
    for b in batches {
        w.write(b).map_err(ipc_error)?;
    }
    w.into_inner().map_err(ipc_error)
}

/// The batches of an Arrow IPC stream this server wrote.
fn from_ipc(bytes: &[u8]) -> Result<(SchemaRef, Vec<RecordBatch>), Status> {
    let reader = StreamReader::try_new(bytes, None)
        .map_err(|e| Status::invalid_argument(format!("unreadable handle data: {e}")))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Status::invalid_argument(format!("unreadable handle data: {e}")))?;
    Ok((schema, batches))
}

/// The parameter schema of a prepared statement: `$1, $2, ...` in order, then named ones;
/// a parameter whose type the statement does not imply is Null (any type binds).
fn parameter_schema(prepared: &omendb_udfs::Prepared) -> Schema {
    let mut names: Vec<&String> = prepared.parameters().keys().collect();
    names.sort_by_key(|n| {
        let position = n.trim_start_matches('$').parse::<usize>().ok();
        (position.is_none(), position, n.to_string())
    });
    Schema::new(
        names
            .into_iter()
            .map(|n| {
                let ty = prepared.parameters()[n]
                    .as_ref()
                    .map_or(DataType::Null, |f| f.data_type().clone());
                Field::new(n.as_str(), ty, true)
            })
            .collect::<Vec<_>>(),
    )
}

/// The values row `row` of `batch` binds: by position when the statement's parameters are
/// `$1, $2, ...`, by column name otherwise.
fn param_values(
    prepared: &omendb_udfs::Prepared,
    batch: &RecordBatch,
    row: usize,
) -> Result<ParamValues, Status> {
    let value = |col: &dyn Array| {
        ScalarValue::try_from_array(col, row)
            .map_err(|e| Status::invalid_argument(format!("unreadable parameter value: {e}")))
    };
    let positional = prepared
        .parameters()
        .keys()
        .all(|n| n.trim_start_matches('$').parse::<usize>().is_ok());
    if positional {
        let values = batch
            .columns()
            .iter()
            .map(|c| value(c.as_ref()).map(Into::into))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(ParamValues::List(values));
    }
    let mut map = std::collections::HashMap::new();
    for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
        let name = field.name().trim_start_matches('$').to_string();
        map.insert(name, value(col.as_ref())?.into());
    }
    Ok(ParamValues::Map(map))
}

/// Refuses a bound value that cannot be what its integer parameter is (a float or a string where
/// k goes), so the execute call fails rather than the fetch; a knn() query vector is checked by
/// `Prepared::check_values`.
fn check_bound_types(prepared: &omendb_udfs::Prepared, values: &ParamValues) -> Result<(), Status> {
    let ParamValues::List(list) = values else {
        return Ok(());
    };
    for (i, bound) in list.iter().enumerate() {
        let name = format!("${}", i + 1);
        let Some(Some(field)) = prepared.parameters().get(&name) else {
            continue;
        };
        let got = bound.value.data_type();
        if field.data_type().is_integer() && !got.is_integer() && !got.is_null() {
            return Err(Status::invalid_argument(format!(
                "parameter {name} is an integer, but a {got} value was bound"
            )));
        }
    }
    Ok(())
}

/// The rows a DML statement's result reports (its `count` column), or 0.
fn affected_rows(batches: &[RecordBatch]) -> i64 {
    batches
        .iter()
        .filter_map(|b| b.column_by_name("count"))
        .filter_map(|c| c.as_any().downcast_ref::<UInt64Array>())
        .flat_map(|c| c.iter().flatten())
        .sum::<u64>() as i64
}

impl OmenFlight {
    /// The statement `sql` planned in `session`, checked against the caller's role and the
    /// file policy (on every use: the same session may be used with another token).
    async fn statement(
        &self,
        session: &Session,
        sql: &str,
        role: Role,
    ) -> Result<Arc<omendb_udfs::Prepared>, Status> {
        let timeout = self.config.query_timeout;
        let prepared = tokio::time::timeout(timeout, session.statement(sql))
            .await
            .unwrap_or_else(|_| Err(crate::timed_out(timeout)))?;
        self.files.check_plan(prepared.logical_plan(), role)?;
        Ok(prepared)
    }

    /// The rows of parameters a handle carries.
    fn bound_rows(handle: &Handle) -> Result<Vec<RecordBatch>, Status> {
        if handle.params.is_empty() {
            return Ok(Vec::new());
        }
        Ok(from_ipc(&handle.params)?.1)
    }

    /// The parameter values of a query's run: the one row its handle carries (none when it
    /// carries none).
    fn bound(prepared: &omendb_udfs::Prepared, handle: &Handle) -> Result<ParamValues, Status> {
        let batches = Self::bound_rows(handle)?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        match batches.iter().find(|b| b.num_rows() > 0) {
            None => Ok(ParamValues::List(vec![])),
            Some(_) if rows > 1 => Err(Status::invalid_argument(format!(
                "a prepared query runs with one row of parameters, {rows} were bound; run it \
                 once per row (or use it as an update, which runs once per row)"
            ))),
            Some(batch) => {
                let values = param_values(prepared, batch, 0)?;
                check_bound_types(prepared, &values)?;
                Ok(values)
            }
        }
    }

    /// The schema of `prepared`'s result with `values` bound: a column typed by a parameter
    /// (`SELECT $1`) has the bound value's type, not the unbound plan's Null.
    fn bound_schema(
        prepared: &omendb_udfs::Prepared,
        values: &ParamValues,
    ) -> Result<SchemaRef, Status> {
        let schema = prepared.schema();
        let untyped = schema.fields().iter().any(|f| f.data_type().is_null());
        if !untyped || matches!(values, ParamValues::List(v) if v.is_empty()) {
            return Ok(schema);
        }
        let plan = prepared
            .logical_plan()
            .clone()
            .with_param_values(values.clone())
            .map_err(df_status)?;
        Ok(Arc::new(plan.schema().as_arrow().clone()))
    }

    /// Runs `prepared` with `values` to the end, within the server's limits.
    async fn run_to_end(
        &self,
        prepared: &omendb_udfs::Prepared,
        values: ParamValues,
    ) -> Result<Vec<RecordBatch>, Status> {
        let stream = prepared.execute(values).await.map_err(df_status)?;
        let batches = limit_results(
            stream.map_err(df_status),
            self.config.max_result_rows,
            self.config.query_timeout,
        )
        .try_collect()
        .await?;
        if let Some(sql) = prepared.sql() {
            self.sessions
                .ran(prepared.logical_plan(), sql, prepared.context())
                .await?;
        }
        Ok(batches)
    }

    /// The FlightInfo of `handle`'s statement: its schema and a ticket (`ticket` packs the
    /// signed handle). A statement that does not only read runs now, once, and its result
    /// travels in the handle.
    async fn describe_statement(
        &self,
        session: &Session,
        role: Role,
        mut handle: Handle,
        descriptor: FlightDescriptor,
        ticket: impl FnOnce(Vec<u8>) -> Vec<u8>,
    ) -> Result<FlightInfo, Status> {
        let prepared = self.statement(session, &handle.sql, role).await?;
        // The bound parameters are checked now, so a bad binding fails the execute call.
        let values = Self::bound(&prepared, &handle)?;
        prepared.check_values(&values).map_err(df_status)?;
        let schema = Self::bound_schema(&prepared, &values)?;
        if !only_reads(prepared.logical_plan()) && handle.result.is_empty() {
            let batches = self.run_to_end(&prepared, values).await?;
            handle.result = to_ipc(&schema, &batches)?;
        }
        let ticket = Ticket::new(ticket(self.signer.encode(&handle)));
        FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(e.to_string()))
            .map(|info| {
                info.with_descriptor(descriptor)
                    .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
                    .with_ordered(true)
            })
    }

    /// Flight SQL `GetFlightInfo`.
    pub(crate) async fn sql_flight_info<T>(
        &self,
        request: &Request<T>,
        descriptor: &FlightDescriptor,
        command: Command,
    ) -> Result<FlightInfo, Status> {
        let role = self.role(request.metadata(), Role::Read, "a Flight SQL request")?;
        let session = self.session(request)?;
        let descriptor = descriptor.clone();
        match command {
            Command::CommandStatementQuery(q) => {
                refuse_transaction(q.transaction_id.as_ref())?;
                let handle = Handle {
                    session: session.id.clone(),
                    sql: q.query,
                    ..Handle::default()
                };
                self.describe_statement(&session, role, handle, descriptor, |h| {
                    TicketStatementQuery {
                        statement_handle: h.into(),
                    }
                    .as_any()
                    .encode_to_vec()
                })
                .await
            }
            Command::CommandPreparedStatementQuery(q) => {
                let handle = self
                    .signer
                    .decode(&q.prepared_statement_handle, &session.id)?;
                self.describe_statement(&session, role, handle, descriptor, |h| {
                    CommandPreparedStatementQuery {
                        prepared_statement_handle: h.into(),
                    }
                    .as_any()
                    .encode_to_vec()
                })
                .await
            }
            other => metadata::flight_info(other, descriptor),
        }
    }

    /// Flight SQL `DoGet`.
    pub(crate) async fn sql_do_get(
        &self,
        request: Request<Ticket>,
        command: Command,
    ) -> Result<Response<Stream<FlightData>>, Status> {
        let role = self.role(request.metadata(), Role::Read, "a Flight SQL request")?;
        let session = self.session(&request)?;
        let handle = match command {
            Command::TicketStatementQuery(t) => {
                self.signer.decode(&t.statement_handle, &session.id)?
            }
            Command::CommandPreparedStatementQuery(q) => self
                .signer
                .decode(&q.prepared_statement_handle, &session.id)?,
            other => {
                let (schema, batch) = metadata::rows(other, &session.ctx).await?;
                return Ok(Response::new(encode(
                    schema,
                    stream::iter([Ok(batch)]),
                    "a Flight SQL query",
                )));
            }
        };
        if !handle.result.is_empty() {
            let (schema, batches) = from_ipc(&handle.result)?;
            return Ok(Response::new(encode(
                schema,
                stream::iter(batches.into_iter().map(Ok)),
                "a Flight SQL query",
            )));
        }
        let prepared = self.statement(&session, &handle.sql, role).await?;
        let values = Self::bound(&prepared, &handle)?;
        let schema = Self::bound_schema(&prepared, &values)?;
        let rows = prepared.execute(values).await.map_err(df_status)?;
        let limited = limit_results(
            rows.map_err(df_status),
            self.config.max_result_rows,
            self.config.query_timeout,
        );
        let mut response = Response::new(encode(schema, limited, "a Flight SQL query"));
        response
            .extensions_mut()
            .insert(crate::metrics::QueryText(handle.sql.clone()));
        Ok(response)
    }

    /// Flight SQL `DoPut`: updates, ingest and parameter binding.
    pub(crate) async fn sql_put(
        &self,
        session: &Session,
        role: Role,
        command: Command,
        first: FlightData,
        input: Streaming<FlightData>,
    ) -> Result<PutResult, Status> {
        let update = |record_count: i64| PutResult {
            app_metadata: DoPutUpdateResult { record_count }.encode_to_vec().into(),
        };
        match command {
            Command::CommandStatementUpdate(u) => {
                refuse_transaction(u.transaction_id.as_ref())?;
                let prepared = self.statement(session, &u.query, role).await?;
                let batches = self
                    .run_to_end(&prepared, ParamValues::List(vec![]))
                    .await?;
                Ok(update(affected_rows(&batches)))
            }
            Command::CommandPreparedStatementUpdate(u) => {
                let handle = self
                    .signer
                    .decode(&u.prepared_statement_handle, &session.id)?;
                let prepared = self.statement(session, &handle.sql, role).await?;
                let mut params: Vec<RecordBatch> = put_batches(first, input).try_collect().await?;
                if params.iter().all(|b| b.num_rows() == 0) {
                    params = Self::bound_rows(&handle)?;
                }
                let mut affected = 0;
                if params.iter().all(|b| b.num_rows() == 0) {
                    let none = ParamValues::List(vec![]);
                    affected += affected_rows(&self.run_to_end(&prepared, none).await?);
                }
                // One run per row of parameters, as a client's executemany asks.
                for batch in &params {
                    for row in 0..batch.num_rows() {
                        let values = param_values(&prepared, batch, row)?;
                        affected += affected_rows(&self.run_to_end(&prepared, values).await?);
                    }
                }
                Ok(update(affected))
            }
            Command::CommandPreparedStatementQuery(q) => {
                let mut handle = self
                    .signer
                    .decode(&q.prepared_statement_handle, &session.id)?;
                let params: Vec<RecordBatch> = put_batches(first, input).try_collect().await?;
                let rows: usize = params.iter().map(RecordBatch::num_rows).sum();
                let schema = params
                    .first()
                    .map(RecordBatch::schema)
                    .unwrap_or_else(|| Arc::new(Schema::empty()));
                handle.params = if rows == 0 {
                    Vec::new()
                } else {
                    to_ipc(&schema, &params)?
                };
                handle.result.clear();
                let result = DoPutPreparedStatementResult {
                    prepared_statement_handle: Some(self.signer.encode(&handle).into()),
                };
                Ok(PutResult {
                    app_metadata: result.encode_to_vec().into(),
                })
            }
            Command::CommandStatementIngest(ingest) => {
                let replaces = ingest
                    .table_definition_options
                    .is_some_and(|o| o.if_exists() == TableExistsOption::Replace);
                if replaces {
                    require(role, Role::Admin, "an ingest that replaces a collection")?;
                } else {
                    require(role, Role::Write, "an ingest")?;
                }
                let rows = self.sql_ingest(ingest, first, input).await?;
                Ok(update(rows as i64))
            }
            other => Err(Status::unimplemented(format!(
                "{} is not supported by do_put",
                other.type_url()
            ))),
        }
    }

    /// `CommandStatementIngest`: the stream into a collection, created, appended to or
    /// replaced as the command's table options say; options name the collection's settings
    /// (`metric`, `id`, `vector`, `m`, `ef_construction`, `ef_search`, `index_threshold`).
    async fn sql_ingest(
        &self,
        cmd: CommandStatementIngest,
        first: FlightData,
        input: Streaming<FlightData>,
    ) -> Result<usize, Status> {
        refuse_transaction(cmd.transaction_id.as_ref())?;
        if cmd.temporary {
            return Err(Status::invalid_argument(
                "ingest into a temporary table is not supported: collections are stored",
            ));
        }
        if let Some(c) = cmd.catalog.as_deref().filter(|c| *c != "datafusion") {
            return Err(Status::not_found(format!(
                "catalog '{c}' does not exist (collections are in catalog 'datafusion')"
            )));
        }
        if let Some(s) = cmd.schema.as_deref().filter(|s| *s != "public") {
            return Err(Status::not_found(format!(
                "schema '{s}' does not exist (collections are in schema 'public')"
            )));
        }
        let settings: Vec<String> = cmd
            .options
            .iter()
            .filter(|(k, _)| !k.starts_with("adbc."))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let opts = CollectionOptions::parse(settings.iter().map(String::as_str)).map_err(|e| {
            Status::invalid_argument(format!(
                "bad ingest option: {}",
                engine_status(&e).message()
            ))
        })?;
        let table_options = cmd.table_definition_options.unwrap_or_default();
        let if_missing = table_options.if_not_exist();
        let if_exists = table_options.if_exists();
        let name = cmd.table;
        let exists = self.db.exists(&name);
        match (exists, if_exists, if_missing) {
            (true, TableExistsOption::Fail, _) => Err(Status::already_exists(format!(
                "collection '{name}' already exists (ingest mode create: use append or replace)"
            ))),
            (false, _, TableNotExistOption::Fail) => Err(Status::not_found(format!(
                "collection '{name}' does not exist (ingest mode append: use create or \
                 create_append)"
            ))),
            (_, TableExistsOption::Unspecified, _) | (_, _, TableNotExistOption::Unspecified) => {
                Err(Status::invalid_argument(
                    "the ingest command must say what to do when the table exists and when it \
                     does not",
                ))
            }
            (_, TableExistsOption::Replace, _) => Ok(self
                .ingest_stream(first, input, name, WriteMode::Replace, opts)
                .await?
                .1),
            (_, TableExistsOption::Fail, _) => Ok(self
                .ingest_stream(first, input, name, WriteMode::Create, opts)
                .await?
                .1),
            (_, _, TableNotExistOption::Fail) => Ok(self
                .ingest_stream(first, input, name, WriteMode::Append, opts)
                .await?
                .1),
            _ => Ok(self
                .ingest_stream(first, input, name, WriteMode::CreateOrAppend, opts)
                .await?
                .1),
        }
    }

    /// The Flight SQL actions; `None` when `action` is not one of them.
    pub(crate) async fn sql_action(
        &self,
        request: &Request<Action>,
    ) -> Option<Result<Vec<arrow_flight::Result>, Status>> {
        let kind = request.get_ref().r#type.as_str();
        if !ACTIONS.contains(&kind) {
            return None;
        }
        Some(self.sql_action_inner(request, kind).await)
    }

    async fn sql_action_inner(
        &self,
        request: &Request<Action>,
        kind: &str,
    ) -> Result<Vec<arrow_flight::Result>, Status> {
        let role = self.role(request.metadata(), Role::Read, "a Flight SQL request")?;
        let session = self.session(request)?;
        let body = Any::decode(&*request.get_ref().body)
            .map_err(|e| Status::invalid_argument(format!("malformed action body: {e}")))?;
        let unpack_error = |e: datafusion::arrow::error::ArrowError| {
            Status::invalid_argument(format!("malformed {kind} request: {e}"))
        };
        match kind {
            "CreatePreparedStatement" => {
                let req: ActionCreatePreparedStatementRequest = body
                    .unpack()
                    .map_err(unpack_error)?
                    .ok_or_else(|| Status::invalid_argument("expected a prepare request"))?;
                refuse_transaction(req.transaction_id.as_ref())?;
                let prepared = self.statement(&session, &req.query, role).await?;
                let handle = Handle {
                    session: session.id.clone(),
                    sql: req.query,
                    ..Handle::default()
                };
                let schema_bytes = |s: &Schema| -> Result<Vec<u8>, Status> {
                    let ipc: IpcMessage = SchemaAsIpc::new(s, &IpcWriteOptions::default())
                        .try_into()
                        .map_err(ipc_error)?;
                    Ok(ipc.0.to_vec())
                };
                let result = ActionCreatePreparedStatementResult {
                    prepared_statement_handle: self.signer.encode(&handle).into(),
                    dataset_schema: schema_bytes(&prepared.schema())?.into(),
                    parameter_schema: schema_bytes(&parameter_schema(&prepared))?.into(),
                };
                Ok(vec![arrow_flight::Result {
                    body: result.as_any().encode_to_vec().into(),
                }])
            }
            "ClosePreparedStatement" => {
                let req: ActionClosePreparedStatementRequest = body
                    .unpack()
                    .map_err(unpack_error)?
                    .ok_or_else(|| Status::invalid_argument("expected a close request"))?;
                let handle = self
                    .signer
                    .decode(&req.prepared_statement_handle, &session.id)?;
                session.forget(&handle.sql);
                Ok(vec![])
            }
            "BeginTransaction" | "EndTransaction" | "BeginSavepoint" | "EndSavepoint" => {
                Err(Status::unimplemented(
                    "transactions are not supported: each statement commits on its own \
                     (autocommit)",
                ))
            }
            other => Err(Status::unimplemented(format!(
                "{other} is not supported by this server"
            ))),
        }
    }
}

fn refuse_transaction(id: Option<&prost::bytes::Bytes>) -> Result<(), Status> {
    match id {
        Some(_) => Err(Status::invalid_argument(
            "transactions are not supported: each statement commits on its own (autocommit)",
        )),
        None => Ok(()),
    }
}
