//! What handles point to: an open database (closed under its users), a collection by its
//! database and name, and a search's result.

use std::sync::{Arc, RwLock};

use arrow_array::RecordBatch;

use crate::error::{Failure, Outcome};
use crate::omendb_status::*;

/// A database that closes under its users: calls hold the read side while they run.
pub(crate) struct OpenDb {
    pub(crate) path: String,
    pub(crate) db: RwLock<Option<Arc<omendb::Database>>>,
}

impl OpenDb {
    pub(crate) fn with<T>(&self, f: impl FnOnce(&omendb::Database) -> Outcome<T>) -> Outcome<T> {
        let guard = self.db.read().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(db) => f(db),
            None => Err(Failure(
                OMENDB_ERR_CLOSED,
                format!("database {} is closed", self.path),
            )),
        }
    }
}

/// A collection handle's object: its database and name (looked up per call, so a closed
/// database or a dropped collection is noticed).
pub(crate) struct CollectionRef {
    pub(crate) db: Arc<OpenDb>,
    pub(crate) name: String,
}

impl CollectionRef {
    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&Arc<omendb::Collection>) -> Outcome<T>,
    ) -> Outcome<T> {
        self.db.with(|db| f(&db.collection(&self.name)?))
    }
}

/// A search's rows (with a leading `_query` column) and where each query's rows start.
pub(crate) struct Found {
    pub(crate) batch: RecordBatch,
    /// The id column's position in `batch`.
    pub(crate) id_column: usize,
    pub(crate) starts: Vec<usize>,
}
