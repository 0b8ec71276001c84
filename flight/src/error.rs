//! The one mapping from engine, DataFusion and Flight errors to gRPC statuses: handlers raise
//! any of them with `?` into [`Error`], which becomes a `Status` here and nowhere else.

use arrow_flight::error::FlightError;
use datafusion::error::DataFusionError;
use omendb::ErrorKind;
use tonic::Status;

/// A handler's failure, whatever raised it (IOx's local error with `From` impls: the orphan
/// rule forbids `From<omendb::Error> for Status`, so handlers and the blocking work they
/// start return this and `?` converts).
#[derive(Debug)]
pub(crate) enum Error {
    /// The engine refused or failed.
    Engine(omendb::Error),
    /// A statement failed to plan or run.
    Sql(DataFusionError),
    /// A Flight stream was malformed.
    Flight(FlightError),
    /// A status decided by the handler itself.
    Status(Status),
}

impl From<omendb::Error> for Error {
    fn from(e: omendb::Error) -> Self {
        Error::Engine(e)
    }
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        Error::Sql(e)
    }
}

impl From<FlightError> for Error {
    fn from(e: FlightError) -> Self {
        Error::Flight(e)
    }
}

impl From<Status> for Error {
    fn from(s: Status) -> Self {
        Error::Status(s)
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        match e {
            Error::Engine(e) => engine_status(&e),
            Error::Sql(e) => df_status(e),
            Error::Flight(e) => flight_status(e),
            Error::Status(s) => s,
        }
    }
}

/// The gRPC status of each kind of failure: the one table every handler's errors go
/// through (no catch-all arm: a new kind fails to compile here until it gets a code).
pub(crate) fn kind_status(kind: ErrorKind, msg: String) -> Status {
    match kind {
        ErrorKind::InvalidInput => Status::invalid_argument(msg),
        ErrorKind::NotFound => Status::not_found(msg),
        ErrorKind::AlreadyExists => Status::already_exists(msg),
        ErrorKind::Corrupt => Status::data_loss(msg),
        ErrorKind::Locked => Status::failed_precondition(msg),
        ErrorKind::ResourceExhausted => Status::resource_exhausted(msg),
        // Nothing was written; the caller retries on the newer version.
        ErrorKind::Conflict => Status::aborted(msg),
        ErrorKind::Unavailable => Status::unavailable(msg),
        // The write may or may not have happened: not a code that invites a blind retry.
        ErrorKind::Unsettled => Status::unknown(msg),
        ErrorKind::Io | ErrorKind::Arrow | ErrorKind::Internal => Status::internal(msg),
    }
}

/// The gRPC status for an engine error.
pub(crate) fn engine_status(e: &omendb::Error) -> Status {
    kind_status(e.kind(), e.to_string())
}

/// The gRPC status for a DataFusion error (engine errors inside keep their kind).
fn df_status(e: DataFusionError) -> Status {
    let (kind, msg) = omendb_datafusion::classify(&e);
    let msg = match (kind, omendb_datafusion::find_engine_error(&e)) {
        (ErrorKind::ResourceExhausted, None) => format!(
            "the query needs more memory than the server's query memory limit \
             (--query-memory) leaves it: {msg}"
        ),
        _ => msg,
    };
    kind_status(kind, msg)
}

/// The gRPC status for a Flight decoding error: the client sent something malformed.
pub(crate) fn flight_status(e: FlightError) -> Status {
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
pub(crate) fn panic_status(what: &str, panic: Box<dyn std::any::Any + Send>) -> Status {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    Status::internal(format!("internal error in {what}: {msg}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of `docs/errors.md`'s table: kind, gRPC status, Python class, C status.
    fn documented() -> Vec<Vec<String>> {
        include_str!("../../docs/errors.md")
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| kind"))
            .map(|l| {
                l.trim_matches('|')
                    .split('|')
                    .map(|c| c.trim().trim_matches('`').to_string())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn every_kind_gets_the_documented_grpc_status() {
        let rows = documented();
        assert_eq!(rows.len(), ErrorKind::ALL.len(), "one row per kind");
        for kind in ErrorKind::ALL {
            let row = rows
                .iter()
                .find(|r| r[0] == format!("{kind:?}"))
                .unwrap_or_else(|| panic!("docs/errors.md has no row for {kind:?}"));
            let code = kind_status(kind, String::new()).code();
            let name = format!("{code:?}");
            // tonic spells codes in CamelCase; the table in gRPC's SCREAMING_CASE.
            let screaming: String = name
                .chars()
                .enumerate()
                .flat_map(|(i, c)| {
                    let sep = (i > 0 && c.is_uppercase()).then_some('_');
                    sep.into_iter().chain(c.to_uppercase())
                })
                .collect();
            assert_eq!(screaming, row[2], "{kind:?}");
        }
    }

    #[test]
    fn a_missing_table_is_not_found_over_flight() {
        let e = DataFusionError::Plan("table 'datafusion.public.nowhere' not found".into());
        assert_eq!(df_status(e).code(), tonic::Code::NotFound);
    }
}
