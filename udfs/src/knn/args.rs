//! knn()'s arguments: the usage error, the limits, and the checks every step applies to the
//! query vector, k, ef and nprobe once their values are known (when bound, and again when a
//! prepared plan binds new values). Nothing here depends on another step of knn().

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::error::ArrowError;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::Expr;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;

use crate::engine_error;

/// The table a knn() call's columns are qualified with.
pub(super) const KNN_TABLE: &str = "knn()";

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

/// A planning error about a knn() call: `what` is wrong, followed by the call's usage.
pub(super) fn usage(what: &str) -> DataFusionError {
    DataFusionError::Plan(format!(
        "knn(): {what}; usage: knn('collection', [v1, v2, ...], k [, ef [, nprobe]] \
         [, ef => n] [, nprobe => n] [, fast => true])"
    ))
}

/// Refuses a knn() call without 3 to 5 positional arguments.
pub(super) fn check_arity(given: usize) -> Result<()> {
    if (3..=5).contains(&given) {
        return Ok(());
    }
    Err(usage(&format!(
        "expected 3 to 5 arguments (collection, query vector, k [, ef [, nprobe]]), got {given}"
    )))
}

/// A planning error about a knn_join() call: `what` is wrong, followed by the call's usage.
pub(super) fn join_usage(what: &str) -> DataFusionError {
    DataFusionError::Plan(format!(
        "knn_join(): {what}; usage: knn_join((SELECT ... FROM queries), 'its vector column', \
         'collection', k [, ef [, nprobe]])"
    ))
}

/// The string a literal argument holds.
pub(super) fn text(expr: &Expr, what: &str) -> Result<String> {
    match expr {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
            _,
        ) => Ok(s.clone()),
        other => Err(usage(&format!("{what} must be a string, got {other}"))),
    }
}

/// Refuses a query vector whose dimension is not the collection's, naming both.
pub(crate) fn check_dimension(query: &[f32], collection: &str, dim: usize) -> Result<()> {
    if query.len() == dim {
        return Ok(());
    }
    Err(engine_error(omendb::Error::InvalidInput(format!(
        "knn(): the query vector has dimension {}, collection '{collection}' has dimension \
         {dim}",
        query.len()
    ))))
}

/// `value` cast to `List<Float32>`: `None` when it is not a list (`List`, `LargeList` or
/// `FixedSizeList`), the cast's error when its items are not numbers.
pub(crate) fn float32_list(value: &ArrayRef) -> Option<std::result::Result<ArrayRef, ArrowError>> {
    match value.data_type() {
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
            let list_type = DataType::List(Arc::new(Field::new("item", DataType::Float32, true)));
            Some(datafusion::arrow::compute::cast(value, &list_type))
        }
        _ => None,
    }
}

/// The floats of a query vector given as any numeric list.
pub(crate) fn query_vector(value: &ArrayRef, what: &str) -> Result<Vec<f32>> {
    let as_list = match float32_list(value) {
        Some(cast) => {
            cast.map_err(|e| usage(&format!("the {what} must be a list of numbers ({e})")))?
        }
        None => {
            return Err(usage(&format!(
                "the {what} must be an array of numbers, got {}",
                value.data_type()
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
        Some(v) if v.is_null() => None, // NULL: the default
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
pub(super) fn find_placeholder(expr: &Expr) -> Option<String> {
    let mut found = None;
    let _ = expr.apply(|e| {
        if let Expr::Placeholder(p) = e {
            found = Some(p.id.clone());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}
