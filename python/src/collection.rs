//! The `Collection` class: one collection of an open database.

use std::sync::Arc;

use arrow_array::{make_array, RecordBatch};
use arrow_data::ArrayData;
use arrow_pyarrow::PyArrowType;
use arrow_schema::Schema;
use omendb::{SearchRequest, SearchResults};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::arrow::{floats, read_stream, table_to_py};
use crate::error::{invalid, to_py, ArrowError, InternalError};
use crate::shared::Shared;

/// One collection of an open database.
#[pyclass(module = "omendb._omendb", frozen)]
pub(crate) struct Collection {
    pub(crate) shared: Arc<Shared>,
    pub(crate) name: String,
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
    /// columns (planned once per text), `ef` the search beam, `nprobe` the IVF lists scanned,
    /// `fast` only the indexed rows. With `batched`, a leading `_query` column numbers the
    /// query each row answers.
    #[pyo3(signature = (queries, k, where_=None, ef=None, batched=false, nprobe=None, fast=false))]
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
        fast: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let q = floats(py, queries, "queries")?;
        if nprobe == Some(0) {
            return Err(invalid("nprobe must be a positive integer, got 0"));
        }
        let found = py.detach(|| match where_ {
            None => self.search_engine(SearchRequest::new(&q, k).ef(ef).nprobe(nprobe).fast(fast)),
            Some(cond) => self.search_sql(&q, k, cond, ef, nprobe, fast),
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
                std::hint::black_box(self.search_engine(SearchRequest::new(&q, k))?);
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
    fn search_engine(&self, req: SearchRequest<'_>) -> PyResult<SearchResults> {
        let (_, c) = self.shared.collection(&self.name)?;
        c.snapshot().search_rows(&req).map_err(to_py)
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
        fast: bool,
    ) -> PyResult<SearchResults> {
        self.shared.with(|db| {
            let c = db.collection(&self.name).map_err(to_py)?;
            let dim = c.dim();
            omendb::check_queries(q, dim).map_err(to_py)?;
            let k = i64::try_from(k).map_err(|_| invalid(format!("k {k} is too large")))?;
            let search =
                omendb_datafusion::FilteredSearch::new(&self.name, cond, k, ef, nprobe, fast);
            let mut batches = Vec::new();
            let mut per_query = Vec::new();
            let mut schema = None;
            for query in q.chunks(dim) {
                let (got, s) = self.shared.run_sql(db, &search.sql, search.values(query))?;
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
