//! `omendb._omendb`: the engine and its SQL layer in the Python process. The `omendb` package
//! (python/omendb) wraps it: it turns DataFrames, numpy arrays and lists into Arrow before
//! they reach this module, so everything here takes Arrow (through the Arrow PyCapsule
//! interface, without a copy) or a float32 buffer, and returns pyarrow objects.
//!
//! Every call that reads or writes data releases the GIL. A database handle is shared by its
//! collections; `close` waits for the calls in flight and then releases the directory, and
//! every later call on the database or its collections fails with `omendb.Closed`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use arrow_array::ffi::FFI_ArrowArray;
use arrow_array::ffi_stream::ArrowArrayStreamReader;
use arrow_array::{make_array, Array, Float32Array, ListArray, RecordBatch, StructArray};
use arrow_data::ArrayData;
use arrow_pyarrow::{FromPyArrow, PyArrowType};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use omendb::{CollectionOptions, SearchRequest, SearchResults};
use omendb_udfs::Prepared;
use pyo3::buffer::PyBuffer;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyType};

create_exception!(
    omendb,
    Error,
    PyException,
    "Base class of every OmenDB error."
);
create_exception!(
    omendb,
    InvalidInput,
    Error,
    "The input was refused (schema, dimension, NaN, duplicate id, bad SQL, bad argument); nothing was written."
);
create_exception!(
    omendb,
    NotFound,
    Error,
    "A collection that does not exist was named."
);
create_exception!(
    omendb,
    AlreadyExists,
    Error,
    "A collection with that name exists already."
);
create_exception!(
    omendb,
    Corrupt,
    Error,
    "A file on disk is damaged; the message names it."
);
create_exception!(
    omendb,
    Locked,
    Error,
    "The database directory is open in another handle or process."
);
create_exception!(
    omendb,
    IoError,
    Error,
    "An operating-system I/O failure, with its path."
);
create_exception!(
    omendb,
    ArrowError,
    Error,
    "Arrow data could not be encoded or decoded."
);
create_exception!(
    omendb,
    Unsettled,
    Error,
    "A commit's outcome is unknown until the collection is opened again; it refuses writes meanwhile."
);
create_exception!(
    omendb,
    ResourceExhausted,
    Error,
    "A limit was reached (the message names the setting); nothing was written: retry later."
);
create_exception!(
    omendb,
    InternalError,
    Error,
    "A bug in OmenDB: an invariant did not hold."
);
create_exception!(omendb, Closed, Error, "The database handle was closed.");

/// The Python class of each kind of failure (no catch-all arm: a new kind fails to compile
/// here until it gets a class).
fn kind_err(kind: omendb::ErrorKind, msg: String) -> PyErr {
    use omendb::ErrorKind as K;
    match kind {
        K::InvalidInput => InvalidInput::new_err(msg),
        K::NotFound => NotFound::new_err(msg),
        K::AlreadyExists => AlreadyExists::new_err(msg),
        K::Corrupt => Corrupt::new_err(msg),
        K::Locked => Locked::new_err(msg),
        K::Io => IoError::new_err(msg),
        K::Arrow => ArrowError::new_err(msg),
        K::Unsettled => Unsettled::new_err(msg),
        K::ResourceExhausted => ResourceExhausted::new_err(msg),
        K::Internal => InternalError::new_err(msg),
    }
}

fn to_py(e: omendb::Error) -> PyErr {
    kind_err(e.kind(), e.to_string())
}

/// The Python exception for a SQL failure (engine errors inside keep their kind).
fn sql_err(e: DataFusionError) -> PyErr {
    let (kind, msg) = omendb_udfs::classify(&e);
    kind_err(kind, msg)
}

/// Every error kind with the name of its Python class: what `omendb._error_kinds()` gives
/// tests, to check the front ends agree.
#[pyfunction]
fn _error_kinds() -> Vec<(String, String)> {
    Python::attach(|py| {
        omendb::ErrorKind::ALL
            .iter()
            .map(|&k| {
                let class = kind_err(k, String::new()).get_type(py);
                let name = class.name().map(|n| n.to_string()).unwrap_or_default();
                (format!("{k:?}"), name)
            })
            .collect()
    })
}

fn invalid(msg: impl Into<String>) -> PyErr {
    InvalidInput::new_err(msg.into())
}

/// The runtime SQL statements run on (DataFusion is async); shared by every database.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("omendb-sql")
            .enable_all()
            .build()
            .expect("the SQL runtime starts")
    })
}

/// Statements with parameters are planned once per text and kept, up to this many per
/// database (then the cache starts afresh).
const PREPARED_CACHE: usize = 256;

/// What a database handle and its collections share.
struct Shared {
    path: String,
    db: RwLock<Option<Arc<omendb::Database>>>,
    sql: Mutex<Option<Sql>>,
    /// Result schemas already converted to pyarrow (see `py_schema`).
    schemas: Mutex<Vec<(SchemaRef, Py<PyAny>)>>,
}

/// The SQL session of a database and its planned statements.
struct Sql {
    ctx: SessionContext,
    prepared: HashMap<String, Arc<Prepared>>,
}

impl Shared {
    /// Runs `f` on the open database; the handle cannot close meanwhile.
    fn with<T>(&self, f: impl FnOnce(&Arc<omendb::Database>) -> PyResult<T>) -> PyResult<T> {
        let guard = self.db.read().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(db) => f(db),
            None => Err(Closed::new_err(format!("database {} is closed", self.path))),
        }
    }

    fn collection(&self, name: &str) -> PyResult<(Arc<omendb::Database>, Arc<omendb::Collection>)> {
        self.with(|db| Ok((db.clone(), db.collection(name).map_err(to_py)?)))
    }

    fn session(&self, db: &Arc<omendb::Database>) -> PyResult<SessionContext> {
        let mut sql = self.sql.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = sql.as_ref() {
            return Ok(s.ctx.clone());
        }
        let ctx = omendb_udfs::session(db.clone()).map_err(sql_err)?;
        *sql = Some(Sql {
            ctx: ctx.clone(),
            prepared: HashMap::new(),
        });
        Ok(ctx)
    }

    /// Forgets planned statements (a collection was created, dropped or replaced, so a plan
    /// may name what no longer is).
    fn forget_plans(&self) {
        if let Some(s) = self.sql.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            s.prepared.clear();
        }
    }

    /// The statement `text`, planned at its first use.
    async fn prepared(&self, ctx: &SessionContext, text: &str) -> PyResult<Arc<Prepared>> {
        if let Some(s) = self.sql.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            if let Some(p) = s.prepared.get(text) {
                return Ok(p.clone());
            }
        }
        let p = Arc::new(Prepared::new(ctx, text).await.map_err(sql_err)?);
        if let Some(s) = self.sql.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            if s.prepared.len() >= PREPARED_CACHE {
                s.prepared.clear();
            }
            s.prepared.insert(text.to_string(), p.clone());
        }
        Ok(p)
    }

    /// Runs `text`; with parameters the statement is planned once and only bound afterwards.
    fn run_sql(
        &self,
        db: &Arc<omendb::Database>,
        text: &str,
        params: Vec<ScalarValue>,
    ) -> PyResult<(Vec<RecordBatch>, SchemaRef)> {
        let ctx = self.session(db)?;
        runtime().block_on(async {
            if params.is_empty() {
                let plan = omendb_udfs::sql::logical_plan(&ctx.state(), text)
                    .await
                    .map_err(sql_err)?;
                let df = ctx.execute_logical_plan(plan).await.map_err(sql_err)?;
                let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
                let batches = df.collect().await.map_err(sql_err)?;
                return Ok((batches, schema));
            }
            let prepared = self.prepared(&ctx, text).await?;
            let values = ParamValues::List(params.into_iter().map(Into::into).collect());
            let stream = prepared.execute(values).await.map_err(sql_err)?;
            let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(sql_err)?;
            Ok((batches, prepared.schema()))
        })
    }
}

/// Python's `pyarrow` module, imported once.
fn pyarrow(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static PA: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    PA.get_or_try_init(py, || Ok(py.import("pyarrow")?.unbind()))
        .map(|m| m.bind(py))
}

/// How many result schemas a database keeps converted to pyarrow (a collection's search
/// results, batched and not, `get`, and recent SQL statements); past this the cache starts
/// afresh.
const SCHEMA_CACHE: usize = 16;

/// `schema` as a `pyarrow.Schema`, converted once per distinct schema: a search returns the
/// same schema every call, and converting it costs more than the rest of a small search. The
/// cache's lock is never held while Python code runs (which may hand the GIL to a thread
/// waiting for that lock).
fn py_schema<'py>(
    py: Python<'py>,
    shared: &Shared,
    schema: &SchemaRef,
) -> PyResult<Bound<'py, PyAny>> {
    let known = {
        let cache = shared.schemas.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .iter()
            .find(|(known, _)| Arc::ptr_eq(known, schema) || known == schema)
            .map(|(_, s)| s.clone_ref(py))
    };
    if let Some(s) = known {
        return Ok(s.into_bound(py));
    }
    let converted = PyArrowType(schema.as_ref().clone()).into_pyobject(py)?;
    let dropped = {
        let mut cache = shared.schemas.lock().unwrap_or_else(|e| e.into_inner());
        let dropped = if cache.len() >= SCHEMA_CACHE {
            std::mem::take(&mut *cache)
        } else {
            Vec::new()
        };
        cache.push((schema.clone(), converted.clone().unbind()));
        dropped
    };
    drop(dropped);
    Ok(converted)
}

/// `batches` as one `pyarrow.Table` of `schema`. Each batch crosses through the C Data
/// Interface: its array is exported and pyarrow moves it out (marking the exported struct
/// released, so dropping it afterwards frees nothing twice); the schema is the cached
/// pyarrow one, not exported again.
fn table_to_py<'py>(
    py: Python<'py>,
    shared: &Shared,
    batches: Vec<RecordBatch>,
    schema: SchemaRef,
) -> PyResult<Bound<'py, PyAny>> {
    let pa = pyarrow(py)?;
    let py_schema = py_schema(py, shared, &schema)?;
    let import = pa.getattr(intern!(py, "RecordBatch"))?;
    let list = PyList::empty(py);
    for b in batches {
        let b = if b.schema() == schema {
            b
        } else {
            b.with_schema(schema.clone())
                .map_err(|e| ArrowError::new_err(e.to_string()))?
        };
        let data = StructArray::from(b).into_data();
        let array = Box::new(FFI_ArrowArray::new(&data));
        let address = std::ptr::from_ref::<FFI_ArrowArray>(&array) as usize;
        list.append(
            import.call_method1(intern!(py, "_import_from_c"), (address, py_schema.clone()))?,
        )?;
    }
    pa.getattr(intern!(py, "Table"))?
        .call_method1(intern!(py, "from_batches"), (list, py_schema))
}

/// Reads every batch of an Arrow stream (anything with `__arrow_c_stream__`).
fn read_stream(data: &Bound<'_, PyAny>) -> PyResult<Vec<RecordBatch>> {
    let reader = ArrowArrayStreamReader::from_pyarrow_bound(data)?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ArrowError::new_err(e.to_string()))
}

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

/// The values of a float32 buffer (a C-contiguous numpy array or memoryview).
fn floats(py: Python<'_>, buf: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<f32>> {
    let buf = PyBuffer::<f32>::get(buf)
        .map_err(|e| invalid(format!("{what} must be a float32 buffer: {e}")))?;
    buf.to_vec(py)
}

/// A query vector as the SQL layer binds it: a list of float32.
fn vector_param(v: Vec<f32>) -> ScalarValue {
    let values = Float32Array::from(v);
    let field = Arc::new(Field::new_list_field(DataType::Float32, true));
    let offsets = arrow_buffer::OffsetBuffer::from_lengths([values.len()]);
    ScalarValue::List(Arc::new(ListArray::new(
        field,
        offsets,
        Arc::new(values),
        None,
    )))
}

/// A database directory opened in this process. Any number may be open at once, each on its
/// own directory.
#[pyclass(module = "omendb._omendb", frozen)]
struct Database {
    shared: Arc<Shared>,
}

#[pymethods]
impl Database {
    /// Opens (creating if needed) the database in directory `path`.
    #[new]
    fn new(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        let db = py.detach(|| omendb::Database::open(&path)).map_err(to_py)?;
        Ok(Database {
            shared: Arc::new(Shared {
                path: path.display().to_string(),
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

/// One collection of an open database.
#[pyclass(module = "omendb._omendb", frozen)]
struct Collection {
    shared: Arc<Shared>,
    name: String,
}

#[pymethods]
impl Collection {
    /// The collection's name.
    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    /// The vectors' dimension.
    #[getter]
    fn dim(&self, py: Python<'_>) -> PyResult<usize> {
        py.detach(|| Ok(self.shared.collection(&self.name)?.1.dim()))
    }

    /// The metric rows are ranked by.
    #[getter]
    fn metric(&self, py: Python<'_>) -> PyResult<String> {
        py.detach(|| Ok(self.shared.collection(&self.name)?.1.metric().to_string()))
    }

    /// The collection's Arrow schema.
    #[getter]
    fn schema(&self, py: Python<'_>) -> PyResult<PyArrowType<Schema>> {
        let schema =
            py.detach(|| Ok::<_, PyErr>(self.shared.collection(&self.name)?.1.schema()))?;
        Ok(PyArrowType(schema.as_ref().clone()))
    }

    /// Live rows.
    fn count(&self, py: Python<'_>) -> PyResult<usize> {
        py.detach(|| Ok(self.shared.collection(&self.name)?.1.count()))
    }

    /// Appends the Arrow stream `data` in one commit; returns the rows written.
    fn add(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        let batches = read_stream(data)?;
        py.detach(|| {
            let (_, c) = self.shared.collection(&self.name)?;
            c.append(&batches).map_err(to_py)
        })
    }

    /// Inserts or replaces (by id) the rows of the Arrow stream `data` in one commit.
    fn upsert(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        let batches = read_stream(data)?;
        py.detach(|| {
            let (_, c) = self.shared.collection(&self.name)?;
            c.upsert(&batches).map_err(to_py)
        })
    }

    /// The rows with ids `ids` (a pyarrow array), in the order asked; missing ids are skipped.
    fn get<'py>(
        &self,
        py: Python<'py>,
        ids: PyArrowType<ArrayData>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ids = make_array(ids.0);
        let batch = py.detach(|| {
            let (_, c) = self.shared.collection(&self.name)?;
            c.get(ids.as_ref()).map_err(to_py)
        })?;
        let schema = batch.schema();
        table_to_py(py, &self.shared, vec![batch], schema)
    }

    /// Deletes the rows with ids `ids` (a pyarrow array); returns how many there were.
    fn delete(&self, py: Python<'_>, ids: PyArrowType<ArrayData>) -> PyResult<usize> {
        let ids = make_array(ids.0);
        py.detach(|| {
            let (_, c) = self.shared.collection(&self.name)?;
            c.delete(ids.as_ref()).map_err(to_py)
        })
    }

    /// The `k` nearest rows to each of the `nq` query vectors in the float32 buffer `queries`,
    /// nearest first, with `_distance`; `where_` is a SQL condition on the collection's
    /// columns (planned once per text), `ef` the search beam, `nprobe` the IVF lists scanned.
    /// With `batched`, a leading `_query` column numbers the query each row answers.
    #[pyo3(signature = (queries, k, where_=None, ef=None, batched=false, nprobe=None))]
    #[allow(clippy::too_many_arguments)] // one per keyword of the Python method
    fn search<'py>(
        &self,
        py: Python<'py>,
        queries: &Bound<'py, PyAny>,
        k: usize,
        where_: Option<&str>,
        ef: Option<usize>,
        batched: bool,
        nprobe: Option<usize>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let q = floats(py, queries, "queries")?;
        if nprobe == Some(0) {
            return Err(invalid("nprobe must be a positive integer, got 0"));
        }
        let found = py.detach(|| match where_ {
            None => self.search_engine(&q, k, ef, nprobe),
            Some(cond) => self.search_sql(&q, k, cond, ef, nprobe),
        })?;
        let batch = if batched {
            found.numbered().map_err(to_py)?
        } else {
            found.into_rows()
        };
        let schema = batch.schema();
        table_to_py(py, &self.shared, vec![batch], schema)
    }

    /// Benchmark aid: the mean seconds of `repeat` engine searches of `queries` without
    /// Python (what a Rust caller pays: the collection lookup, the search and the result
    /// batch), to set beside the time of `search` called from Python.
    fn _engine_search_seconds(
        &self,
        py: Python<'_>,
        queries: &Bound<'_, PyAny>,
        k: usize,
        repeat: usize,
    ) -> PyResult<f64> {
        let q = floats(py, queries, "queries")?;
        let repeat = repeat.max(1);
        py.detach(|| {
            let start = std::time::Instant::now();
            for _ in 0..repeat {
                std::hint::black_box(self.search_engine(&q, k, None, None)?);
            }
            Ok(start.elapsed().as_secs_f64() / repeat as f64)
        })
    }

    /// Counts, sizes and settings, as JSON text.
    fn stats_json(&self, py: Python<'_>) -> PyResult<String> {
        py.detach(|| {
            let (_, c) = self.shared.collection(&self.name)?;
            let stats = c.stats().map_err(to_py)?;
            serde_json::to_string(&stats).map_err(|e| InternalError::new_err(e.to_string()))
        })
    }

    /// Indexes every unindexed segment with at least `min_rows` rows now (not in the
    /// background); returns how many indexes were built.
    #[pyo3(signature = (min_rows=0))]
    fn build_index(&self, py: Python<'_>, min_rows: usize) -> PyResult<usize> {
        py.detach(|| {
            let (_, c) = self.shared.collection(&self.name)?;
            c.build_index(min_rows).map_err(to_py)
        })
    }

    /// Waits for background index builds and merges.
    fn wait_for_indexing(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| {
            let (_, c) = self.shared.collection(&self.name)?;
            c.wait_for_indexing();
            Ok(())
        })
    }

    /// Merges segments and drops deleted rows; returns how many merges ran.
    fn compact(&self, py: Python<'_>) -> PyResult<usize> {
        py.detach(|| {
            let (_, c) = self.shared.collection(&self.name)?;
            c.compact().map_err(to_py)
        })
    }

    /// Changes settings (`ef_search`, `index_threshold`, ...) after creation.
    fn alter(&self, py: Python<'_>, settings: &Bound<'_, PyDict>) -> PyResult<()> {
        let mut changes = Vec::new();
        for (k, v) in settings.iter() {
            changes.push((k.extract::<String>()?, v.str()?.to_string()));
        }
        py.detach(|| {
            let (_, c) = self.shared.collection(&self.name)?;
            let pairs: Vec<(&str, &str)> = changes
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            c.alter(&pairs).map_err(to_py)?;
            Ok(())
        })
    }

    fn __repr__(&self) -> String {
        format!("omendb.Collection({:?})", self.name)
    }
}

impl Collection {
    /// Searches through the engine: every query in one call. Returns the rows and how many
    /// answer each query.
    fn search_engine(
        &self,
        q: &[f32],
        k: usize,
        ef: Option<usize>,
        nprobe: Option<usize>,
    ) -> PyResult<SearchResults> {
        let (_, c) = self.shared.collection(&self.name)?;
        c.snapshot()
            .search_rows(&SearchRequest::new(q, k).ef(ef).nprobe(nprobe))
            .map_err(to_py)
    }

    /// Searches through SQL, `SELECT * FROM knn(..) WHERE cond`, planned once per condition;
    /// one run per query.
    fn search_sql(
        &self,
        q: &[f32],
        k: usize,
        cond: &str,
        ef: Option<usize>,
        nprobe: Option<usize>,
    ) -> PyResult<SearchResults> {
        self.shared.with(|db| {
            let c = db.collection(&self.name).map_err(to_py)?;
            let dim = c.dim();
            omendb::check_queries(q, dim).map_err(to_py)?;
            let k = i64::try_from(k).map_err(|_| invalid(format!("k {k} is too large")))?;
            // knn()'s arguments are positional: nprobe comes after ef (the collection's when
            // not given).
            let ef = ef.or_else(|| nprobe.map(|_| c.snapshot().index_settings().ef_search));
            let text = match (ef, nprobe) {
                (_, Some(_)) => format!(
                    "SELECT * FROM knn('{}', $1, $2, $3, $4) WHERE ({cond})",
                    self.name
                ),
                (Some(_), None) => format!(
                    "SELECT * FROM knn('{}', $1, $2, $3) WHERE ({cond})",
                    self.name
                ),
                (None, None) => {
                    format!("SELECT * FROM knn('{}', $1, $2) WHERE ({cond})", self.name)
                }
            };
            let mut batches = Vec::new();
            let mut per_query = Vec::new();
            let mut schema = None;
            for query in q.chunks(dim) {
                let mut params = vec![vector_param(query.to_vec()), ScalarValue::Int64(Some(k))];
                for knob in [ef, nprobe].into_iter().flatten() {
                    params.push(ScalarValue::Int64(Some(knob as i64)));
                }
                let (got, s) = self.shared.run_sql(db, &text, params)?;
                per_query.push(got.iter().map(RecordBatch::num_rows).sum());
                batches.extend(got);
                schema = Some(s);
            }
            let schema = schema.expect("at least one query");
            let batch = datafusion::arrow::compute::concat_batches(&schema, &batches)
                .map_err(|e| ArrowError::new_err(e.to_string()))?;
            SearchResults::new(batch, per_query).map_err(to_py)
        })
    }
}

/// The native module.
#[pymodule]
fn _omendb(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Database>()?;
    m.add_class::<Collection>()?;
    m.add_function(wrap_pyfunction!(_error_kinds, m)?)?;
    let errors: [(&str, Bound<'_, PyType>); 12] = [
        ("Error", py.get_type::<Error>()),
        ("InvalidInput", py.get_type::<InvalidInput>()),
        ("NotFound", py.get_type::<NotFound>()),
        ("AlreadyExists", py.get_type::<AlreadyExists>()),
        ("Corrupt", py.get_type::<Corrupt>()),
        ("Locked", py.get_type::<Locked>()),
        ("IoError", py.get_type::<IoError>()),
        ("ArrowError", py.get_type::<ArrowError>()),
        ("Unsettled", py.get_type::<Unsettled>()),
        ("ResourceExhausted", py.get_type::<ResourceExhausted>()),
        ("InternalError", py.get_type::<InternalError>()),
        ("Closed", py.get_type::<Closed>()),
    ];
    for (name, ty) in errors {
        m.add(name, ty)?;
    }
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
