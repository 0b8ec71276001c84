//! `KnnFunction`: knn() as a plain table function, for a DataFusion session OmenDB's planner
//! does not extend (another library's session, reached through DataFusion's FFI). Its
//! arguments are positional and must be known when the statement is planned: a parameter
//! cannot be bound later, because a table function's result is fixed at planning.

use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::error::Result;
use omendb::Database;

use super::args::{check_arity, find_placeholder, text, usage, KnnLimits};
use super::bind::KnnBinder;

/// `knn('collection', [v1, v2, ...], k [, ef [, nprobe]])` as a table function. `WHERE`
/// conditions on the collection's columns reach the search as a pre-filter where the host
/// pushes filters into the table it returns.
#[derive(Debug)]
pub struct KnnFunction {
    binder: KnnBinder,
    /// Said after the error for a parameter argument: how the host's users give a literal.
    parameter_hint: String,
}

impl KnnFunction {
    /// knn() over the collections of `db`, refusing calls past `limits`.
    pub fn new(db: Arc<Database>, limits: KnnLimits) -> Self {
        KnnFunction {
            binder: KnnBinder::new(db, limits),
            parameter_hint: String::new(),
        }
    }

    /// The same function, its error for a parameter argument ending with `hint` (how the
    /// host's users write the vector as a literal).
    pub fn with_parameter_hint(self, hint: impl Into<String>) -> Self {
        KnnFunction {
            parameter_hint: hint.into(),
            ..self
        }
    }
}

impl TableFunctionImpl for KnnFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        check_arity(exprs.len())?;
        if let Some(p) = exprs.iter().find_map(find_placeholder) {
            return Err(usage(&format!(
                "the argument {p} is a parameter: in this session knn()'s arguments are fixed \
                 when the statement is planned, so give the query vector as a literal{}",
                self.parameter_hint
            )));
        }
        let collection = text(&exprs[0], "the first argument (the collection's name)")?;
        let table = self.binder.table(
            &collection,
            &exprs[1],
            &exprs[2],
            exprs.get(3),
            exprs.get(4),
        )?;
        Ok(Arc::new(table))
    }
}
