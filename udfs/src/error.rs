//! Errors across the DataFusion boundary: engine errors travel inside DataFusion errors and
//! keep their kind, and [`classify`] is the one place a DataFusion error gets an engine
//! [`ErrorKind`], so every front end reports the same failure the same way.

use datafusion::error::DataFusionError;
use omendb::ErrorKind;

/// Wraps an engine error so callers can recover it (and its kind) from a DataFusion error.
pub(crate) fn engine_error(e: omendb::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The message of `e` for a user, without the context DataFusion wraps around an analyzer or
/// optimizer rule's error (`omendb_knn_bind\ncaused by\n...`): what went wrong, not where.
pub(crate) fn error_message(e: &DataFusionError) -> String {
    match e {
        DataFusionError::Context(_, inner) => error_message(inner),
        other => other.to_string(),
    }
}

/// The engine error inside a DataFusion error, if there is one.
pub fn find_engine_error(e: &DataFusionError) -> Option<&omendb::Error> {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    loop {
        if let Some(DataFusionError::External(inner)) = cur.downcast_ref::<DataFusionError>() {
            if let Some(engine) = inner.downcast_ref::<omendb::Error>() {
                return Some(engine);
            }
        }
        if let Some(engine) = cur.downcast_ref::<omendb::Error>() {
            return Some(engine);
        }
        cur = cur.source()?;
    }
}

/// The kind and the user's message of a failed statement. An engine error inside keeps its
/// kind and message; a table that does not exist is `NotFound`; a statement that does not
/// parse, plan, type-check or run on its input is the caller's `InvalidInput`; a query past
/// its memory limit is `ResourceExhausted`; Arrow failures are `Arrow`; the rest `Internal`.
pub fn classify(e: &DataFusionError) -> (ErrorKind, String) {
    if let Some(engine) = find_engine_error(e) {
        return (engine.kind(), engine.to_string());
    }
    let msg = error_message(e);
    let kind = match e.find_root() {
        DataFusionError::Plan(m) if is_missing_table(m) => ErrorKind::NotFound,
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Execution(_) => ErrorKind::InvalidInput,
        DataFusionError::ResourcesExhausted(_) => ErrorKind::ResourceExhausted,
        DataFusionError::ArrowError(..) => ErrorKind::Arrow,
        _ => ErrorKind::Internal,
    };
    (kind, msg)
}

/// Whether a planning error says a table does not exist (DataFusion has no kind for it:
/// "table 'x' not found").
fn is_missing_table(message: &str) -> bool {
    message.starts_with("table '") && message.ends_with("' not found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_table_is_not_found_and_bad_sql_is_invalid_input() {
        let ctx = datafusion::prelude::SessionContext::new();
        let missing = ctx.sql("SELECT * FROM nowhere").await.unwrap_err();
        assert_eq!(classify(&missing).0, ErrorKind::NotFound, "{missing}");
        let bad = ctx.sql("SELEC 1").await.unwrap_err();
        assert_eq!(classify(&bad).0, ErrorKind::InvalidInput, "{bad}");
        let wrapped = engine_error(omendb::Error::Locked("/x".into()));
        assert_eq!(classify(&wrapped).0, ErrorKind::Locked);
    }
}
