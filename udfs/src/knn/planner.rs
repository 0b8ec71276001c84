//! SQL → `KnnNode`: the relation planner that takes `knn('docs', <vector>, k [, ef])` in a
//! FROM clause. Unlike a table function it keeps the arguments as expressions, so they may be
//! bound parameters; their types are declared here (the vector a list of Float32, k and ef
//! Int64) so a server can describe them.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ScalarValue, TableReference};
use datafusion::error::Result;
use datafusion::logical_expr::expr::Placeholder;
use datafusion::logical_expr::planner::{
    PlannedRelation, RelationPlanner, RelationPlannerContext, RelationPlanning,
};
use datafusion::logical_expr::{Expr, Extension, LogicalPlan};
use datafusion::sql::sqlparser::ast::{FunctionArg, FunctionArgExpr, TableFactor};
use omendb::Database;

use super::bind::KnnBinder;
use super::node::KnnNode;
use super::{usage, KnnLimits};
use crate::engine_error;

/// The table a knn() call's columns are qualified with.
pub(super) const KNN_TABLE: &str = "knn()";

/// Plans knn() calls into `KnnNode`s.
#[derive(Debug)]
pub struct KnnPlanner {
    db: Arc<Database>,
    /// Checks calls whose arguments are all literals while they are planned.
    binder: KnnBinder,
}

impl KnnPlanner {
    /// A planner over the collections of `db`, refusing literal arguments past `limits`.
    pub fn new(db: Arc<Database>, limits: KnnLimits) -> Self {
        KnnPlanner {
            binder: KnnBinder::new(db.clone(), limits),
            db,
        }
    }
}

/// Gives an untyped parameter the type its argument position needs.
fn typed(expr: Expr, ty: DataType) -> Result<Expr> {
    expr.transform(|e| {
        Ok(match e {
            Expr::Placeholder(Placeholder { id, field: None }) => {
                Transformed::yes(Expr::Placeholder(Placeholder::new_with_field(
                    id,
                    Some(Arc::new(Field::new("", ty.clone(), true))),
                )))
            }
            other => Transformed::no(other),
        })
    })
    .map(|t| t.data)
}

impl RelationPlanner for KnnPlanner {
    fn plan_relation(
        &self,
        relation: TableFactor,
        context: &mut dyn RelationPlannerContext,
    ) -> Result<RelationPlanning> {
        let TableFactor::Table {
            name,
            alias,
            args: Some(args),
            ..
        } = &relation
        else {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        };
        let is_knn = name.0.len() == 1
            && name.0[0]
                .as_ident()
                .is_some_and(|i| i.value.eq_ignore_ascii_case("knn"));
        if !is_knn {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        }
        let alias = alias.clone();
        let empty = DFSchema::empty();
        let mut exprs = Vec::new();
        for arg in args.args.clone() {
            let FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) = arg else {
                return Err(usage(&format!("unsupported argument {arg}")));
            };
            exprs.push(context.sql_to_expr(e, &empty)?);
        }
        if exprs.len() != 3 && exprs.len() != 4 {
            return Err(usage(&format!(
                "expected 3 or 4 arguments, got {}",
                exprs.len()
            )));
        }
        let collection = match &exprs[0] {
            Expr::Literal(
                ScalarValue::Utf8(Some(s))
                | ScalarValue::LargeUtf8(Some(s))
                | ScalarValue::Utf8View(Some(s)),
                _,
            ) => s.clone(),
            other => {
                return Err(usage(&format!(
                    "the first argument must be a collection name string, got {other}"
                )))
            }
        };
        let c = self.db.collection(&collection).map_err(engine_error)?;
        let schema = omendb::result_schema(&c.schema());
        let schema = Arc::new(DFSchema::try_from_qualified_schema(
            TableReference::bare(KNN_TABLE),
            &schema,
        )?);
        let vector = DataType::List(Arc::new(Field::new("item", DataType::Float32, true)));
        let mut exprs = exprs.into_iter().skip(1);
        let query = typed(exprs.next().expect("3 or 4"), vector)?;
        let k = typed(exprs.next().expect("3 or 4"), DataType::Int64)?;
        let ef = exprs
            .next()
            .map(|e| typed(e, DataType::Int64))
            .transpose()?;
        let node = KnnNode {
            collection,
            query,
            k,
            ef,
            schema,
        };
        self.binder.check_if_bound(&node)?;
        let plan = LogicalPlan::Extension(Extension {
            node: Arc::new(node),
        });
        Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(
            plan, alias,
        ))))
    }
}
