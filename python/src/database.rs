//! The `Database` class and the state a database handle shares with its collections.

use std::sync::{Arc, Mutex, RwLock};

use arrow_array::{make_array, Array};
use arrow_data::ArrayData;
use arrow_pyarrow::PyArrowType;
use arrow_schema::Schema;
use datafusion::common::ScalarValue;
use omendb::CollectionOptions;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::arrow::{read_stream, table_to_py};
use crate::collection::Collection;
use crate::error::{invalid, sql_err, to_py};
use crate::shared::Shared;

/// Collection options from a dict of `key: value` (the server's `key=value` options).
fn options(opts: Option<&Bound<'_, PyDict>>) -> PyResult<CollectionOptions> {
    let mut out = CollectionOptions::default();
    if let Some(opts) = opts {
        for (k, v) in opts.iter() {
            let key: String = k.extract()?;
            let value = v.str()?.to_string();
            out.set(&key, &value).map_err(to_py)?;
        }
    }
    Ok(out)
}

/// A database directory opened in this process. Any number may be open at once, each on its
/// own directory.
#[pyclass(module = "omendb._omendb", frozen)]
pub(crate) struct Database {
    shared: Arc<Shared>,
}

impl Database {
    /// What the handle shares with its collections (and with the objects it exports to other
    /// DataFusion sessions).
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

#[pymethods]
impl Database {
    /// Opens (creating if needed) the database at `path`: a directory, or object storage as
    /// a URL, with `storage_options` for its client and its files cached under `cache_dir`,
    /// at most `cache_size` bytes of them.
    #[new]
    #[pyo3(signature = (path, storage_options=None, cache_dir=None, cache_size=None))]
    fn new(
        py: Python<'_>,
        path: String,
        storage_options: Option<std::collections::HashMap<String, String>>,
        cache_dir: Option<std::path::PathBuf>,
        cache_size: Option<u64>,
    ) -> PyResult<Self> {
        let options: Vec<(String, String)> =
            storage_options.unwrap_or_default().into_iter().collect();
        let cache = omendb_object::Cache {
            dir: cache_dir,
            max_bytes: cache_size,
        };
        let db = py
            .detach(|| omendb_object::open(&path, &options, &cache))
            .map_err(to_py)?;
        Ok(Database {
            shared: Arc::new(Shared {
                path: path.clone(),
                db: RwLock::new(Some(Arc::new(db))),
                sql: Mutex::new(None),
                schemas: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The database's directory.
    #[getter]
    fn path(&self) -> String {
        self.shared.path.clone()
    }

    /// Whether `close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.shared
            .db
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// Waits for calls in flight and background index builds, then releases the directory.
    /// Closing twice is allowed.
    fn close(&self, py: Python<'_>) {
        py.detach(|| {
            let mut db = self.shared.db.write().unwrap_or_else(|e| e.into_inner());
            if let Some(open) = db.take() {
                // The session holds the database too: drop it first.
                *self.shared.sql.lock().unwrap_or_else(|e| e.into_inner()) = None;
                open.close(true);
                drop(open);
            }
        })
    }

    /// Names of the collections, sorted.
    fn list_collections(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        py.detach(|| self.shared.with(|db| db.list_collections().map_err(to_py)))
    }

    /// Creates an empty collection with `schema`; `options` as the server takes them
    /// (`metric`, `id`, `vector`, `index`, `m`, ...).
    #[pyo3(signature = (name, schema, options=None))]
    fn create_collection(
        &self,
        py: Python<'_>,
        name: &str,
        schema: PyArrowType<Schema>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let opts = self::options(options)?;
        py.detach(|| {
            self.shared.with(|db| {
                db.create_collection(name, &schema.0, opts).map_err(to_py)?;
                Ok(())
            })
        })?;
        self.shared.forget_plans();
        Ok(())
    }

    /// Writes the Arrow stream `data` to collection `name` in one commit, in `mode`: `create`,
    /// `append`, `create_or_append`, `upsert` or `replace` (the engine's `WriteMode`, enforced
    /// at the commit); a collection it creates gets `options`. Returns the rows written.
    #[pyo3(signature = (name, data, mode, options=None))]
    fn write(
        &self,
        py: Python<'_>,
        name: &str,
        data: &Bound<'_, PyAny>,
        mode: &str,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<usize> {
        let opts = self::options(options)?;
        let mode: omendb::WriteMode = mode.parse().map_err(to_py)?;
        let batches = read_stream(data)?;
        let rows = py.detach(|| {
            self.shared.with(|db| {
                let mut ingest = db.ingest(name, mode, opts).map_err(to_py)?;
                for b in &batches {
                    ingest.push(b).map_err(to_py)?;
                }
                Ok(ingest.commit().map_err(to_py)?.1)
            })
        })?;
        self.shared.forget_plans();
        Ok(rows)
    }

    /// Checks that collection `name` exists and opens it (its files are mapped once).
    fn open_collection(&self, py: Python<'_>, name: &str) -> PyResult<Collection> {
        py.detach(|| self.shared.collection(name))?;
        Ok(Collection {
            shared: self.shared.clone(),
            name: name.to_string(),
        })
    }

    /// Drops collection `name` and its files.
    fn drop_collection(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        py.detach(|| {
            self.shared
                .with(|db| db.drop_collection(name).map_err(to_py))
        })?;
        self.shared.forget_plans();
        Ok(())
    }

    /// Runs one SQL statement (the server's SQL: `knn()`, distance functions, DML) with
    /// `params` bound to `$1, $2, ...` (each a one-row pyarrow array), and returns its rows as
    /// a `pyarrow.Table`. A statement with parameters is planned at its first run and only
    /// bound afterwards.
    #[pyo3(signature = (query, params=Vec::new()))]
    fn sql<'py>(
        &self,
        py: Python<'py>,
        query: &str,
        params: Vec<PyArrowType<ArrayData>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let values = params
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let array = make_array(p.0);
                if array.len() != 1 {
                    return Err(invalid(format!(
                        "parameter ${} has {} values; expected one",
                        i + 1,
                        array.len()
                    )));
                }
                ScalarValue::try_from_array(&array, 0).map_err(sql_err)
            })
            .collect::<PyResult<Vec<_>>>()?;
        let (batches, schema) = py.detach(|| {
            self.shared
                .with(|db| self.shared.run_sql(db, query, values))
        })?;
        table_to_py(py, &self.shared, batches, schema)
    }

    fn __repr__(&self) -> String {
        format!("omendb.Database({:?})", self.shared.path)
    }
}
