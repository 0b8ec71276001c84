//! `Prepared`: a statement planned once and run many times with bound parameters.
//!
//! Any statement can be prepared: each run replaces the parameters by their values and plans
//! the result, as `EXECUTE` does. A query that only searches (its rows all come from knn()
//! calls, and its parameters are exactly knn() arguments: `SELECT id, _distance FROM
//! knn('docs', $1, 10) WHERE lang = 'en'`) is planned once, at its first run; later runs bind
//! the new vector, k and ef into the planned searches, take a fresh snapshot of each
//! collection and run, skipping SQL analysis, optimization and physical planning, which cost
//! several times the search itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::{FieldRef, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::ParamValues;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::physical_plan::{execute_stream, ExecutionPlan};
use datafusion::prelude::SessionContext;

use crate::knn::{execute_frame, KnnExec, KnnNode, QueryWaits};

type Planned = (Arc<dyn ExecutionPlan>, Arc<TaskContext>);

/// A statement planned once, run with parameter values.
pub struct Prepared {
    ctx: SessionContext,
    plan: LogicalPlan,
    /// The schema of the rows a run returns.
    schema: SchemaRef,
    /// The parameters (`$1`, `$name`) and their types where known.
    parameters: HashMap<String, Option<FieldRef>>,
    /// Whether runs can bind the planned searches again instead of planning anew.
    reusable: bool,
    /// The physical plan of the last run, for binding again, and the task context it ran in
    /// (made once: it copies the session's function registries).
    physical: Mutex<Option<Planned>>,
    /// See [`Prepared::keeps_for_its_text`].
    keeps: bool,
    /// The SQL text it was planned from, if it was.
    sql: Option<String>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("plan", &self.plan)
            .field("reusable", &self.reusable)
            .finish_non_exhaustive()
    }
}

impl Prepared {
    /// Parses and plans `sql` in `ctx`. SQL `EXECUTE name(...)` is planned as the statement
    /// `name` stands for with those values, so its result has that statement's schema.
    pub async fn new(ctx: &SessionContext, sql: &str) -> Result<Prepared> {
        let plan = crate::sql::logical_plan(&ctx.state(), sql).await?;
        if let LogicalPlan::Statement(datafusion::logical_expr::Statement::Execute(_)) = plan {
            let named = ctx.execute_logical_plan(plan).await?.logical_plan().clone();
            let mut prepared = Prepared::from_plan(ctx, named)?;
            prepared.keeps = false;
            prepared.sql = Some(sql.to_string());
            return Ok(prepared);
        }
        let mut prepared = Prepared::from_plan(ctx, plan)?;
        prepared.sql = Some(sql.to_string());
        Ok(prepared)
    }

    /// The SQL text the statement was planned from (none for [`Prepared::from_plan`]).
    pub fn sql(&self) -> Option<&str> {
        self.sql.as_deref()
    }

    /// The session the statement runs in.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Whether the plan may be kept for the same text: not for SQL `PREPARE`, which must run
    /// each time it is sent, nor for `EXECUTE`, whose name a later `PREPARE` may redefine.
    pub fn keeps_for_its_text(&self) -> bool {
        self.keeps
    }

    /// Prepares an already planned statement.
    pub fn from_plan(ctx: &SessionContext, plan: LogicalPlan) -> Result<Prepared> {
        // The parameters of SQL `PREPARE name AS ...` are those of the statement it defines,
        // bound by a later `EXECUTE name(...)`: running it takes none.
        let parameters = if defines_statement(&plan) {
            HashMap::new()
        } else {
            plan.get_parameter_fields()?
        };
        Ok(Prepared {
            keeps: !defines_statement(&plan),
            sql: None,
            ctx: ctx.clone(),
            reusable: only_searches(&plan),
            schema: Arc::new(plan.schema().as_arrow().clone()),
            plan,
            parameters,
            physical: Mutex::new(None),
        })
    }

    /// The statement's logical plan, parameters unbound.
    pub fn logical_plan(&self) -> &LogicalPlan {
        &self.plan
    }

    /// The schema of the rows a run returns.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The parameters by name (`$1`, `$name`), with their types where the statement implies
    /// one (a knn() query vector is a list of Float32, k and ef Int64).
    pub fn parameters(&self) -> &HashMap<String, Option<FieldRef>> {
        &self.parameters
    }

    /// Refuses `values` a run would refuse in its knn() searches (a query vector that is not a
    /// list of numbers, or not of its collection's dimension), without running anything: a
    /// server checks a statement's bound values when the client executes it, not when it
    /// fetches the rows.
    pub fn check_values(&self, values: &ParamValues) -> Result<()> {
        let unbound = match values {
            ParamValues::List(v) => v.is_empty(),
            ParamValues::Map(m) => m.is_empty(),
        };
        if unbound || defines_statement(&self.plan) {
            return Ok(()); // nothing bound yet (the run reports what is missing), or PREPARE
        }
        let mut outcome = Ok(());
        let _ = self.plan.apply(|node| {
            let LogicalPlan::Extension(ext) = node else {
                return Ok(TreeNodeRecursion::Continue);
            };
            let Some(knn) = ext.node.as_any().downcast_ref::<KnnNode>() else {
                return Ok(TreeNodeRecursion::Continue);
            };
            let Some(id) = &knn.params.query else {
                return Ok(TreeNodeRecursion::Continue);
            };
            let dim = knn
                .schema
                .fields()
                .iter()
                .find_map(|f| match f.data_type() {
                    datafusion::arrow::datatypes::DataType::FixedSizeList(_, d) => {
                        Some(*d as usize)
                    }
                    _ => None,
                });
            outcome = values
                .get_placeholders_with_values(id)
                .and_then(|v| v.value.to_array())
                .and_then(|v| crate::knn::query_vector(&v, "query vector"))
                .and_then(|q| match dim {
                    Some(dim) => crate::knn::check_dimension(&q, &knn.collection, dim),
                    None => Ok(()),
                });
            Ok(if outcome.is_ok() {
                TreeNodeRecursion::Continue
            } else {
                TreeNodeRecursion::Stop
            })
        });
        outcome
    }

    /// Whether a run after the first binds the planned search again rather than planning.
    pub fn binds_planned_searches(&self) -> bool {
        self.reusable
    }

    /// Whether the statement is a plain search whose `n` parameters are all it takes: the
    /// shape of a statement with `n` vectors typed in (`sql::lift_vectors`) runs as it.
    pub fn searches_with(&self, n: usize) -> bool {
        self.reusable && self.parameters.len() == n
    }

    /// Runs the statement with `values` for its parameters.
    pub async fn execute(&self, values: ParamValues) -> Result<SendableRecordBatchStream> {
        if !self.reusable {
            let plan = if defines_statement(&self.plan) {
                self.plan.clone()
            } else {
                self.plan.clone().with_param_values(values)?
            };
            return execute_frame(self.ctx.execute_logical_plan(plan).await?).await;
        }
        let planned = self.physical.lock().expect("not poisoned").clone();
        let (plan, task) = match planned {
            Some((plan, task)) => match bind_again(plan, &values)? {
                Some(plan) => (plan, task),
                None => self.plan_anew(values).await?,
            },
            None => self.plan_anew(values).await?,
        };
        execute_stream(plan, QueryWaits::attach(task))
    }

    /// Plans the statement with `values`, keeping the plan for the next run.
    async fn plan_anew(&self, values: ParamValues) -> Result<Planned> {
        let plan = self.plan.clone().with_param_values(values)?;
        let physical = self
            .ctx
            .execute_logical_plan(plan)
            .await?
            .create_physical_plan()
            .await?;
        let planned = (physical, self.ctx.task_ctx());
        *self.physical.lock().expect("not poisoned") = Some(planned.clone());
        Ok(planned)
    }
}

/// Whether `plan` is SQL `PREPARE`, which stores a statement in the session when it runs.
fn defines_statement(plan: &LogicalPlan) -> bool {
    matches!(
        plan,
        LogicalPlan::Statement(datafusion::logical_expr::Statement::Prepare(_))
    )
}

/// `plan` with every knn() search bound to `values` and every other node's run state reset,
/// or `None` when a search cannot be bound again.
fn bind_again(
    plan: Arc<dyn ExecutionPlan>,
    values: &ParamValues,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let mut stale = false;
    let plan = plan
        .transform_up(|node| {
            if let Some(knn) = node.downcast_ref::<KnnExec>() {
                return Ok(match knn.bind_again(values)? {
                    Some(knn) => Transformed::yes(Arc::new(knn) as Arc<dyn ExecutionPlan>),
                    None => {
                        stale = true;
                        Transformed::new(node, false, TreeNodeRecursion::Stop)
                    }
                });
            }
            Ok(Transformed::yes(node.reset_state()?))
        })?
        .data;
    Ok((!stale).then_some(plan))
}

/// Whether `plan` is a query whose rows all come from knn() calls, whose parameters are all
/// knn() arguments on their own, and which computes nothing that could change between runs
/// (a volatile or stable function, a subquery): then its planned form holds for any values.
fn only_searches(plan: &LogicalPlan) -> bool {
    let mut ok = true;
    let _ = plan.apply(|node| {
        let knn = match node {
            LogicalPlan::Extension(ext) => match ext.node.as_any().downcast_ref::<KnnNode>() {
                Some(knn) => Some(knn),
                None => {
                    ok = false;
                    return Ok(TreeNodeRecursion::Stop);
                }
            },
            LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::Sort(_)
            | LogicalPlan::Limit(_)
            | LogicalPlan::SubqueryAlias(_)
            | LogicalPlan::Aggregate(_)
            | LogicalPlan::Join(_)
            | LogicalPlan::Union(_)
            | LogicalPlan::Distinct(_)
            | LogicalPlan::Values(_)
            | LogicalPlan::EmptyRelation(_) => None,
            _ => {
                ok = false;
                return Ok(TreeNodeRecursion::Stop);
            }
        };
        let _ = node.apply_expressions(|e| {
            // A knn() argument that is exactly a parameter is bound by the search itself.
            if let (Some(knn), Expr::Placeholder(p)) = (knn, e) {
                if knn.params.contains(&p.id) {
                    return Ok(TreeNodeRecursion::Continue);
                }
            }
            e.apply(|e| {
                let fixed = match e {
                    Expr::Placeholder(_)
                    | Expr::ScalarSubquery(_)
                    | Expr::Exists(_)
                    | Expr::InSubquery(_)
                    | Expr::OuterReferenceColumn(..) => false,
                    Expr::ScalarFunction(f) => {
                        f.func.signature().volatility == Volatility::Immutable
                    }
                    _ => true,
                };
                if !fixed {
                    ok = false;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        });
        Ok(if ok {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    ok
}
