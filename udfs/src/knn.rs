//! `knn('collection', <query vector>, k [, ef [, nprobe]])`: the k nearest rows and their `_distance`.
//!
//! The query vector, k and ef may be literals or bound parameters (`$1`, `$name`), through
//! `PREPARE ... AS SELECT * FROM knn('docs', $1, 10)` / `EXECUTE`, or
//! `LogicalPlan::with_param_values`. A call is planned in steps:
//! - `planner`: SQL → `KnnNode` (a logical extension node holding the arguments as
//!   expressions, with the parameters' types declared);
//! - `bind`: an analyzer rule turns a node whose arguments are known into a scan of a
//!   `KnnTable` (`provider`), checking the vector, k and ef;
//! - `provider`: DataFusion pushes `WHERE` conditions into the table, which plans a
//!   `KnnExec` (`exec`) that searches when executed.
//!
//! `WHERE` conditions on the collection's columns are pushed into the search as a pre-filter:
//! `SELECT * FROM knn('docs', [..], 10) WHERE lang = 'en'` returns the 10 nearest rows whose
//! `lang` is `'en'` (10 rows whenever at least 10 match), not the matching rows among the 10
//! nearest. Conditions on `_distance` apply to the result, after the search.

use std::sync::Arc;

mod bind;
mod exec;
mod join;
mod node;
mod planner;
mod provider;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::error::{DataFusionError, Result};

pub(crate) use bind::constant;
pub use bind::KnnBinder;
pub use exec::KnnExec;
pub use join::{KnnJoinExec, KnnJoinTable};
pub use node::{KnnNode, KnnParams};
pub use planner::KnnPlanner;
pub use provider::{KnnTable, QueryVector};

use crate::engine_error;

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

pub(crate) fn usage(what: &str) -> DataFusionError {
    DataFusionError::Plan(format!(
        "knn(): {what}; usage: knn('collection', [v1, v2, ...], k [, ef [, nprobe]])"
    ))
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
