//! `KnnExec`: the physical plan of one knn() search. Planning builds it from a snapshot, the
//! query, k, ef and the pushed-down filter without searching; `execute()` evaluates the filter
//! and searches on a blocking thread. `EXPLAIN` shows what it will do, `EXPLAIN ANALYZE` what
//! it did.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use omendb::{SearchRequest, SegmentPlan, Selection, Snapshot};

use super::args::{check_dimension, check_k_and_ef, check_nprobe, query_vector, usage};
use super::node::Rebind;
use crate::engine_error;

/// The most vector comparisons (`Snapshot::search_work`) of a search run on the async worker
/// that polls it: a graph search up to ef 256, a scan of up to 8,192 rows, tens of
/// microseconds. Handing it to a blocking thread and back costs two thread wake-ups, about as
/// much again (about a tenth of the server's CPU for a bound knn() over Flight SQL). Longer
/// searches, and any with a filter to evaluate, run on a blocking thread.
pub const INLINE_WORK: usize = 8_192;

/// knn() searches run on blocking threads: how many, how long they waited for a thread, and
/// how long they ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KnnWaits {
    /// Searches run on a blocking thread.
    pub searches: u64,
    /// Time they waited for one, in all.
    pub queued: Duration,
    /// Time they ran, in all.
    pub searching: Duration,
}

/// Where searches add up their waits: the process's totals ([`knn_waits`]), and one query's
/// when a server polls its result stream through [`QueryWaits::poll_in`].
#[derive(Debug, Default)]
pub struct QueryWaits {
    searches: AtomicU64,
    queued_ns: AtomicU64,
    searching_ns: AtomicU64,
}

static TOTAL: QueryWaits = QueryWaits {
    searches: AtomicU64::new(0),
    queued_ns: AtomicU64::new(0),
    searching_ns: AtomicU64::new(0),
};

tokio::task_local! {
    /// The waits of the query whose stream is being polled (see `QueryWaits::poll_in`).
    static QUERY: Arc<QueryWaits>;
}

impl QueryWaits {
    fn add(&self, queued: Duration, searching: Duration) {
        let nanos = |d: Duration| d.as_nanos() as u64;
        self.searches.fetch_add(1, Ordering::Relaxed);
        self.queued_ns.fetch_add(nanos(queued), Ordering::Relaxed);
        self.searching_ns
            .fetch_add(nanos(searching), Ordering::Relaxed);
    }

    /// The waits added so far.
    pub fn get(&self) -> KnnWaits {
        KnnWaits {
            searches: self.searches.load(Ordering::Relaxed),
            queued: Duration::from_nanos(self.queued_ns.load(Ordering::Relaxed)),
            searching: Duration::from_nanos(self.searching_ns.load(Ordering::Relaxed)),
        }
    }

    /// Runs `work` (a handler that plans and starts a query) with the knn() searches of the
    /// plans it starts adding their waits to `self` too: those whose task context came from
    /// [`QueryWaits::attach`] (searches in tasks the plan spawns), and those started in scope.
    pub async fn scope<F: std::future::Future>(self: Arc<Self>, work: F) -> F::Output {
        QUERY.scope(self, work).await
    }

    /// Runs `poll` (one poll of a query's result stream) with the knn() searches it starts
    /// adding their waits to `self` too.
    pub fn poll_in<R>(self: &Arc<Self>, poll: impl FnOnce() -> R) -> R {
        QUERY.sync_scope(self.clone(), poll)
    }

    /// `task` carrying the waits of the query in scope (see [`QueryWaits::scope`]), so that
    /// every search of the plan run with it adds to them, whichever task runs it; `task`
    /// itself when no query is in scope.
    pub fn attach(task: Arc<TaskContext>) -> Arc<TaskContext> {
        let Ok(waits) = QUERY.try_with(Arc::clone) else {
            return task;
        };
        let config = task.session_config().clone().with_extension(waits);
        Arc::new(TaskContext::new(
            task.task_id(),
            task.session_id(),
            config,
            task.scalar_functions().clone(),
            task.higher_order_functions().clone(),
            task.aggregate_functions().clone(),
            task.window_functions().clone(),
            task.runtime_env(),
        ))
    }
}

/// Runs `frame` with the waits of the query in scope attached (see [`QueryWaits::attach`]).
pub async fn execute_frame(frame: DataFrame) -> Result<SendableRecordBatchStream> {
    let task = QueryWaits::attach(Arc::new(frame.task_ctx()));
    let plan = frame.create_physical_plan().await?;
    datafusion::physical_plan::execute_stream(plan, task)
}

/// The knn() searches run on blocking threads since the process started, and their waits.
pub fn knn_waits() -> KnnWaits {
    TOTAL.get()
}

/// One knn() search, planned.
#[derive(Debug, Clone)]
pub(crate) struct KnnExec {
    collection: String,
    snapshot: Arc<Snapshot>,
    /// The query vector, or empty when `input` computes it.
    query: Vec<f32>,
    /// The plan whose one row holds the query vector (`knn('docs', (SELECT ...), k)`).
    input: Option<Arc<dyn ExecutionPlan>>,
    k: usize,
    ef: Option<usize>,
    /// IVF lists scanned (`None`: the collection's setting).
    nprobe: Option<usize>,
    /// Only the indexed segments (`knn(..., fast => true)`).
    fast: bool,
    /// The pushed-down filter over the collection's stored columns, as written.
    filter: Option<(String, Arc<dyn PhysicalExpr>)>,
    /// Columns of the result schema (the collection's columns, then `_distance`) to return.
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    /// How a prepared plan binds this search again, when it can.
    rebind: Option<Rebind>,
}

impl KnnExec {
    /// A search of `snapshot` (of `collection`) for the `k` rows nearest `query` (or, with
    /// `input`, nearest the vector in the one row `input` returns).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        collection: String,
        snapshot: Arc<Snapshot>,
        query: Vec<f32>,
        input: Option<Arc<dyn ExecutionPlan>>,
        k: usize,
        ef: Option<usize>,
        filter: Option<(String, Arc<dyn PhysicalExpr>)>,
        projection: Option<Vec<usize>>,
    ) -> Result<Self> {
        let full = omendb::result_schema(&snapshot.schema());
        let schema = match &projection {
            Some(p) => Arc::new(full.project(p)?),
            None => full,
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Ok(KnnExec {
            collection,
            snapshot,
            query,
            input,
            k,
            ef,
            nprobe: None,
            fast: false,
            filter,
            projection,
            schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
            rebind: None,
        })
    }

    /// The same search scanning `nprobe` IVF lists (`None`: the collection's setting).
    pub(super) fn with_nprobe(self, nprobe: Option<usize>) -> Self {
        KnnExec { nprobe, ..self }
    }

    /// The same search of the indexed segments only (`true`), or of all.
    pub(super) fn with_fast(self, fast: bool) -> Self {
        KnnExec { fast, ..self }
    }

    /// This search, bindable again by a prepared plan when `rebind` is given.
    pub(super) fn with_rebind(self, rebind: Option<Rebind>) -> Self {
        KnnExec { rebind, ..self }
    }

    /// The same search with the parameters' new `values` and a fresh snapshot of the
    /// collection, ready to run again; `None` when it cannot be bound again (it was not
    /// planned from a knn() call, or the collection's columns changed) and must be planned
    /// anew.
    pub(crate) fn bind_again(&self, values: &ParamValues) -> Result<Option<KnnExec>> {
        let Some(rebind) = &self.rebind else {
            return Ok(None);
        };
        let snapshot = rebind
            .db
            .collection(&self.collection)
            .map_err(engine_error)?
            .snapshot();
        if snapshot.schema() != self.snapshot.schema() {
            return Ok(None);
        }
        let value = |id: &Option<String>| -> Result<Option<ScalarValue>> {
            id.as_ref()
                .map(|id| Ok(values.get_placeholders_with_values(id)?.value))
                .transpose()
        };
        let query = match value(&rebind.params.query)? {
            None => self.query.clone(),
            Some(v) => {
                let query = query_vector(&v.to_array()?, "query vector")?;
                check_dimension(&query, &self.collection, snapshot.dim())?;
                query
            }
        };
        let k = value(&rebind.params.k)?.unwrap_or(ScalarValue::UInt64(Some(self.k as u64)));
        let ef = match value(&rebind.params.ef)? {
            Some(v) => Some(v),
            None => self.ef.map(|ef| ScalarValue::UInt64(Some(ef as u64))),
        };
        let (k, ef) = check_k_and_ef(&rebind.limits, k, ef)?;
        let nprobe = match value(&rebind.params.nprobe)? {
            Some(v) => check_nprobe(Some(v))?,
            None => self.nprobe,
        };
        Ok(Some(KnnExec {
            snapshot,
            query,
            k,
            ef,
            nprobe,
            metrics: ExecutionPlanMetricsSet::new(),
            ..self.clone()
        }))
    }

    /// Whether the search for `query` is short enough to run on the async worker that polls
    /// it: no filter, and at most [`INLINE_WORK`] vector comparisons.
    fn is_short(&self, query: &[f32]) -> bool {
        self.filter.is_none()
            && query.len() == self.snapshot.dim()
            && self.snapshot.search_work(&self.request(query)) <= INLINE_WORK
    }

    /// The search of `query` with this plan's k, ef and nprobe (no filter).
    fn request<'a>(&self, query: &'a [f32]) -> SearchRequest<'a> {
        SearchRequest::new(query, self.k)
            .ef(self.ef)
            .nprobe(self.nprobe)
            .fast(self.fast)
    }

    /// The search, on the calling thread: filter, search, rows.
    fn search(&self, query: &[f32]) -> Result<RecordBatch> {
        let snapshot = &self.snapshot;
        check_dimension(query, &self.collection, snapshot.dim())?;
        let selection = match &self.filter {
            None => None,
            Some((_, predicate)) => Some(
                Selection::from_masks(snapshot, |batch| {
                    crate::condition_mask(predicate.as_ref(), batch, "knn() filter")
                })
                .map_err(engine_error)?,
            ),
        };
        let selected = selection.as_ref().map(|s| s.count(snapshot));
        let req = self.request(query).filter(selection.as_ref());
        // Searches of this snapshot started while another runs share its exact scans.
        let (mut hits, trace) = snapshot.search_together(&req).map_err(engine_error)?;
        let hits = hits.pop().unwrap_or_default();
        let m = |name: &'static str, v: usize| {
            MetricBuilder::new(&self.metrics)
                .global_counter(name)
                .add(v)
        };
        let count = |f: fn(&SegmentPlan) -> bool| trace.iter().filter(|p| f(p)).count();
        m("segments", trace.len());
        m(
            "segments_by_index",
            count(|p| matches!(p, SegmentPlan::Index)),
        );
        m(
            "segments_scanned",
            count(|p| matches!(p, SegmentPlan::Scan { .. })),
        );
        m(
            "segments_by_rows",
            count(|p| matches!(p, SegmentPlan::Rows { .. })),
        );
        m(
            "segments_skipped",
            count(|p| matches!(p, SegmentPlan::Skip)),
        );
        m(
            "rows_scanned",
            trace
                .iter()
                .map(|p| match p {
                    SegmentPlan::Scan { rows } | SegmentPlan::Rows { rows } => *rows,
                    _ => 0,
                })
                .sum(),
        );
        m("rows_selected", selected.unwrap_or(snapshot.count()));
        m("output_rows", hits.len());
        let batch = snapshot.hits_to_batch(&hits).map_err(engine_error)?;
        Ok(match &self.projection {
            Some(p) => batch.project(p)?,
            None => batch,
        })
    }
}

impl DisplayAs for KnnExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let ef = match self.ef {
            Some(ef) => ef.to_string(),
            None => format!(
                "{} (the collection's)",
                self.snapshot.index_settings().graph.ef_search
            ),
        };
        let indexes: Vec<&str> = self
            .snapshot
            .segments()
            .iter()
            .map(|s| s.index.map_or("flat", |k| k.as_str()))
            .collect();
        write!(
            f,
            "KnnExec: collection={}, k={}, ef={ef}, metric={}, segments=[{}]",
            self.collection,
            self.k,
            self.snapshot.metric(),
            indexes.join(", ")
        )?;
        if let Some(nprobe) = self.nprobe {
            write!(f, ", nprobe={nprobe}")?;
        }
        if self.fast {
            write!(f, ", fast (indexed segments only)")?;
        }
        if let Some((text, _)) = &self.filter {
            write!(f, ", filter={text}")?;
        }
        if self.input.is_some() {
            write!(f, ", query=from its input")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for KnnExec {
    fn name(&self) -> &'static str {
        "KnnExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.input.iter().collect()
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        match &self.filter {
            Some((_, e)) => f(e),
            None => Ok(TreeNodeRecursion::Continue),
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(KnnExec {
            input: children.into_iter().next(),
            ..self.as_ref().clone()
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "KnnExec has one partition, asked for {partition}"
            )));
        }
        // The query whose waits this search adds to: carried by the task context, or in
        // scope where the search starts.
        let waits = context
            .session_config()
            .get_extension::<QueryWaits>()
            .or_else(|| QUERY.try_with(Arc::clone).ok());
        let me = self.clone();
        let search = async move {
            let query = match &me.input {
                None => me.query.clone(),
                Some(input) => {
                    let rows = datafusion::physical_plan::collect(input.clone(), context).await?;
                    vector_of_one_row(&rows)?
                }
            };
            // The filter and the search are CPU work: they run on a blocking thread, unless
            // the search is short, with no filter to evaluate.
            if me.is_short(&query) {
                return me.search(&query);
            }
            let submitted = Instant::now();
            let (found, queued, searching) = tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let found = me.search(&query);
                (found, started - submitted, started.elapsed())
            })
            .await
            .map_err(|e| DataFusionError::Execution(format!("knn() search failed: {e}")))?;
            TOTAL.add(queued, searching);
            if let Some(waits) = waits {
                waits.add(queued, searching);
            }
            found
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::once(search),
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// The query vector in the one row (first column) a query-vector subquery returned.
fn vector_of_one_row(rows: &[RecordBatch]) -> Result<Vec<f32>> {
    let n: usize = rows.iter().map(RecordBatch::num_rows).sum();
    if n != 1 {
        return Err(usage(&format!(
            "the query vector subquery must return exactly one row, it returned {n}"
        )));
    }
    let batch = rows.iter().find(|b| b.num_rows() == 1).expect("one row");
    if batch.num_columns() != 1 {
        return Err(usage(&format!(
            "the query vector subquery must return one column, it returned {}",
            batch.num_columns()
        )));
    }
    query_vector(batch.column(0), "query vector")
}
