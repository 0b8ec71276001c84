//! Arrow between pyarrow and arrow-rs: reading streams in, handing tables out, and reading
//! float32 buffers.

use std::sync::Arc;

use arrow_array::ffi::FFI_ArrowArray;
use arrow_array::ffi_stream::ArrowArrayStreamReader;
use arrow_array::{Array, RecordBatch, StructArray};
use arrow_pyarrow::{FromPyArrow, PyArrowType};
use arrow_schema::SchemaRef;
use pyo3::buffer::PyBuffer;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyList;

use crate::error::{invalid, ArrowError};
use crate::shared::Shared;

/// Python's `pyarrow` module, imported once.
pub(crate) fn pyarrow(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
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
pub(crate) fn py_schema<'py>(
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
pub(crate) fn table_to_py<'py>(
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
pub(crate) fn read_stream(data: &Bound<'_, PyAny>) -> PyResult<Vec<RecordBatch>> {
    let reader = ArrowArrayStreamReader::from_pyarrow_bound(data)?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ArrowError::new_err(e.to_string()))
}

/// The values of a float32 buffer (a C-contiguous numpy array or memoryview).
pub(crate) fn floats(py: Python<'_>, buf: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<f32>> {
    let buf = PyBuffer::<f32>::get(buf)
        .map_err(|e| invalid(format!("{what} must be a float32 buffer: {e}")))?;
    buf.to_vec(py)
}
