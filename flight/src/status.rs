//! The one mapping from engine, DataFusion and Flight errors to gRPC statuses.

use arrow_flight::error::FlightError;
use datafusion::error::DataFusionError;
use tonic::Status;

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
        E::Io { .. } | E::Arrow(_) | E::Internal(_) => Status::internal(msg),
        // Kinds added to the engine later: an internal error until they get their own code.
        _ => Status::internal(msg),
    }
}

/// The gRPC status for a DataFusion error (engine errors inside keep their kind).
pub fn df_status(e: DataFusionError) -> Status {
    if let Some(engine) = omendb_udfs::find_engine_error(&e) {
        return engine_status(engine);
    }
    let msg = omendb_udfs::error_message(&e);
    match e.find_root() {
        DataFusionError::Plan(m) if m.contains("not found") => Status::not_found(msg),
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_) => Status::invalid_argument(msg),
        DataFusionError::Execution(_) => Status::invalid_argument(msg),
        DataFusionError::ResourcesExhausted(_) => Status::resource_exhausted(format!(
            "the query needs more memory than the server's query memory limit \
             (--query-memory) leaves it: {msg}"
        )),
        _ => Status::internal(msg),
    }
}

/// The gRPC status for a Flight decoding error: the client sent something malformed.
pub fn flight_status(e: FlightError) -> Status {
    match e {
        FlightError::Tonic(s) => *s,
        FlightError::Arrow(e) => Status::invalid_argument(format!("malformed Arrow data: {e}")),
        FlightError::DecodeError(m) | FlightError::ProtocolError(m) => {
            Status::invalid_argument(format!("malformed Flight stream: {m}"))
        }
        other => Status::internal(other.to_string()),
    }
}

/// The status for a panic caught in a handler: a bug, reported without taking the process
/// down.
pub fn panic_status(what: &str, panic: Box<dyn std::any::Any + Send>) -> Status {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    Status::internal(format!("internal error in {what}: {msg}"))
}
