//! `knn_join((SELECT * FROM queries), 'vector', 'docs', k [, ef [, nprobe]])`: batch search in
//! SQL. For every row the query in parentheses returns, the `k` nearest rows of collection
//! `docs`, found in one call of the engine's blocked many-query search. Each result row holds
//! the query row's columns, named `query_<column>`, then the collection's columns and
//! `_distance`; rows come query by query, nearest first.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, LogicalPlan, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use omendb::{SearchRequest, Snapshot};

use super::args::join_usage;
use crate::engine_error;

/// The output schema: the query table's columns as `query_<name>`, then the collection's
/// columns and `_distance`.
fn join_schema(queries: &Schema, snapshot: &Snapshot) -> SchemaRef {
    let mut fields: Vec<Field> = queries
        .fields()
        .iter()
        .map(|f| {
            Field::new(
                format!("query_{}", f.name()),
                f.data_type().clone(),
                f.is_nullable(),
            )
        })
        .collect();
    let result = omendb::result_schema(&snapshot.schema());
    fields.extend(result.fields().iter().map(|f| f.as_ref().clone()));
    Arc::new(Schema::new(fields))
}

/// One bound knn_join() call: the query table's plan and the search.
#[derive(Debug)]
pub(super) struct KnnJoinTable {
    queries: LogicalPlan,
    vector_column: String,
    collection: String,
    snapshot: Arc<Snapshot>,
    k: usize,
    ef: Option<usize>,
    nprobe: Option<usize>,
    schema: SchemaRef,
}

impl KnnJoinTable {
    /// The `k` rows of `snapshot` nearest each row of `queries` (its `vector_column`),
    /// searched with beam width `ef` and `nprobe` IVF lists (`None`: the collection's).
    pub(super) fn new(
        queries: LogicalPlan,
        vector_column: String,
        collection: String,
        snapshot: Arc<Snapshot>,
        k: usize,
        ef: Option<usize>,
        nprobe: Option<usize>,
    ) -> Result<Self> {
        let input = queries.schema().as_arrow().clone();
        input.index_of(&vector_column).map_err(|_| {
            join_usage(&format!(
                "the query table has no column '{vector_column}' (it has {})",
                input
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let schema = join_schema(&input, &snapshot);
        Ok(KnnJoinTable {
            queries,
            vector_column,
            collection,
            snapshot,
            k,
            ef,
            nprobe,
            schema,
        })
    }
}

#[async_trait]
impl TableProvider for KnnJoinTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = state.create_physical_plan(&self.queries).await?;
        Ok(Arc::new(KnnJoinExec::new(
            input,
            self,
            projection.cloned(),
        )?))
    }
}

/// Runs a knn_join(): collects the query rows, searches them all at once, joins.
#[derive(Debug, Clone)]
struct KnnJoinExec {
    input: Arc<dyn ExecutionPlan>,
    vector_column: String,
    collection: String,
    snapshot: Arc<Snapshot>,
    k: usize,
    ef: Option<usize>,
    nprobe: Option<usize>,
    full_schema: SchemaRef,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl KnnJoinExec {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        t: &KnnJoinTable,
        projection: Option<Vec<usize>>,
    ) -> Result<Self> {
        let schema = match &projection {
            Some(p) => Arc::new(t.schema.project(p)?),
            None => t.schema.clone(),
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Ok(KnnJoinExec {
            input,
            vector_column: t.vector_column.clone(),
            collection: t.collection.clone(),
            snapshot: t.snapshot.clone(),
            k: t.k,
            ef: t.ef,
            nprobe: t.nprobe,
            full_schema: t.schema.clone(),
            projection,
            schema,
            properties,
        })
    }

    /// Searches every query row of `queries` and joins.
    fn join(&self, queries: RecordBatch) -> Result<RecordBatch> {
        let snapshot = &self.snapshot;
        let dim = snapshot.dim();
        let column = queries
            .column_by_name(&self.vector_column)
            .expect("checked when planned");
        let what = format!("query column '{}'", self.vector_column);
        let vectors: ArrayRef = match column.data_type() {
            datafusion::arrow::datatypes::DataType::FixedSizeList(..)
            | datafusion::arrow::datatypes::DataType::List(_)
            | datafusion::arrow::datatypes::DataType::LargeList(_) => column.clone(),
            other => {
                return Err(join_usage(&format!(
                    "{what} must hold lists of numbers, it holds {other}"
                )))
            }
        };
        let fsl = omendb::coerce_vectors(&what, &vectors, Some(dim)).map_err(engine_error)?;
        let values = fsl
            .values()
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Float32Array>()
            .expect("coerce_vectors yields Float32");
        if queries.num_rows() == 0 {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        let req = SearchRequest::new(values.values(), self.k)
            .ef(self.ef)
            .nprobe(self.nprobe);
        let found = snapshot.search_rows(&req).map_err(engine_error)?;
        let query_rows: UInt32Array = found.query_of_rows().map(|q| q as u32).collect();
        let found = found.into_rows();
        let mut columns: Vec<ArrayRef> = queries
            .columns()
            .iter()
            .map(|c| take(c.as_ref(), &query_rows, None))
            .collect::<std::result::Result<_, _>>()?;
        columns.extend(found.columns().iter().cloned());
        let batch = RecordBatch::try_new(self.full_schema.clone(), columns)?;
        Ok(match &self.projection {
            Some(p) => batch.project(p)?,
            None => batch,
        })
    }
}

impl DisplayAs for KnnJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "KnnJoinExec: collection={}, query column={}, k={}",
            self.collection, self.vector_column, self.k
        )?;
        if let Some(nprobe) = self.nprobe {
            write!(f, ", nprobe={nprobe}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for KnnJoinExec {
    fn name(&self) -> &'static str {
        "KnnJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children
            .into_iter()
            .next()
            .ok_or_else(|| DataFusionError::Internal("KnnJoinExec needs its input".into()))?;
        Ok(Arc::new(KnnJoinExec {
            input,
            ..self.as_ref().clone()
        }))
    }

    fn execute(
        &self,
        _partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let me = self.clone();
        let run = async move {
            let rows = datafusion::physical_plan::collect(me.input.clone(), context).await?;
            let queries = concat_batches(&me.input.schema(), &rows)?;
            tokio::task::spawn_blocking(move || me.join(queries))
                .await
                .map_err(|e| DataFusionError::Execution(format!("knn_join() failed: {e}")))?
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::once(run),
        )))
    }
}
