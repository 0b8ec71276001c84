//! `KnnTable`: one bound knn() call as a table, so DataFusion pushes the `WHERE` conditions on
//! the collection's columns into it; it plans a `KnnExec` (nothing is searched while planning).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use omendb::Snapshot;

use super::exec::KnnExec;
use super::node::Rebind;

/// Where a knn() call's query vector comes from.
#[derive(Debug, Clone)]
pub(crate) enum QueryVector {
    /// Known when the call was bound.
    Values(Vec<f32>),
    /// The one row of a subquery (`knn('docs', (SELECT vec FROM docs WHERE id = 42), 10)`),
    /// computed when the search runs.
    Subquery(LogicalPlan),
}

/// The rows of one knn() call over the snapshot taken when it was bound.
#[derive(Debug)]
pub(crate) struct KnnTable {
    collection: String,
    snapshot: Arc<Snapshot>,
    query: QueryVector,
    k: usize,
    /// Graph beam width for indexed segments (default: the collection's).
    ef: Option<usize>,
    /// IVF lists scanned (default: the collection's).
    nprobe: Option<usize>,
    /// Only the indexed segments (`knn(..., fast => true)`).
    fast: bool,
    schema: SchemaRef,
    /// How a prepared plan binds the search again.
    rebind: Option<Rebind>,
}

impl KnnTable {
    /// Another table over the same search.
    pub(crate) fn clone_of(other: &KnnTable) -> Self {
        KnnTable::new(
            other.collection.clone(),
            other.snapshot.clone(),
            other.query.clone(),
            other.k,
            other.ef,
        )
        .with_nprobe(other.nprobe)
        .with_fast(other.fast)
        .with_rebind_opt(other.rebind.clone())
    }

    /// The table of a call a prepared plan can bind again through `rebind`.
    pub(super) fn with_rebind(self, rebind: Rebind) -> Self {
        self.with_rebind_opt(Some(rebind))
    }

    fn with_rebind_opt(self, rebind: Option<Rebind>) -> Self {
        KnnTable { rebind, ..self }
    }

    /// The same search scanning `nprobe` IVF lists (`None`: the collection's setting).
    pub(super) fn with_nprobe(self, nprobe: Option<usize>) -> Self {
        KnnTable { nprobe, ..self }
    }

    /// The same search of the indexed segments only (`true`), or of all.
    pub(super) fn with_fast(self, fast: bool) -> Self {
        KnnTable { fast, ..self }
    }

    /// The `k` rows of `snapshot` nearest `query`.
    pub(crate) fn new(
        collection: String,
        snapshot: Arc<Snapshot>,
        query: QueryVector,
        k: usize,
        ef: Option<usize>,
    ) -> Self {
        let schema = omendb::result_schema(&snapshot.schema());
        KnnTable {
            collection,
            snapshot,
            query,
            k,
            ef,
            nprobe: None,
            fast: false,
            schema,
            rebind: None,
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
        let filter = crate::pushed_filter(state, filters, &self.snapshot.schema())?
            .map(|(condition, predicate)| (condition.to_string(), predicate));
        let (query, input) = match &self.query {
            QueryVector::Values(v) => (v.clone(), None),
            QueryVector::Subquery(plan) => {
                (Vec::new(), Some(state.create_physical_plan(plan).await?))
            }
        };
        Ok(Arc::new(
            KnnExec::new(
                self.collection.clone(),
                self.snapshot.clone(),
                query,
                input,
                self.k,
                self.ef,
                filter,
                projection.cloned(),
            )?
            .with_nprobe(self.nprobe)
            .with_fast(self.fast)
            .with_rebind(self.rebind.clone()),
        ))
    }
}
