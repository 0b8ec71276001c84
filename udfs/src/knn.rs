//! `knn('collection', <query vector>, k [, ef])`: the k nearest rows and their `_distance`.
//!
//! `WHERE` conditions on the collection's columns are pushed into the search as a pre-filter:
//! `SELECT * FROM knn('docs', [..], 10) WHERE lang = 'en'` returns the 10 nearest rows whose
//! `lang` is `'en'` (10 rows whenever at least 10 match), not the matching rows among the 10
//! nearest. Conditions on `_distance` apply to the result, after the search.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use omendb::{Database, SearchRequest, Snapshot};

use crate::{engine_error, memory_scan};

/// Limits on one knn() call, refused with an error naming the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnnLimits {
    /// The largest k (default 10,000).
    pub max_k: usize,
    /// The largest beam width ef (default 10,000).
    pub max_ef: usize,
}

impl Default for KnnLimits {
    fn default() -> Self {
        KnnLimits {
            max_k: 10_000,
            max_ef: 10_000,
        }
    }
}

/// The `knn` table function.
#[derive(Debug)]
pub struct KnnFunction {
    db: Arc<Database>,
    limits: KnnLimits,
}

impl KnnFunction {
    pub fn new(db: Arc<Database>) -> Self {
        Self::with_limits(db, KnnLimits::default())
    }

    pub fn with_limits(db: Arc<Database>, limits: KnnLimits) -> Self {
        KnnFunction { db, limits }
    }
}

fn usage(what: &str) -> DataFusionError {
    DataFusionError::Plan(format!(
        "knn(): {what}; usage: knn('collection', [v1, v2, ...], k [, ef])"
    ))
}

/// Evaluates a constant argument expression (an array literal, `make_array(...)`, a cast...)
/// to a single value.
fn constant(session: &dyn Session, expr: &Expr, what: &str) -> Result<ArrayRef> {
    let physical = session
        .create_physical_expr(expr.clone(), &DFSchema::empty())
        .map_err(|e| usage(&format!("the {what} must be a constant ({e})")))?;
    let one_row = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    physical.evaluate(&one_row)?.into_array(1)
}

/// The floats of a query vector given as any numeric list.
pub(crate) fn query_vector(value: &ArrayRef, what: &str) -> Result<Vec<f32>> {
    let list_type = DataType::List(Arc::new(Field::new("item", DataType::Float32, true)));
    let as_list = match value.data_type() {
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
            datafusion::arrow::compute::cast(value, &list_type)
                .map_err(|e| usage(&format!("the {what} must be a list of numbers ({e})")))?
        }
        other => {
            return Err(usage(&format!(
                "the {what} must be an array of numbers, got {other}"
            )))
        }
    };
    let fsl = omendb::coerce_vectors(what, &as_list, None).map_err(engine_error)?;
    let values = fsl
        .values()
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Float32Array>()
        .expect("coerce_vectors yields Float32");
    Ok(values.values().to_vec())
}

impl TableFunctionImpl for KnnFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.len() != 3 && exprs.len() != 4 {
            return Err(usage(&format!(
                "expected 3 or 4 arguments, got {}",
                exprs.len()
            )));
        }
        let name = match &exprs[0] {
            Expr::Literal(
                ScalarValue::Utf8(Some(s))
                | ScalarValue::LargeUtf8(Some(s))
                | ScalarValue::Utf8View(Some(s)),
                _,
            ) => s.clone(),
            other => {
                return Err(usage(&format!(
                    "the first argument must be a collection name string, got {other}"
                )))
            }
        };
        let k_value = constant(args.session(), &exprs[2], "k")?;
        let k = match ScalarValue::try_from_array(&k_value, 0)? {
            ScalarValue::Int64(Some(k)) if k >= 0 => k as usize,
            ScalarValue::Int32(Some(k)) if k >= 0 => k as usize,
            ScalarValue::UInt64(Some(k)) => k as usize,
            other => {
                return Err(usage(&format!(
                    "k must be a non-negative integer, got {other}"
                )))
            }
        };
        let ef = match exprs.get(3) {
            None => None,
            Some(e) => match ScalarValue::try_from_array(&constant(args.session(), e, "ef")?, 0)? {
                ScalarValue::Int64(Some(ef)) if ef > 0 => Some(ef as usize),
                ScalarValue::Int32(Some(ef)) if ef > 0 => Some(ef as usize),
                other => {
                    return Err(usage(&format!(
                        "ef must be a positive integer, got {other}"
                    )))
                }
            },
        };
        if k > self.limits.max_k {
            return Err(usage(&format!(
                "k = {k} exceeds the limit of {} rows (max_k)",
                self.limits.max_k
            )));
        }
        if let Some(ef) = ef.filter(|&ef| ef > self.limits.max_ef) {
            return Err(usage(&format!(
                "ef = {ef} exceeds the limit of {} (max_ef)",
                self.limits.max_ef
            )));
        }
        let collection = self.db.collection(&name).map_err(engine_error)?;
        let snapshot = collection.snapshot();
        let query = query_vector(
            &constant(args.session(), &exprs[1], "query vector")?,
            "query vector",
        )?;
        if query.len() != snapshot.dim() {
            return Err(engine_error(omendb::Error::InvalidInput(format!(
                "knn(): the query vector has dimension {}, collection '{name}' has dimension {}",
                query.len(),
                snapshot.dim()
            ))));
        }
        Ok(Arc::new(KnnTable::new(snapshot, query, k, ef)))
    }
}

/// The result of one knn() call: searched when the plan is built, over the snapshot taken
/// when the function was called.
#[derive(Debug)]
pub struct KnnTable {
    snapshot: Arc<Snapshot>,
    query: Vec<f32>,
    k: usize,
    /// HNSW beam width for indexed segments (default: the collection's).
    ef: Option<usize>,
    schema: SchemaRef,
}

impl KnnTable {
    pub fn new(snapshot: Arc<Snapshot>, query: Vec<f32>, k: usize, ef: Option<usize>) -> Self {
        let schema = omendb::result_schema(&snapshot.schema());
        KnnTable {
            snapshot,
            query,
            k,
            ef,
            schema,
        }
    }
}

#[async_trait]
impl TableProvider for KnnTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let stored = self.snapshot.schema();
        Ok(filters
            .iter()
            .map(|f| {
                let on_stored_columns = f
                    .column_refs()
                    .iter()
                    .all(|c| stored.field_with_name(&c.name).is_ok());
                if on_stored_columns && !f.is_volatile() {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let predicate = match conjunction(filters.iter().cloned()) {
            None => None,
            Some(predicate) => {
                let schema = DFSchema::try_from(self.snapshot.schema().as_ref().clone())?;
                Some(state.create_physical_expr(predicate, &schema)?)
            }
        };
        let (snapshot, query, k, ef) = (self.snapshot.clone(), self.query.clone(), self.k, self.ef);
        // The filter and the search are CPU work: they run on a blocking thread, never on the
        // async runtime's workers.
        let batch = tokio::task::spawn_blocking(move || -> Result<RecordBatch> {
            let selection = match predicate {
                None => None,
                Some(physical) => Some(
                    omendb::Selection::from_masks(&snapshot, |batch| {
                        let mask = physical
                            .evaluate(batch)
                            .and_then(|v| v.into_array(batch.num_rows()))
                            .map_err(|e| {
                                omendb::Error::InvalidInput(format!("knn() filter: {e}"))
                            })?;
                        mask.as_any()
                            .downcast_ref::<datafusion::arrow::array::BooleanArray>()
                            .cloned()
                            .ok_or_else(|| {
                                omendb::Error::InvalidInput(format!(
                                    "knn() filter is not a boolean condition (it gives {})",
                                    mask.data_type()
                                ))
                            })
                    })
                    .map_err(engine_error)?,
                ),
            };
            let hits = snapshot
                .search(
                    &SearchRequest::new(&query, k)
                        .ef(ef)
                        .filter(selection.as_ref()),
                )
                .map_err(engine_error)?
                .pop()
                .unwrap_or_default();
            snapshot.hits_to_batch(&hits).map_err(engine_error)
        })
        .await
        .map_err(|e| DataFusionError::Execution(format!("knn() search failed: {e}")))??;
        memory_scan(vec![vec![batch]], self.schema(), projection)
    }
}
