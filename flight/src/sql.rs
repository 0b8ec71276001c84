//! Arrow Flight SQL, on the same port as plain Flight: a descriptor, ticket or put whose
//! command is a packed Flight SQL message goes here; anything else is plain Flight.
//!
//! - Statements: `CommandStatementQuery` → FlightInfo (schema, a ticket holding a signed
//!   handle) → DoGet streams the rows.
//! - Prepared statements: `CreatePreparedStatement` plans the SQL once per session and
//!   answers the dataset and parameter schemas; `DoPut(CommandPreparedStatementQuery)` binds
//!   one row of parameters and answers a new handle carrying them; FlightInfo and DoGet with
//!   that handle run the planned statement with them (see `omendb_datafusion::Prepared`: a search
//!   is bound again, never re-planned).
//! - Updates: `CommandStatementUpdate` / `CommandPreparedStatementUpdate` run DML and DDL and
//!   answer the rows affected (a prepared update runs once per row of parameters).
//! - Bulk ingest: `CommandStatementIngest` streams into the engine's all-or-nothing ingest.
//! - Metadata: `GetSqlInfo`, `GetCatalogs`, `GetDbSchemas`, `GetTables`, `GetTableTypes`,
//!   `GetXdbcTypeInfo` (see `metadata`).
//!
//! Handles carry their session and are signed (`handle`): a handle is refused in another
//! session. Roles, file access and limits are those of plain Flight.
//!
//! This file holds the commands and the three calls that take them (GetFlightInfo, DoGet,
//! DoPut); `statement` plans and runs statements, `prepared` binds parameters, `ingest`
//! streams bulk ingest, `actions` the Flight SQL actions, `handle` signs handles and
//! `metadata` answers the catalog commands.

mod actions;
mod exchange;
mod handle;
mod ingest;
mod metadata;
mod prepared;
mod statement;

use std::sync::Arc;

use arrow_flight::sql::{
    Any, Command, CommandPreparedStatementQuery, DoPutPreparedStatementResult, DoPutUpdateResult,
    ProstMessageExt, TableExistsOption, TicketStatementQuery,
};
use arrow_flight::{FlightData, FlightDescriptor, FlightInfo, PutResult, Ticket};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::ParamValues;
use futures::stream::{self, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{require, Role};
use crate::runtime::Stream;
use crate::session::Session;
use crate::wire::put_batches;
use crate::wire::{encode, limit_results};
use crate::OmenFlight;

pub(crate) use actions::ACTIONS;
pub(crate) use handle::{Handle, Signer};
use prepared::param_values;
use statement::affected_rows;

/// The type URL prefix of every Flight SQL message.
const PREFIX: &str = "type.googleapis.com/arrow.flight.protocol.sql.";

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

/// How a ticket wraps a signed statement handle.
type WrapTicket = fn(Vec<u8>) -> Vec<u8>;

impl OmenFlight {
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
        // The statement's handle, and how its ticket wraps the signed handle.
        let (handle, ticket): (Handle, WrapTicket) = match command {
            Command::CommandStatementQuery(q) => {
                refuse_transaction(q.transaction_id.as_ref())?;
                let handle = Handle {
                    session: session.id.clone(),
                    sql: q.query,
                    ..Handle::default()
                };
                (handle, |h| {
                    let query = TicketStatementQuery {
                        statement_handle: h.into(),
                    };
                    query.as_any().encode_to_vec()
                })
            }
            Command::CommandPreparedStatementQuery(q) => {
                let handle = self
                    .signer
                    .decode(&q.prepared_statement_handle, &session.id)?;
                (handle, |h| {
                    let query = CommandPreparedStatementQuery {
                        prepared_statement_handle: h.into(),
                    };
                    query.as_any().encode_to_vec()
                })
            }
            other => return metadata::flight_info(other, descriptor),
        };
        Ok(self
            .describe_statement(&session, role, handle, descriptor, ticket)
            .await?)
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
        let (prepared, values) = self.planned(&session, &handle, role).await?;
        let schema = Self::bound_schema(&prepared, &values)?;
        let rows = prepared
            .execute(values)
            .await
            .map_err(crate::error::Error::from)?;
        let limited = limit_results(rows, self.config.max_result_rows, self.config.query_timeout);
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
        deadline: Option<std::time::Instant>,
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
                let rows = self.sql_ingest(ingest, first, input, deadline).await?;
                Ok(update(rows as i64))
            }
            other => Err(Status::unimplemented(format!(
                "{} is not supported by do_put",
                other.type_url()
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
