//! OmenDB in a DataFusion session of another library (datafusion-python's
//! `SessionContext`): the objects `omendb.datafusion.register` hands it, each exported
//! through DataFusion's FFI (`datafusion-ffi`) as the PyCapsule datafusion-python asks for
//! (`__datafusion_table_provider__`, `__datafusion_table_function__`,
//! `__datafusion_scalar_udf__`). They reach the database through the handle's shared state,
//! so a closed database fails their calls rather than staying open behind the session.

use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

use arrow_schema::SchemaRef;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::filter::FilterExecBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_ffi::proto::logical_extension_codec::FFI_LogicalExtensionCodec;
use datafusion_ffi::table_provider::{FFI_TableProvider, ForeignTableProvider};
use datafusion_ffi::udf::FFI_ScalarUDF;
use datafusion_ffi::udtf::FFI_TableFunction;
use omendb_datafusion::{pushed_filter, KnnFunction, KnnLimits};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

use crate::database::Database;
use crate::error::to_py;
use crate::runtime::runtime;
use crate::shared::Shared;

/// The major DataFusion version whose FFI this module speaks.
#[pyfunction]
pub(crate) fn _datafusion_ffi_version() -> u64 {
    datafusion_ffi::version()
}

/// The session's logical codec, which every exported object carries: `session` is the
/// `SessionContext` (or the codec's capsule itself).
fn session_codec(session: &Bound<'_, PyAny>) -> PyResult<FFI_LogicalExtensionCodec> {
    const METHOD: &str = "__datafusion_logical_extension_codec__";
    let capsule = if session.hasattr(METHOD)? {
        session.call_method0(METHOD)?
    } else {
        session.clone()
    };
    let capsule = capsule.cast::<PyCapsule>().map_err(|_| {
        PyValueError::new_err("expected a datafusion SessionContext (or its codec's capsule)")
    })?;
    let codec: NonNull<FFI_LogicalExtensionCodec> = capsule
        .pointer_checked(Some(c"datafusion_logical_extension_codec"))?
        .cast();
    // SAFETY: the capsule's name says it holds an `FFI_LogicalExtensionCodec` (datafusion-python
    // makes it with that name around that type), and the capsule, alive for this borrow, owns
    // it; the codec is cloned out through its own FFI clone function.
    Ok(unsafe { codec.as_ref() }.clone())
}

/// The open database behind `shared`, as a DataFusion error when it was closed.
fn open_db(shared: &Shared) -> Result<Arc<omendb::Database>> {
    shared
        .with(|db| Ok(db.clone()))
        .map_err(|_| DataFusionError::Execution(format!("database {} is closed", shared.path)))
}

/// One collection as the foreign session's table: resolved again at every call, so it reads
/// the collection's current rows and fails once the database is closed or the collection
/// dropped. Conditions on its columns are evaluated here, before rows cross the FFI.
struct LiveTable {
    shared: Arc<Shared>,
    name: String,
    /// The schema when registered (what `schema` answers if the collection is gone).
    schema: SchemaRef,
}

impl fmt::Debug for LiveTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveTable")
            .field("name", &self.name)
            .finish()
    }
}

impl LiveTable {
    fn collection(&self) -> Result<Arc<omendb::Collection>> {
        open_db(&self.shared)?
            .collection(&self.name)
            .map_err(|e| DataFusionError::External(Box::new(e)))
    }
}

#[async_trait::async_trait]
impl TableProvider for LiveTable {
    fn schema(&self) -> SchemaRef {
        self.collection()
            .map(|c| c.schema())
            .unwrap_or_else(|_| self.schema.clone())
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match f.is_volatile() {
                true => TableProviderFilterPushDown::Unsupported,
                false => TableProviderFilterPushDown::Exact,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let table = omendb_datafusion::collection_table(self.collection()?);
        let Some((_, predicate)) = pushed_filter(state, filters, &table.schema())? else {
            return table.scan(state, projection, &[], limit).await;
        };
        let all = table.scan(state, None, &[], None).await?;
        let filter = FilterExecBuilder::new(predicate, all)
            .apply_projection(projection.cloned())?
            .build()?;
        Ok(Arc::new(filter))
    }
}

/// knn() in the foreign session, its table exported with filter pushdown so `WHERE`
/// conditions reach the search as a pre-filter. (The FFI's table-function wrapper exports a
/// function's result without pushdown, but passes a table that is already exported through as
/// it is.)
struct LiveKnn {
    shared: Arc<Shared>,
    codec: FFI_LogicalExtensionCodec,
}

impl fmt::Debug for LiveKnn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveKnn")
            .field("database", &self.shared.path)
            .finish()
    }
}

impl TableFunctionImpl for LiveKnn {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let table = KnnFunction::new(open_db(&self.shared)?, KnnLimits::default())
            .with_parameter_hint(
                " (from Python: ctx.sql(text, q=omendb.datafusion.vector(v)) writes it where the \
                 text has $q)",
            )
            .call_with_args(args)?;
        let exported = FFI_TableProvider::new_with_ffi_codec(
            table,
            true,
            Some(runtime().handle().clone()),
            self.codec.clone(),
        );
        Ok(Arc::new(ForeignTableProvider(exported)))
    }
}

/// A collection for `SessionContext.register_table`.
#[pyclass(module = "omendb._omendb", frozen)]
pub(crate) struct DataFusionTable {
    shared: Arc<Shared>,
    name: String,
    schema: SchemaRef,
}

#[pymethods]
impl DataFusionTable {
    /// The collection `name` of `db`.
    #[new]
    fn new(db: PyRef<'_, Database>, name: String) -> PyResult<Self> {
        let shared = db.shared().clone();
        let schema = shared.with(|d| Ok(d.collection(&name).map_err(to_py)?.schema()))?;
        Ok(DataFusionTable {
            shared,
            name,
            schema,
        })
    }

    fn __datafusion_table_provider__<'py>(
        &self,
        py: Python<'py>,
        session: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let table = Arc::new(LiveTable {
            shared: self.shared.clone(),
            name: self.name.clone(),
            schema: self.schema.clone(),
        });
        let exported = FFI_TableProvider::new_with_ffi_codec(
            table,
            true,
            Some(runtime().handle().clone()),
            session_codec(&session)?,
        );
        PyCapsule::new_with_value(py, exported, c"datafusion_table_provider")
    }
}

/// knn() for `SessionContext.register_udtf` (through `datafusion.udtf`).
#[pyclass(module = "omendb._omendb", frozen)]
pub(crate) struct DataFusionKnn {
    shared: Arc<Shared>,
}

#[pymethods]
impl DataFusionKnn {
    /// knn() over the collections of `db`.
    #[new]
    fn new(db: PyRef<'_, Database>) -> Self {
        DataFusionKnn {
            shared: db.shared().clone(),
        }
    }

    fn __datafusion_table_function__<'py>(
        &self,
        py: Python<'py>,
        session: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let codec = session_codec(&session)?;
        let knn = Arc::new(LiveKnn {
            shared: self.shared.clone(),
            codec: codec.clone(),
        });
        let exported =
            FFI_TableFunction::new_with_ffi_codec(knn, Some(runtime().handle().clone()), codec);
        PyCapsule::new_with_value(py, exported, c"datafusion_table_function")
    }
}

/// One of the distance functions (`cosine_distance`, `l2_distance`, `inner_product`,
/// `negative_inner_product`) for `SessionContext.register_udf` (through `datafusion.udf`).
#[pyclass(module = "omendb._omendb", frozen)]
pub(crate) struct DataFusionDistance {
    udf: Arc<datafusion::logical_expr::ScalarUDF>,
}

#[pymethods]
impl DataFusionDistance {
    /// The distance function `name`.
    #[new]
    fn new(name: &str) -> PyResult<Self> {
        let udfs = omendb_datafusion::distance_udfs();
        let names: Vec<String> = udfs.iter().map(|u| u.name().to_string()).collect();
        let udf = udfs.into_iter().find(|u| u.name() == name).ok_or_else(|| {
            PyValueError::new_err(format!(
                "no distance function '{name}' (there are {})",
                names.join(", ")
            ))
        })?;
        Ok(DataFusionDistance { udf: Arc::new(udf) })
    }

    /// The names of the distance functions.
    #[staticmethod]
    fn names() -> Vec<String> {
        omendb_datafusion::distance_udfs()
            .iter()
            .map(|u| u.name().to_string())
            .collect()
    }

    fn __datafusion_scalar_udf__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        let exported = FFI_ScalarUDF::from(self.udf.clone());
        PyCapsule::new_with_value(py, exported, c"datafusion_scalar_udf")
    }
}
