//! Flight SQL statements: planned in the caller's session (on every use, against the
//! caller's role and the file policy), described, and run to the end within the limits.

use std::sync::Arc;

use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use datafusion::arrow::array::{Array, RecordBatch, UInt64Array};
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use futures::stream::TryStreamExt;
use tonic::Status;

use crate::auth::Role;
use crate::error::Error;
use crate::session::Session;
use crate::wire::{limit_results, timed_out};
use crate::OmenFlight;

use super::{to_ipc, Handle};

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

/// The rows a DML statement's result reports (its `count` column), or 0.
pub(super) fn affected_rows(batches: &[RecordBatch]) -> i64 {
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
    pub(super) async fn statement(
        &self,
        session: &Session,
        sql: &str,
        role: Role,
    ) -> Result<Arc<omendb_datafusion::Prepared>, Status> {
        let timeout = self.config.query_timeout;
        let prepared = tokio::time::timeout(timeout, session.statement(sql))
            .await
            .unwrap_or_else(|_| Err(timed_out(timeout).into()))?;
        self.files.check_plan(prepared.logical_plan(), role)?;
        Ok(prepared)
    }

    /// `sql` as the plan kept for its shape, with the vectors typed into it as the values:
    /// when it is a plain search (see `lift_vectors`), it then costs one bind, as a bound query
    /// does, not a parse and plan of every number. `None` when it is not (it is planned as it
    /// is: a shape that failed to plan says nothing of the text's own error).
    pub(crate) async fn shaped(
        &self,
        session: &Session,
        sql: &str,
        role: Role,
    ) -> Result<Option<(Arc<omendb_datafusion::Prepared>, ParamValues)>, Error> {
        let Some((shape, values)) = omendb_datafusion::sql::lift_vectors(sql) else {
            return Ok(None);
        };
        Ok(match self.statement(session, &shape, role).await {
            Ok(p) if p.searches_with(values.len()) => {
                let values = values.into_iter().map(Into::into).collect();
                Some((p, ParamValues::List(values)))
            }
            _ => None,
        })
    }

    /// The statement of `handle` planned in `session` and the values it runs with: those it
    /// carries, or the vectors typed into its text (see `shaped`).
    pub(super) async fn planned(
        &self,
        session: &Session,
        handle: &Handle,
        role: Role,
    ) -> Result<(Arc<omendb_datafusion::Prepared>, ParamValues), Error> {
        if handle.params.is_empty() {
            if let Some(run) = self.shaped(session, &handle.sql, role).await? {
                return Ok(run);
            }
        }
        let prepared = self.statement(session, &handle.sql, role).await?;
        let values = Self::bound(&prepared, handle)?;
        Ok((prepared, values))
    }

    /// Runs `prepared` with `values` to the end, within the server's limits.
    pub(super) async fn run_to_end(
        &self,
        prepared: &omendb_datafusion::Prepared,
        values: ParamValues,
    ) -> Result<Vec<RecordBatch>, Error> {
        let stream = prepared.execute(values).await?;
        let batches = limit_results(
            stream,
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
    pub(super) async fn describe_statement(
        &self,
        session: &Session,
        role: Role,
        mut handle: Handle,
        descriptor: FlightDescriptor,
        ticket: impl FnOnce(Vec<u8>) -> Vec<u8>,
    ) -> Result<FlightInfo, Error> {
        // The bound parameters are checked now, so a bad binding fails the execute call.
        let (prepared, values) = self.planned(session, &handle, role).await?;
        prepared.check_values(&values)?;
        let schema = Self::bound_schema(&prepared, &values)?;
        if !only_reads(prepared.logical_plan()) && handle.result.is_empty() {
            let batches = self.run_to_end(&prepared, values).await?;
            handle.result = to_ipc(&schema, &batches)?;
        }
        let ticket = Ticket::new(ticket(self.signer.encode(&handle)));
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(info
            .with_descriptor(descriptor)
            .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
            .with_ordered(true))
    }
}
