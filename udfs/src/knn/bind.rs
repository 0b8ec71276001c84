//! `KnnNode` → a scan of a `KnnTable`, once its arguments are known: the analyzer rule that
//! evaluates the query vector, k and ef (bound parameters substituted by then), checks them
//! against the collection and the limits, and takes the snapshot the search will read. Filters
//! above the scan are then pushed into it by DataFusion's own filter pushdown.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{ScalarValue, TableReference};
use datafusion::datasource::provider_as_source;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::optimizer::AnalyzerRule;
use omendb::Database;

use super::args::{
    check_dimension, check_k_and_ef, check_nprobe, constant, find_placeholder, query_vector,
    KnnLimits, KNN_TABLE,
};
use super::node::{KnnNode, Rebind};
use super::provider::{KnnTable, QueryVector};
use crate::engine_error;

/// Turns bound `KnnNode`s into scans.
#[derive(Debug)]
pub(crate) struct KnnBinder {
    db: Arc<Database>,
    limits: KnnLimits,
}

impl KnnBinder {
    /// A binder over `db`, refusing calls past `limits`.
    pub(crate) fn new(db: Arc<Database>, limits: KnnLimits) -> Self {
        KnnBinder { db, limits }
    }

    /// Checks the arguments of `node` now when they are all known (no parameters), so a bad
    /// literal is refused when the statement is planned rather than when it runs.
    pub(super) fn check_if_bound(&self, node: &KnnNode) -> Result<()> {
        let bound = [&node.query, &node.k]
            .into_iter()
            .chain(node.ef.as_ref())
            .chain(node.nprobe.as_ref())
            .all(|e| find_placeholder(e).is_none());
        if bound {
            self.bind(node)?;
        }
        Ok(())
    }

    /// k and ef from their argument expressions, checked against the limits.
    pub(super) fn k_and_ef(&self, k: &Expr, ef: Option<&Expr>) -> Result<(usize, Option<usize>)> {
        let k = ScalarValue::try_from_array(&constant(k, "k")?, 0)?;
        let ef = match ef {
            None => None,
            Some(e) => Some(ScalarValue::try_from_array(&constant(e, "ef")?, 0)?),
        };
        check_k_and_ef(&self.limits, k, ef)
    }

    /// nprobe from its argument expression, when there is one.
    pub(super) fn nprobe(&self, nprobe: Option<&Expr>) -> Result<Option<usize>> {
        let nprobe = nprobe
            .map(|e| ScalarValue::try_from_array(&constant(e, "nprobe")?, 0))
            .transpose()?;
        check_nprobe(nprobe)
    }

    /// The search a call describes, over a snapshot taken now: its arguments evaluated (none
    /// may be a parameter still) and checked against the collection and the limits.
    pub(super) fn table(
        &self,
        collection: &str,
        query: &Expr,
        k: &Expr,
        ef: Option<&Expr>,
        nprobe: Option<&Expr>,
    ) -> Result<KnnTable> {
        let (k, ef) = self.k_and_ef(k, ef)?;
        let snapshot = self
            .db
            .collection(collection)
            .map_err(engine_error)?
            .snapshot();
        let query = match query.clone().unalias_nested().data {
            Expr::ScalarSubquery(sq) if sq.outer_ref_columns.is_empty() => {
                QueryVector::Subquery(sq.subquery.as_ref().clone())
            }
            _ => {
                let query = query_vector(&constant(query, "query vector")?, "query vector")?;
                check_dimension(&query, collection, snapshot.dim())?;
                QueryVector::Values(query)
            }
        };
        let nprobe = self.nprobe(nprobe)?;
        Ok(KnnTable::new(collection.to_string(), snapshot, query, k, ef).with_nprobe(nprobe))
    }

    fn bind(&self, node: &KnnNode) -> Result<LogicalPlan> {
        let table = self
            .table(
                &node.collection,
                &node.query,
                &node.k,
                node.ef.as_ref(),
                node.nprobe.as_ref(),
            )?
            .with_fast(node.fast)
            .with_rebind(Rebind {
                db: self.db.clone(),
                limits: self.limits,
                params: node.params.clone(),
            });
        LogicalPlanBuilder::scan(
            TableReference::bare(KNN_TABLE),
            provider_as_source(Arc::new(table)),
            None,
        )?
        .build()
    }
}

impl AnalyzerRule for KnnBinder {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|plan| {
            if let LogicalPlan::Extension(ext) = &plan {
                if let Some(node) = ext.node.as_any().downcast_ref::<KnnNode>() {
                    return Ok(Transformed::yes(self.bind(node)?));
                }
            }
            Ok(Transformed::no(plan))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "omendb_knn_bind"
    }
}
