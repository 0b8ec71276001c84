//! `KnnNode` → a scan of a `KnnTable`, once its arguments are known: the analyzer rule that
//! evaluates the query vector, k and ef (bound parameters substituted by then), checks them
//! against the collection and the limits, and takes the snapshot the search will read. Filters
//! above the scan are then pushed into it by DataFusion's own filter pushdown.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::Schema;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ScalarValue, TableReference};
use datafusion::datasource::provider_as_source;
use datafusion::error::Result;
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::optimizer::AnalyzerRule;
use omendb::Database;

use super::exec::Rebind;
use super::node::KnnNode;
use super::planner::KNN_TABLE;
use super::provider::{KnnTable, QueryVector};
use super::{check_dimension, query_vector, usage, KnnLimits};
use crate::engine_error;

/// Turns bound `KnnNode`s into scans.
#[derive(Debug)]
pub struct KnnBinder {
    db: Arc<Database>,
    limits: KnnLimits,
}

impl KnnBinder {
    /// A binder over `db`, refusing calls past `limits`.
    pub fn new(db: Arc<Database>, limits: KnnLimits) -> Self {
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

    fn bind(&self, node: &KnnNode) -> Result<LogicalPlan> {
        let (k, ef) = self.k_and_ef(&node.k, node.ef.as_ref())?;
        let name = &node.collection;
        let collection = self.db.collection(name).map_err(engine_error)?;
        let snapshot = collection.snapshot();
        let query = match node.query.clone().unalias_nested().data {
            Expr::ScalarSubquery(sq) if sq.outer_ref_columns.is_empty() => {
                QueryVector::Subquery(sq.subquery.as_ref().clone())
            }
            _ => {
                let query = query_vector(&constant(&node.query, "query vector")?, "query vector")?;
                check_dimension(&query, name, snapshot.dim())?;
                QueryVector::Values(query)
            }
        };
        let nprobe = self.nprobe(node.nprobe.as_ref())?;
        let table = KnnTable::new(name.clone(), snapshot, query, k, ef)
            .with_nprobe(nprobe)
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

/// k and ef from their values, checked against `limits`.
pub(super) fn check_k_and_ef(
    limits: &KnnLimits,
    k: ScalarValue,
    ef: Option<ScalarValue>,
) -> Result<(usize, Option<usize>)> {
    let k = match k {
        ScalarValue::Int64(Some(k)) if k >= 0 => k as usize,
        ScalarValue::Int32(Some(k)) if k >= 0 => k as usize,
        ScalarValue::UInt64(Some(k)) => k as usize,
        other => {
            return Err(usage(&format!(
                "k must be a non-negative integer, got {}",
                described(&other)
            )))
        }
    };
    let ef = positive(ef, "ef")?;
    if k > limits.max_k {
        return Err(usage(&format!(
            "k = {k} exceeds the limit of {} rows (max_k)",
            limits.max_k
        )));
    }
    if let Some(ef) = ef.filter(|&ef| ef > limits.max_ef) {
        return Err(usage(&format!(
            "ef = {ef} exceeds the limit of {} (max_ef)",
            limits.max_ef
        )));
    }
    Ok((k, ef))
}

/// nprobe from its value: a positive integer (the engine scans at most every list).
pub(super) fn check_nprobe(nprobe: Option<ScalarValue>) -> Result<Option<usize>> {
    positive(nprobe, "nprobe")
}

/// An optional argument that must be a positive integer when given; `name` names it in the
/// error.
fn positive(value: Option<ScalarValue>, name: &str) -> Result<Option<usize>> {
    Ok(match value {
        None => None,
        Some(ScalarValue::Int64(Some(n))) if n > 0 => Some(n as usize),
        Some(ScalarValue::Int32(Some(n))) if n > 0 => Some(n as usize),
        Some(ScalarValue::UInt64(Some(n))) if n > 0 => Some(n as usize),
        Some(other) => {
            return Err(usage(&format!(
                "{name} must be a positive integer, got {}",
                described(&other)
            )))
        }
    })
}

/// A value as an error shows it: a string quoted, anything else with its type.
fn described(value: &ScalarValue) -> String {
    match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => format!("the string '{s}'"),
        other if other.is_null() => "NULL".to_string(),
        other => format!("{other} ({})", other.data_type()),
    }
}

/// Evaluates a constant argument expression (a list literal, `make_array(...)`, a cast, a
/// bound parameter's value...) to a single value.
pub(crate) fn constant(expr: &Expr, what: &str) -> Result<ArrayRef> {
    if let Some(p) = find_placeholder(expr) {
        return Err(usage(&format!(
            "the {what} is the parameter {p}, which has no value: bind it (EXECUTE, or the \
             statement's parameters)"
        )));
    }
    // Coerced as a session would (`[1, 2.5]` is a list of floats), then planned.
    let simplifier = ExprSimplifier::new(SimplifyContext::default());
    let expr = simplifier.coerce(expr.clone(), &DFSchema::empty())?;
    let physical = datafusion::physical_expr::create_physical_expr(
        &expr,
        &DFSchema::empty(),
        &ExecutionProps::new(),
        &PhysicalPlanningContext::default(),
    )
    .map_err(|e| usage(&format!("the {what} must be a constant ({e})")))?;
    let one_row = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    physical.evaluate(&one_row)?.into_array(1)
}

/// The first parameter `expr` still holds.
fn find_placeholder(expr: &Expr) -> Option<String> {
    let mut found = None;
    let _ = expr.apply(|e| {
        if let Expr::Placeholder(p) = e {
            found = Some(p.id.clone());
            return Ok(datafusion::common::tree_node::TreeNodeRecursion::Stop);
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    found
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
