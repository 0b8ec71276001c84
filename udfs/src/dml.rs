//! SQL writes to collections: `INSERT` (a `DataSink` appending every inserted row in one
//! commit), `DELETE ... WHERE` and `UPDATE ... SET ... WHERE` (each a `DmlExec` running one
//! engine call when executed, never when planned), and `CREATE EXTERNAL TABLE ... STORED AS
//! OMENDB LOCATION 'name'`, which creates a collection (LOCATION is its name in the database,
//! never a path).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema};
use datafusion::datasource::sink::DataSink;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{CreateExternalTable, Expr};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;
use omendb::{Collection, CollectionOptions, Database};

use crate::{engine_error, CollectionTable};

/// The schema of a DML result: one `count` row.
fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]))
}

/// The work of one DML statement, run on a blocking thread when executed.
type Work = Arc<dyn Fn() -> Result<u64> + Send + Sync>;

/// A DML statement's plan: runs its engine call once when executed and returns the rows it
/// changed.
struct DmlExec {
    what: String,
    work: Work,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for DmlExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DmlExec({})", self.what)
    }
}

impl DmlExec {
    fn new(what: String, work: Work) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(count_schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        DmlExec {
            what,
            work,
            properties,
        }
    }
}

impl DisplayAs for DmlExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "DmlExec: {}", self.what)
    }
}

impl ExecutionPlan for DmlExec {
    fn name(&self) -> &'static str {
        "DmlExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let work = self.work.clone();
        let run = async move {
            let n = tokio::task::spawn_blocking(move || work())
                .await
                .map_err(|e| DataFusionError::Execution(format!("write failed: {e}")))??;
            Ok(RecordBatch::try_new(
                count_schema(),
                vec![Arc::new(UInt64Array::from(vec![n])) as ArrayRef],
            )?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            count_schema(),
            futures::stream::once(run),
        )))
    }
}

/// `expr` with its column references unqualified (a collection's batches have no qualifier).
fn unqualified(expr: Expr) -> Result<Expr> {
    expr.transform(|e| {
        Ok(match e {
            Expr::Column(c) if c.relation.is_some() => {
                Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))
            }
            other => Transformed::no(other),
        })
    })
    .map(|t| t.data)
}

/// The physical form of `expr` over the collection's rows.
fn physical(state: &dyn Session, c: &Collection, expr: Expr) -> Result<Arc<dyn PhysicalExpr>> {
    let schema = DFSchema::try_from(c.schema().as_ref().clone())?;
    state.create_physical_expr(unqualified(expr)?, &schema)
}

/// Evaluates a condition on a batch as the rows it selects.
fn mask(
    predicate: &Option<Arc<dyn PhysicalExpr>>,
    batch: &RecordBatch,
) -> omendb::Result<BooleanArray> {
    let Some(p) = predicate else {
        return Ok(BooleanArray::from(vec![true; batch.num_rows()]));
    };
    crate::condition_mask(p.as_ref(), batch, "WHERE")
}

/// The conjunction of `filters` over the collection's rows (`None`: every row).
fn predicate(
    state: &dyn Session,
    c: &Collection,
    filters: Vec<Expr>,
) -> Result<Option<Arc<dyn PhysicalExpr>>> {
    datafusion::logical_expr::utils::conjunction(filters)
        .map(|f| physical(state, c, f))
        .transpose()
}

impl CollectionTable {
    /// `DELETE FROM <collection> [WHERE ...]`.
    pub(crate) fn delete_plan(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let c = self.collection().clone();
        let what = format!("DELETE FROM {}", c.name());
        let predicate = predicate(state, &c, filters)?;
        Ok(Arc::new(DmlExec::new(
            what,
            Arc::new(move || {
                c.delete_where(|b| mask(&predicate, b))
                    .map(|n| n as u64)
                    .map_err(engine_error)
            }),
        )))
    }

    /// `UPDATE <collection> SET column = expr, ... [WHERE ...]`: the rows selected are
    /// replaced by their updated form in one commit.
    pub(crate) fn update_plan(
        &self,
        state: &dyn Session,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let c = self.collection().clone();
        let schema = c.schema();
        let mut set: Vec<(usize, Arc<dyn PhysicalExpr>)> = Vec::new();
        for (name, expr) in assignments {
            let i = schema.index_of(&name).map_err(|_| {
                DataFusionError::Plan(format!(
                    "UPDATE: collection '{}' has no column '{name}'",
                    c.name()
                ))
            })?;
            // DataFusion passes every column, unchanged ones as themselves.
            if matches!(&expr, Expr::Column(col) if col.name == name) {
                continue;
            }
            set.push((i, physical(state, &c, expr)?));
        }
        let what = format!("UPDATE {}", c.name());
        let predicate = predicate(state, &c, filters)?;
        Ok(Arc::new(DmlExec::new(
            what,
            Arc::new(move || {
                let update = |rows: RecordBatch| -> omendb::Result<RecordBatch> {
                    let mut columns = rows.columns().to_vec();
                    for (i, e) in &set {
                        columns[*i] = e
                            .evaluate(&rows)
                            .and_then(|v| v.into_array(rows.num_rows()))
                            .map_err(|e| omendb::Error::InvalidInput(format!("UPDATE: {e}")))?;
                    }
                    let fields: Vec<Field> = rows
                        .schema()
                        .fields()
                        .iter()
                        .zip(&columns)
                        .map(|(f, c)| Field::new(f.name(), c.data_type().clone(), true))
                        .collect();
                    Ok(RecordBatch::try_new(
                        Arc::new(Schema::new(fields)),
                        columns,
                    )?)
                };
                c.update_where(|b| mask(&predicate, b), update)
                    .map(|n| n as u64)
                    .map_err(engine_error)
            }),
        )))
    }
}

/// Where `INSERT INTO <collection>` writes: every inserted row, appended in one commit when
/// the input ends (validated like any append; a refused insert writes nothing).
#[derive(Debug)]
pub(crate) struct CollectionSink {
    collection: Arc<Collection>,
    schema: SchemaRef,
}

impl CollectionSink {
    pub(crate) fn new(collection: Arc<Collection>) -> Self {
        let schema = collection.schema();
        CollectionSink { collection, schema }
    }
}

impl DisplayAs for CollectionSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "CollectionSink: {}", self.collection.name())
    }
}

#[async_trait]
impl DataSink for CollectionSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        mut data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> Result<u64> {
        let mut batches = Vec::new();
        while let Some(b) = data.next().await {
            batches.push(b?);
        }
        let c = self.collection.clone();
        tokio::task::spawn_blocking(move || c.append(&batches))
            .await
            .map_err(|e| DataFusionError::Execution(format!("INSERT failed: {e}")))?
            .map(|n| n as u64)
            .map_err(engine_error)
    }
}

/// `CREATE EXTERNAL TABLE docs (...) STORED AS OMENDB LOCATION 'docs' OPTIONS (...)`: creates
/// the collection named by LOCATION with the declared columns (the vector as `FLOAT[d]`) and
/// the options `CollectionOptions::set` knows (`metric`, `index`, `m`, ...).
#[derive(Debug)]
pub(crate) struct CollectionFactory {
    db: Arc<Database>,
}

impl CollectionFactory {
    /// A factory creating collections in `db`.
    pub(crate) fn new(db: Arc<Database>) -> Self {
        CollectionFactory { db }
    }
}

#[async_trait]
impl TableProviderFactory for CollectionFactory {
    async fn create(
        &self,
        _state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> Result<Arc<dyn TableProvider>> {
        let [location] = cmd.locations.as_slice() else {
            return Err(DataFusionError::Plan(
                "STORED AS OMENDB takes one LOCATION: the collection's name".into(),
            ));
        };
        let mut opts = CollectionOptions::default();
        for (key, value) in &cmd.options {
            let key = key.strip_prefix("format.").unwrap_or(key);
            opts.set(key, value).map_err(engine_error)?;
        }
        let schema: Schema = cmd.schema.as_arrow().clone();
        let (db, name) = (self.db.clone(), location.clone());
        let exists_ok = cmd.if_not_exists;
        let c = tokio::task::spawn_blocking(move || {
            if exists_ok && db.exists(&name) {
                return db.collection(&name);
            }
            db.create_collection(&name, &schema, opts)
        })
        .await
        .map_err(|e| DataFusionError::Execution(format!("creating a collection: {e}")))?
        .map_err(engine_error)?;
        Ok(Arc::new(CollectionTable::new(c)))
    }
}
