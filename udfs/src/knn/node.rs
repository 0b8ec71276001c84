//! `KnnNode`: knn() in a logical plan, before its arguments are known. The query vector, k,
//! ef and nprobe are expressions, so bound parameters (`$1`) reach them through
//! `LogicalPlan::with_param_values` or `EXECUTE`; the node becomes a scan when it is analyzed
//! (`bind`). `Rebind` is what a planned search keeps of its node (the database, the limits,
//! which arguments are parameters) so a prepared plan can bind it again.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use datafusion::common::DFSchemaRef;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNodeCore};
use omendb::Database;

use super::args::KnnLimits;

/// One knn() call in a logical plan.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct KnnNode {
    /// The collection searched.
    pub(crate) collection: String,
    /// The query vector: a list literal or a parameter.
    pub(super) query: Expr,
    /// Rows wanted.
    pub(super) k: Expr,
    /// Beam width (graphs) or candidates re-ranked (IVF), if given.
    pub(super) ef: Option<Expr>,
    /// IVF lists scanned, if given (only with `ef`: arguments are positional).
    pub(super) nprobe: Option<Expr>,
    /// Only the indexed segments (`fast => true`).
    pub(super) fast: bool,
    /// The parameters the arguments are, when an argument is exactly one (`$1`): kept when
    /// the parameters are replaced by values, so a prepared plan can be bound again.
    pub(crate) params: KnnParams,
    /// The collection's columns and `_distance`, qualified as the call's table.
    pub(crate) schema: DFSchemaRef,
}

/// The parameter each knn() argument is, if it is one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct KnnParams {
    /// The query vector's parameter.
    pub(crate) query: Option<String>,
    /// k's parameter.
    pub(super) k: Option<String>,
    /// ef's parameter.
    pub(super) ef: Option<String>,
    /// nprobe's parameter.
    pub(super) nprobe: Option<String>,
}

impl KnnParams {
    /// The parameters among the arguments of a call.
    pub(super) fn of(query: &Expr, k: &Expr, ef: Option<&Expr>, nprobe: Option<&Expr>) -> Self {
        let id = |e: &Expr| match e {
            Expr::Placeholder(p) => Some(p.id.clone()),
            _ => None,
        };
        KnnParams {
            query: id(query),
            k: id(k),
            ef: ef.and_then(id),
            nprobe: nprobe.and_then(id),
        }
    }

    /// Whether `id` is one of them.
    pub(crate) fn contains(&self, id: &str) -> bool {
        [&self.query, &self.k, &self.ef, &self.nprobe]
            .into_iter()
            .any(|p| p.as_deref() == Some(id))
    }
}

/// What binding a planned knn() search again takes: the database to take a fresh snapshot
/// from, the limits the new k and ef are held to, and which arguments are parameters.
#[derive(Debug, Clone)]
pub(super) struct Rebind {
    pub(super) db: Arc<Database>,
    pub(super) limits: KnnLimits,
    pub(super) params: KnnParams,
}

impl PartialOrd for KnnNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.collection.partial_cmp(&other.collection)
    }
}

impl UserDefinedLogicalNodeCore for KnnNode {
    fn name(&self) -> &str {
        "Knn"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        let mut exprs = vec![self.query.clone(), self.k.clone()];
        exprs.extend(self.ef.clone());
        exprs.extend(self.nprobe.clone());
        exprs
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "Knn: collection={}, query={}, k={}",
            self.collection, self.query, self.k
        )?;
        if let Some(ef) = &self.ef {
            write!(f, ", ef={ef}")?;
        }
        if let Some(nprobe) = &self.nprobe {
            write!(f, ", nprobe={nprobe}")?;
        }
        if self.fast {
            write!(f, ", fast")?;
        }
        Ok(())
    }

    fn with_exprs_and_inputs(
        &self,
        mut exprs: Vec<Expr>,
        _inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        let nprobe = (exprs.len() > 3).then(|| exprs.remove(3));
        let ef = (exprs.len() > 2).then(|| exprs.remove(2));
        let k = exprs.remove(1);
        let query = exprs.remove(0);
        Ok(KnnNode {
            collection: self.collection.clone(),
            query,
            k,
            ef,
            nprobe,
            fast: self.fast,
            params: self.params.clone(),
            schema: self.schema.clone(),
        })
    }
}
