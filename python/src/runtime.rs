//! The runtime SQL runs on, and a database's SQL session with its cache of planned
//! statements.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use omendb_datafusion::Prepared;
use pyo3::prelude::*;

use crate::error::sql_err;
use crate::shared::{Shared, Sql};

/// The runtime SQL statements run on (DataFusion is async); shared by every database, and by
/// the objects exported to other DataFusion sessions (`plugin`).
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
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

impl Shared {
    pub(crate) fn session(&self, db: &Arc<omendb::Database>) -> PyResult<SessionContext> {
        let mut sql = self.sql.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = sql.as_ref() {
            return Ok(s.ctx.clone());
        }
        let ctx = omendb_datafusion::session(db.clone()).map_err(sql_err)?;
        *sql = Some(Sql {
            ctx: ctx.clone(),
            prepared: HashMap::new(),
        });
        Ok(ctx)
    }

    /// Forgets planned statements (a collection was created, dropped or replaced, so a plan
    /// may name what no longer is).
    pub(crate) fn forget_plans(&self) {
        if let Some(s) = self.sql.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            s.prepared.clear();
        }
    }

    /// The statement `text`, planned at its first use.
    pub(crate) async fn prepared(
        &self,
        ctx: &SessionContext,
        text: &str,
    ) -> PyResult<Arc<Prepared>> {
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

    /// Runs `text`; with parameters (or vectors typed into a plain search) the statement is
    /// planned once and only bound afterwards.
    pub(crate) fn run_sql(
        &self,
        db: &Arc<omendb::Database>,
        text: &str,
        params: Vec<ScalarValue>,
    ) -> PyResult<(Vec<RecordBatch>, SchemaRef)> {
        let ctx = self.session(db)?;
        runtime().block_on(async {
            let (prepared, params) = match params.is_empty() {
                false => (self.prepared(&ctx, text).await?, params),
                // Vectors typed into a plain search are bound into the plan kept for the
                // statement's shape (as a server does), instead of planning every number.
                true => match self.shaped(&ctx, text).await {
                    Some(run) => run,
                    None => {
                        let plan = omendb_datafusion::sql::logical_plan(&ctx.state(), text)
                            .await
                            .map_err(sql_err)?;
                        let df = ctx.execute_logical_plan(plan).await.map_err(sql_err)?;
                        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
                        let batches = df.collect().await.map_err(sql_err)?;
                        return Ok((batches, schema));
                    }
                },
            };
            let values = ParamValues::List(params.into_iter().map(Into::into).collect());
            let stream = prepared.execute(values).await.map_err(sql_err)?;
            let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(sql_err)?;
            Ok((batches, prepared.schema()))
        })
    }

    /// The plan kept for `text`'s shape and the vectors typed into it, when it is a plain
    /// search (see `lift_vectors`).
    async fn shaped(
        &self,
        ctx: &SessionContext,
        text: &str,
    ) -> Option<(Arc<Prepared>, Vec<ScalarValue>)> {
        let (shape, values) = omendb_datafusion::sql::lift_vectors(text)?;
        let prepared = self.prepared(ctx, &shape).await.ok()?;
        prepared
            .searches_with(values.len())
            .then_some((prepared, values))
    }
}
