//! What a database handle shares with its collections: the engine's database (until
//! `close`), its SQL session with the statements planned so far, and the result schemas
//! already converted to pyarrow.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use arrow_schema::SchemaRef;
use datafusion::prelude::SessionContext;
use omendb_datafusion::Prepared;
use pyo3::prelude::*;

use crate::error::{to_py, Closed};

/// The SQL session of a database and its planned statements.
pub(crate) struct Sql {
    pub(crate) ctx: SessionContext,
    pub(crate) prepared: HashMap<String, Arc<Prepared>>,
}

/// What a database handle and its collections share.
pub(crate) struct Shared {
    pub(crate) path: String,
    pub(crate) db: RwLock<Option<Arc<omendb::Database>>>,
    pub(crate) sql: Mutex<Option<Sql>>,
    /// Result schemas already converted to pyarrow (see `py_schema`).
    pub(crate) schemas: Mutex<Vec<(SchemaRef, Py<PyAny>)>>,
}

impl Shared {
    /// Runs `f` on the open database; the handle cannot close meanwhile.
    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&Arc<omendb::Database>) -> PyResult<T>,
    ) -> PyResult<T> {
        let guard = self.db.read().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(db) => f(db),
            None => Err(Closed::new_err(format!("database {} is closed", self.path))),
        }
    }

    pub(crate) fn collection(
        &self,
        name: &str,
    ) -> PyResult<(Arc<omendb::Database>, Arc<omendb::Collection>)> {
        self.with(|db| Ok((db.clone(), db.collection(name).map_err(to_py)?)))
    }
}
