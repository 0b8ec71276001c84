//! OmenDB inside DataFusion: every collection of a [`Database`] is a table, `knn()` is a table
//! source returning the nearest rows with their `_distance`, and `cosine_distance`,
//! `l2_distance` and `inner_product` are scalar functions usable anywhere.
//!
//! ```no_run
//! # async fn demo(db: std::sync::Arc<omendb::Database>) -> datafusion::error::Result<()> {
//! let ctx = omendb_datafusion::session(db)?;
//! ctx.sql("SELECT id, _distance FROM knn('docs', [0.1, 0.2, 0.3], 10)").await?.show().await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod catalog;
mod distance;
mod dml;
mod error;
mod files;
mod knn;
mod prepared;
mod rewrite;
pub mod sql;

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::DFSchema;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::{SessionConfig, SessionContext};
use omendb::Database;

pub use distance::distance_udfs;
pub use error::{classify, find_engine_error};
pub use files::FileGuard;
pub use knn::{
    execute_frame, knn_waits, vector_value, FilteredSearch, KnnFunction, KnnLimits, KnnWaits,
    QueryWaits, INLINE_WORK,
};
pub use prepared::Prepared;

pub(crate) use catalog::CollectionTable;

use catalog::OmenSchema;
use dml::CollectionFactory;
pub(crate) use error::engine_error;
use files::with_file_tables;
use knn::{KnnBinder, KnnPlanner};
use rewrite::OrderByDistance;

/// The conditions a table over `schema` was handed (`TableProvider::scan`'s `filters`) as one
/// condition and its physical predicate, planned by `state`; `None` when there are none.
pub fn pushed_filter(
    state: &dyn Session,
    filters: &[Expr],
    schema: &Schema,
) -> Result<Option<(Expr, Arc<dyn PhysicalExpr>)>> {
    let Some(condition) = conjunction(filters.iter().cloned()) else {
        return Ok(None);
    };
    let schema = DFSchema::try_from(schema.clone())?;
    let predicate = state.create_physical_expr(condition.clone(), &schema)?;
    Ok(Some((condition, predicate)))
}

/// One collection as a table (what every collection is in a session [`register`] set up):
/// for a host that registers tables one by one.
pub fn collection_table(collection: Arc<omendb::Collection>) -> Arc<dyn TableProvider> {
    Arc::new(CollectionTable::new(collection))
}

/// A scan over in-memory batches (one partition per inner `Vec`), projected.
fn memory_scan(
    partitions: Vec<Vec<datafusion::arrow::record_batch::RecordBatch>>,
    schema: datafusion::arrow::datatypes::SchemaRef,
    projection: Option<&Vec<usize>>,
) -> Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
    let partitions = if partitions.is_empty() {
        vec![vec![]]
    } else {
        partitions
    };
    Ok(
        datafusion::datasource::memory::MemorySourceConfig::try_new_exec(
            &partitions,
            schema,
            projection.cloned(),
        )?,
    )
}

/// The rows `predicate` selects in `batch` (a null does not select); errors name `what`.
pub(crate) fn condition_mask(
    predicate: &dyn datafusion::physical_expr::PhysicalExpr,
    batch: &datafusion::arrow::record_batch::RecordBatch,
    what: &str,
) -> omendb::Result<datafusion::arrow::array::BooleanArray> {
    let value = predicate
        .evaluate(batch)
        .and_then(|v| v.into_array(batch.num_rows()))
        .map_err(|e| omendb::Error::InvalidInput(format!("{what}: {e}")))?;
    value
        .as_any()
        .downcast_ref::<datafusion::arrow::array::BooleanArray>()
        .cloned()
        .ok_or_else(|| {
            omendb::Error::InvalidInput(format!(
                "{what} is not a boolean condition (it gives {})",
                value.data_type()
            ))
        })
}

/// Registers the database's collections as tables of the default schema, beside the tables
/// the session already has (and those it registers later), the `knn` table function, the
/// distance functions and the vector operators: OmenDB as a plugin of a host's own
/// `SessionContext`.
pub fn register(ctx: &SessionContext, db: Arc<Database>) -> Result<()> {
    register_with_limits(ctx, db, KnnLimits::default())
}

/// As [`register`], with knn() refusing calls past `limits`.
pub fn register_with_limits(
    ctx: &SessionContext,
    db: Arc<Database>,
    limits: KnnLimits,
) -> Result<()> {
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| DataFusionError::Plan("no default catalog".into()))?;
    // The tables the session had keep their names; the collections join them.
    let before = catalog.schema("public");
    catalog.register_schema("public", Arc::new(OmenSchema::new(db.clone(), before)))?;
    ctx.register_relation_planner(Arc::new(KnnPlanner::new(db.clone(), limits)))?;
    ctx.add_analyzer_rule(Arc::new(KnnBinder::new(db.clone(), limits)));
    ctx.state_ref()
        .write()
        .table_factories_mut()
        .insert("OMENDB".into(), Arc::new(CollectionFactory::new(db)));
    ctx.add_analyzer_rule(Arc::new(OrderByDistance::new(limits)));
    datafusion::execution::FunctionRegistry::register_expr_planner(
        &mut *ctx.state_ref().write(),
        Arc::new(sql::VectorOperators::default()),
    )?;
    for udf in distance_udfs() {
        ctx.register_udf(udf);
    }
    Ok(())
}

/// A new session over `db` with everything registered, any file readable as a table
/// (`FROM '/data/clicks.parquet'`, `read_parquet(...)`).
pub fn session(db: Arc<Database>) -> Result<SessionContext> {
    let ctx = with_file_tables(SessionContext::new_with_config(session_config()), None);
    register(&ctx, db)?;
    Ok(ctx)
}

/// A new session over `db` that runs in `runtime` (its memory pool, disk manager and object
/// stores, shared by every session a server opens) with knn() held to `limits`, reading as
/// tables the files `files` lets through.
pub fn session_in(
    db: Arc<Database>,
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
    limits: KnnLimits,
    files: FileGuard,
) -> Result<SessionContext> {
    let ctx = with_file_tables(
        SessionContext::new_with_config_rt(session_config(), runtime),
        Some(files),
    );
    register_with_limits(&ctx, db, limits)?;
    Ok(ctx)
}

fn session_config() -> SessionConfig {
    SessionConfig::new().with_information_schema(true)
}
