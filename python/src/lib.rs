//! `omendb._omendb`: the engine and its SQL layer in the Python process. The `omendb` package
//! (python/omendb) wraps it: it turns DataFrames, numpy arrays and lists into Arrow before
//! they reach this module, so everything here takes Arrow (through the Arrow PyCapsule
//! interface, without a copy) or a float32 buffer, and returns pyarrow objects.
//!
//! Every call that reads or writes data releases the GIL. A database handle is shared by its
//! collections; `close` waits for the calls in flight and then releases the directory, and
//! every later call on the database or its collections fails with `omendb.Closed`.

mod arrow;
mod collection;
mod database;
mod error;
mod plugin;
mod runtime;
mod shared;

use pyo3::prelude::*;

use crate::collection::Collection;
use crate::database::Database;

/// The collection settings, one `  key: about` line each (only those `alter` changes, with
/// `alterable`): the engine's one table, which the package's docstrings are made from.
#[pyfunction]
#[pyo3(signature = (alterable=false))]
fn _settings_help(alterable: bool) -> String {
    omendb::settings_help(alterable)
}

/// The native module.
#[pymodule]
fn _omendb(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Database>()?;
    m.add_class::<Collection>()?;
    error::register(m)?;
    m.add_function(wrap_pyfunction!(_settings_help, m)?)?;
    m.add_class::<plugin::DataFusionTable>()?;
    m.add_class::<plugin::DataFusionKnn>()?;
    m.add_class::<plugin::DataFusionDistance>()?;
    m.add_function(wrap_pyfunction!(plugin::_datafusion_ffi_version, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
