//! `ORDER BY <distance>(vector, q) LIMIT k` over a collection → a knn() search.
//!
//! An analyzer rule finds `Limit(Sort(...TableScan(collection)))` where the one sort key is
//! `cosine_distance`, `l2_distance`, `negative_inner_product` (ascending; pgvector's `<=>`,
//! `<->` and `<#>` plan to these) or `inner_product` (descending) of the
//! collection's vector column and a constant vector (a literal, or a parameter bound by then),
//! and the function matches the collection's metric. It replaces the table scan with a scan of
//! the k nearest rows (`KnnTable`); the projections, the `WHERE` (pushed into the search as a
//! pre-filter), the sort and the limit stay, so the query returns the same rows with the value
//! the user's expression computes. Anything else is left as a full scan, which is still
//! correct.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::error::Result;
use datafusion::logical_expr::logical_plan::{FetchType, SkipType};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, SortExpr, TableScan};
use datafusion::optimizer::AnalyzerRule;
use omendb::Metric;

use crate::knn::{constant, query_vector, KnnLimits, KnnTable, QueryVector};
use crate::CollectionTable;

/// Rewrites nearest-neighbour `ORDER BY ... LIMIT` queries to searches.
#[derive(Debug)]
pub(crate) struct OrderByDistance {
    limits: KnnLimits,
}

impl OrderByDistance {
    /// The rule, refusing to rewrite past `limits` (those queries stay full scans).
    pub(crate) fn new(limits: KnnLimits) -> Self {
        OrderByDistance { limits }
    }

    /// The rewritten input of `sort` for the first `k` rows, if the pattern holds.
    fn rewrite(
        &self,
        sort: &[SortExpr],
        input: &LogicalPlan,
        k: usize,
    ) -> Result<Option<LogicalPlan>> {
        let [key] = sort else { return Ok(None) };
        if k == 0 || k > self.limits.max_k {
            return Ok(None);
        }
        // Down to the scan, through projections (resolving the key through their aliases),
        // filters and aliases.
        let mut key_expr = key.expr.clone();
        let mut node = input;
        let scan = loop {
            match node {
                LogicalPlan::Projection(p) => {
                    key_expr = resolve(key_expr, p)?;
                    node = &p.input;
                }
                LogicalPlan::Filter(f) => node = &f.input,
                LogicalPlan::SubqueryAlias(a) => node = &a.input,
                LogicalPlan::TableScan(scan) => break scan,
                _ => return Ok(None),
            }
        };
        let Ok(provider) = source_as_provider(&scan.source) else {
            return Ok(None);
        };
        let Some(table) = provider.downcast_ref::<CollectionTable>() else {
            return Ok(None);
        };
        let collection = table.collection();
        let snapshot = collection.snapshot();
        // Binding a parameter names its expression with an alias.
        let key_expr = key_expr.unalias_nested().data;
        let Expr::ScalarFunction(call) = &key_expr else {
            return Ok(None);
        };
        let wanted = match (call.func.name(), key.asc) {
            ("cosine_distance", true) => Metric::Cosine,
            ("l2_distance", true) => Metric::L2,
            ("inner_product", false) | ("negative_inner_product", true) => Metric::Dot,
            _ => return Ok(None),
        };
        let [column, query] = call.args.as_slice() else {
            return Ok(None);
        };
        let on_vectors = matches!(column, Expr::Column(c) if c.name == snapshot.vector_column());
        if wanted != snapshot.metric() || !on_vectors || !query.column_refs().is_empty() {
            return Ok(None);
        }
        let Ok(query) =
            constant(query, "query vector").and_then(|v| query_vector(&v, "query vector"))
        else {
            return Ok(None); // the distance function reports what is wrong with it
        };
        if query.len() != snapshot.dim() {
            return Ok(None);
        }
        let knn = KnnTable::new(
            collection.name().to_string(),
            snapshot.clone(),
            QueryVector::Values(query),
            k,
            None,
        );
        let columns: Vec<usize> = (0..snapshot.schema().fields().len()).collect();
        let target = scan.table_name.clone();
        input
            .clone()
            .transform_up(|plan| match plan {
                LogicalPlan::TableScan(TableScan {
                    table_name,
                    filters,
                    ..
                }) if table_name == target => {
                    let plan = LogicalPlanBuilder::scan_with_filters(
                        table_name,
                        provider_as_source(Arc::new(KnnTable::clone_of(&knn))),
                        Some(columns.clone()),
                        filters,
                    )?
                    .build()?;
                    Ok(Transformed::yes(plan))
                }
                other => Ok(Transformed::no(other)),
            })
            .map(|t| Some(t.data))
    }
}

/// `expr` in terms of the input of projection `p`: its column references to the projection's
/// outputs are replaced by the expressions computing them.
fn resolve(expr: Expr, p: &datafusion::logical_expr::Projection) -> Result<Expr> {
    expr.transform(|e| {
        if let Expr::Column(c) = &e {
            if let Some(i) = p.schema.maybe_index_of_column(c) {
                return Ok(Transformed::yes(p.expr[i].clone().unalias()));
            }
        }
        Ok(Transformed::no(e))
    })
    .map(|t| t.data)
}

impl OrderByDistance {
    /// `plan` (the input of a limit of `k` rows) with its sort's input rewritten, looking
    /// through the projections a limit may sit on.
    fn under_limit(&self, plan: &LogicalPlan, k: usize) -> Result<Option<LogicalPlan>> {
        match plan {
            LogicalPlan::Projection(p) => Ok(self
                .under_limit(&p.input, k)?
                .map(|input| plan.with_new_exprs(plan.expressions(), vec![input]))
                .transpose()?),
            LogicalPlan::Sort(sort) => {
                let k = sort.fetch.map_or(k, |f| f.min(k));
                Ok(self.rewrite(&sort.expr, &sort.input, k)?.map(|input| {
                    LogicalPlan::Sort(datafusion::logical_expr::Sort {
                        expr: sort.expr.clone(),
                        input: Arc::new(input),
                        fetch: sort.fetch,
                    })
                }))
            }
            _ => Ok(None),
        }
    }
}

impl AnalyzerRule for OrderByDistance {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_down_with_subqueries(|plan| {
            let LogicalPlan::Limit(limit) = &plan else {
                return Ok(Transformed::no(plan));
            };
            let (Ok(FetchType::Literal(Some(fetch))), Ok(SkipType::Literal(skip))) =
                (limit.get_fetch_type(), limit.get_skip_type())
            else {
                return Ok(Transformed::no(plan));
            };
            match self.under_limit(&limit.input, fetch.saturating_add(skip))? {
                None => Ok(Transformed::no(plan)),
                Some(input) => {
                    let new = plan.with_new_exprs(plan.expressions(), vec![input])?;
                    Ok(Transformed::yes(new))
                }
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "omendb_order_by_distance"
    }
}
