//! The `omendb` exception classes and the mapping of engine and SQL failures onto them.

use datafusion::error::DataFusionError;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

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
    Conflict,
    Error,
    "Another writer committed to the collection first; nothing was written: retry."
);
create_exception!(
    omendb,
    Unavailable,
    Error,
    "The storage could not be reached (object storage's endpoint did not answer); retry."
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
pub(crate) fn kind_err(kind: omendb::ErrorKind, msg: String) -> PyErr {
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
        K::Conflict => Conflict::new_err(msg),
        K::Unavailable => Unavailable::new_err(msg),
        K::Internal => InternalError::new_err(msg),
    }
}

pub(crate) fn to_py(e: omendb::Error) -> PyErr {
    kind_err(e.kind(), e.to_string())
}

/// The Python exception for a SQL failure (engine errors inside keep their kind).
pub(crate) fn sql_err(e: DataFusionError) -> PyErr {
    let (kind, msg) = omendb_datafusion::classify(&e);
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

pub(crate) fn invalid(msg: impl Into<String>) -> PyErr {
    InvalidInput::new_err(msg.into())
}

/// Adds `_error_kinds` and every exception class to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_error_kinds, m)?)?;
    macro_rules! add_classes {
        ($($class:ident),* $(,)?) => {
            $(m.add(stringify!($class), m.py().get_type::<$class>())?;)*
        };
    }
    add_classes!(
        Error,
        InvalidInput,
        NotFound,
        AlreadyExists,
        Corrupt,
        Locked,
        IoError,
        ArrowError,
        Unsettled,
        ResourceExhausted,
        Conflict,
        Unavailable,
        InternalError,
        Closed,
    );
    Ok(())
}
