//! SQL → `KnnNode`: the relation planner that takes `knn('docs', <vector>, k [, ef [, nprobe]])` in a
//! FROM clause. Unlike a table function it keeps the arguments as expressions, so they may be
//! bound parameters; their types are declared here (the vector a list of Float32, k and ef
//! Int64) so a server can describe them.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ScalarValue, TableReference};
use datafusion::datasource::provider_as_source;
use datafusion::error::Result;
use datafusion::logical_expr::expr::Placeholder;
use datafusion::logical_expr::planner::{
    PlannedRelation, RelationPlanner, RelationPlannerContext, RelationPlanning,
};
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, LogicalPlanBuilder};
use datafusion::sql::sqlparser::ast::{
    Expr as SQLExpr, FunctionArg, FunctionArgExpr, TableFactor, Value,
};
use omendb::Database;

use super::args::{check_arity, join_usage, text, usage, KnnLimits, KNN_TABLE};
use super::bind::KnnBinder;
use super::join::KnnJoinTable;
use super::node::{KnnNode, KnnParams};
use crate::engine_error;

/// Plans knn() calls into `KnnNode`s.
#[derive(Debug)]
pub(crate) struct KnnPlanner {
    db: Arc<Database>,
    /// Checks calls whose arguments are all literals while they are planned.
    binder: KnnBinder,
}

impl KnnPlanner {
    /// A planner over the collections of `db`, refusing literal arguments past `limits`.
    pub(crate) fn new(db: Arc<Database>, limits: KnnLimits) -> Self {
        KnnPlanner {
            binder: KnnBinder::new(db.clone(), limits),
            db,
        }
    }
}

impl KnnPlanner {
    /// `knn_join((SELECT ... FROM queries), 'vector', 'docs', k [, ef [, nprobe]])`.
    fn plan_join(&self, queries: LogicalPlan, exprs: Vec<Expr>) -> Result<LogicalPlan> {
        if !(3..=5).contains(&exprs.len()) {
            return Err(join_usage(&format!(
                "expected 4 to 6 arguments, got {}",
                exprs.len() + 1
            )));
        }
        let column = text(&exprs[0], "the query vector column")?;
        let collection = text(&exprs[1], "the collection")?;
        let (k, ef) = self.binder.k_and_ef(&exprs[2], exprs.get(3))?;
        let nprobe = self.binder.nprobe(exprs.get(4))?;
        let c = self.db.collection(&collection).map_err(engine_error)?;
        let join = KnnJoinTable::new(queries, column, collection, c.snapshot(), k, ef, nprobe)?;
        LogicalPlanBuilder::scan("knn_join()", provider_as_source(Arc::new(join)), None)?.build()
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
        let function = match name.0.as_slice() {
            [part] => part
                .as_ident()
                .map(|i| i.value.to_ascii_lowercase())
                .unwrap_or_default(),
            _ => String::new(),
        };
        if function != "knn" && function != "knn_join" {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        }
        let alias = alias.clone();
        let empty = DFSchema::empty();
        let mut exprs = Vec::new();
        let mut raw = args.args.clone();
        // knn_join's query table: a query in parentheses, planned as a derived table.
        let mut queries = None;
        if function == "knn_join" {
            if let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(SQLExpr::Subquery(q)))) =
                raw.first().cloned()
            {
                raw.remove(0);
                queries = Some(context.plan(TableFactor::Derived {
                    lateral: false,
                    subquery: q,
                    alias: None,
                    sample: None,
                })?);
            } else {
                return Err(usage(
                    "knn_join()'s first argument must be a query in parentheses, e.g. \
                     (SELECT * FROM queries)",
                ));
            }
        }
        // The names knn() takes (knn's collection; knn_join's vector column and collection).
        let names = if function == "knn" { 1 } else { 2 };
        // knn()'s options by name, after the positional arguments: ef => n, nprobe => n,
        // fast => true.
        let mut named = Named::default();
        if function == "knn" {
            raw = named.take(raw)?;
        }
        for (i, arg) in raw.into_iter().enumerate() {
            let FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) = arg else {
                return Err(usage(&format!("unsupported argument {arg}")));
            };
            if let (true, SQLExpr::Identifier(name)) = (i < names, &e) {
                return Err(usage(&format!(
                    "a name is a quoted string: write {function}('{}', ...), not \
                     {function}({}, ...)",
                    name.value, name.value
                )));
            }
            exprs.push(context.sql_to_expr(e, &empty)?);
        }
        if let Some(queries) = queries {
            let plan = self.plan_join(queries, exprs)?;
            return Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(
                plan, alias,
            ))));
        }
        check_arity(exprs.len())?;
        for (name, value, at) in [("ef", named.ef, 3), ("nprobe", named.nprobe, 4)] {
            let Some(value) = value else { continue };
            if exprs.len() > at {
                return Err(usage(&format!(
                    "{name} is given twice, by position and by name"
                )));
            }
            // A named nprobe without ef: ef NULL (the collection's) holds ef's place.
            exprs.resize(at, Expr::Literal(ScalarValue::Int64(None), None));
            exprs.push(context.sql_to_expr(value, &empty)?);
        }
        let collection = text(&exprs[0], "the first argument (the collection's name)")?;
        let c = self.db.collection(&collection).map_err(engine_error)?;
        let schema = omendb::result_schema(&c.schema());
        let schema = Arc::new(DFSchema::try_from_qualified_schema(
            TableReference::bare(KNN_TABLE),
            &schema,
        )?);
        let vector = DataType::List(Arc::new(Field::new("item", DataType::Float32, true)));
        let mut exprs = exprs.into_iter().skip(1);
        let query = typed(exprs.next().expect("3 to 5"), vector)?;
        let k = typed(exprs.next().expect("3 to 5"), DataType::Int64)?;
        let mut count = || exprs.next().map(|e| typed(e, DataType::Int64)).transpose();
        let (ef, nprobe) = (count()?, count()?);
        let node = KnnNode {
            params: KnnParams::of(&query, &k, ef.as_ref(), nprobe.as_ref()),
            collection,
            query,
            k,
            ef,
            nprobe,
            fast: named.fast,
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

/// knn()'s arguments given by name.
#[derive(Default)]
struct Named {
    ef: Option<SQLExpr>,
    nprobe: Option<SQLExpr>,
    fast: bool,
}

impl Named {
    /// Takes the named arguments out of `args`, which must follow the positional ones; the
    /// positional ones.
    fn take(&mut self, args: Vec<FunctionArg>) -> Result<Vec<FunctionArg>> {
        let mut positional = Vec::new();
        let mut seen = Vec::new();
        for arg in args {
            let (name, value) = match arg {
                FunctionArg::Named {
                    name,
                    arg: FunctionArgExpr::Expr(value),
                    ..
                } => (name.value.to_ascii_lowercase(), value),
                FunctionArg::Unnamed(_) if seen.is_empty() => {
                    positional.push(arg);
                    continue;
                }
                FunctionArg::Unnamed(_) => {
                    return Err(usage(&format!(
                        "the positional argument {arg} follows a named one"
                    )))
                }
                other => return Err(usage(&format!("unsupported argument {other}"))),
            };
            if seen.contains(&name) {
                return Err(usage(&format!("{name} is given twice")));
            }
            match name.as_str() {
                "ef" => self.ef = Some(value),
                "nprobe" => self.nprobe = Some(value),
                "fast" => {
                    self.fast = match value {
                        SQLExpr::Value(v) => match v.value {
                            Value::Boolean(b) => b,
                            other => return Err(fast_usage(&other.to_string())),
                        },
                        other => return Err(fast_usage(&other.to_string())),
                    }
                }
                other => {
                    return Err(usage(&format!(
                        "no argument is named {other} (named arguments: ef, nprobe, fast)"
                    )))
                }
            }
            seen.push(name);
        }
        Ok(positional)
    }
}

fn fast_usage(got: &str) -> datafusion::error::DataFusionError {
    usage(&format!("fast must be true or false, got {got}"))
}
