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
//! The modules, in order; each uses only modules before it (no cycle):
//! 1. `args`: the usage error, `KnnLimits`, and the checks of the arguments' values
//!    (query vector, dimension, k, ef, nprobe), shared by every step below;
//! 2. `node`: `KnnNode`, its `KnnParams`, and `Rebind` (what a planned search keeps to be
//!    bound again);
//! 3. `exec`: `KnnExec`; `join`: knn_join()'s table and plan (uses `args` only);
//! 4. `provider`: `KnnTable`, planning a `KnnExec`;
//! 5. `bind`: `KnnBinder`, `KnnNode` → a scan of a `KnnTable`;
//! 6. `planner`: `KnnPlanner`, SQL → `KnnNode` (checking literal calls with a `KnnBinder`)
//!    or a `KnnJoinTable`;
//! 7. `function`: `KnnFunction`, knn() as a plain table function (a `KnnBinder` making a
//!    `KnnTable` from literal arguments), for sessions `KnnPlanner` does not extend.
//!
//! `WHERE` conditions on the collection's columns are pushed into the search as a pre-filter:
//! `SELECT * FROM knn('docs', [..], 10) WHERE lang = 'en'` returns the 10 nearest rows whose
//! `lang` is `'en'` (10 rows whenever at least 10 match), not the matching rows among the 10
//! nearest. Conditions on `_distance` apply to the result, after the search.

mod args;
mod node;

mod exec;
mod filtered;
mod join;

mod provider;

mod bind;

mod planner;

mod function;

pub use args::KnnLimits;
pub(crate) use args::{check_dimension, constant, float32_list, query_vector};
pub(crate) use bind::KnnBinder;
pub(crate) use exec::KnnExec;
pub use exec::{execute_frame, knn_waits, KnnWaits, QueryWaits, INLINE_WORK};
pub use filtered::{vector_value, FilteredSearch};
pub use function::KnnFunction;
pub(crate) use node::KnnNode;
pub(crate) use planner::KnnPlanner;
pub(crate) use provider::{KnnTable, QueryVector};
