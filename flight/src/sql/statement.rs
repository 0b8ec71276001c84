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
use crate::error::df_status;
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
    ) -> Result<Arc<omendb_udfs::Prepared>, Status> {
        let timeout = self.config.query_timeout;
        let prepared = tokio::time::timeout(timeout, session.statement(sql))
            .await
            .unwrap_or_else(|_| Err(timed_out(timeout)))?;
        self.files.check_plan(prepared.logical_plan(), role)?;
        Ok(prepared)
    }

    /// Runs `prepared` with `values` to the end, within the server's limits.
    pub(super) async fn run_to_end(
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
    pub(super) async fn describe_statement(
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
}
