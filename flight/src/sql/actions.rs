//! The Flight SQL actions: prepared statements are created and closed here; transactions,
//! savepoints, Substrait plans and cancelling are refused.

use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, ProstMessageExt,
};
use arrow_flight::{Action, IpcMessage, SchemaAsIpc};
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use prost::Message;
use tonic::{Request, Status};

use crate::auth::Role;
use crate::OmenFlight;

use super::prepared::parameter_schema;
use super::{ipc_error, refuse_transaction, Handle};

const CREATE_PREPARED_STATEMENT: &str = "CreatePreparedStatement";
const CLOSE_PREPARED_STATEMENT: &str = "ClosePreparedStatement";
const CREATE_PREPARED_SUBSTRAIT_PLAN: &str = "CreatePreparedSubstraitPlan";
const BEGIN_TRANSACTION: &str = "BeginTransaction";
const END_TRANSACTION: &str = "EndTransaction";
const BEGIN_SAVEPOINT: &str = "BeginSavepoint";
const END_SAVEPOINT: &str = "EndSavepoint";
const CANCEL_QUERY: &str = "CancelQuery";

/// The Flight SQL actions (the rest of the action names are plain Flight's, see
/// [`crate::actions`]).
pub(crate) const ACTIONS: [&str; 8] = [
    CREATE_PREPARED_STATEMENT,
    CLOSE_PREPARED_STATEMENT,
    CREATE_PREPARED_SUBSTRAIT_PLAN,
    BEGIN_TRANSACTION,
    END_TRANSACTION,
    BEGIN_SAVEPOINT,
    END_SAVEPOINT,
    CANCEL_QUERY,
];

impl OmenFlight {
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
            CREATE_PREPARED_STATEMENT => {
                let req: ActionCreatePreparedStatementRequest = body
                    .unpack()
                    .map_err(unpack_error)?
                    .ok_or_else(|| Status::invalid_argument("expected a prepare request"))?;
                refuse_transaction(req.transaction_id.as_ref())?;
                // A plain search with its vectors typed in: described by the plan kept for its
                // shape, and it takes no parameters (its runs bind the typed vectors).
                let (prepared, parameters) = match self.shaped(&session, &req.query, role).await? {
                    Some((p, _)) => (p, Schema::empty()),
                    None => {
                        let p = self.statement(&session, &req.query, role).await?;
                        let parameters = parameter_schema(&p);
                        (p, parameters)
                    }
                };
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
                    parameter_schema: schema_bytes(&parameters)?.into(),
                };
                Ok(vec![arrow_flight::Result {
                    body: result.as_any().encode_to_vec().into(),
                }])
            }
            CLOSE_PREPARED_STATEMENT => {
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
            BEGIN_TRANSACTION | END_TRANSACTION | BEGIN_SAVEPOINT | END_SAVEPOINT => {
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
