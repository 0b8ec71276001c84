//! k-nearest-neighbour search over a snapshot's segments.
//!
//! Each segment gets a plan (`plan`): its index, an exact scan, an exact pass over the few
//! rows a filter selects, or nothing. Scanned segments are split into (row chunk × query
//! block) units run on rayon through `index::flat`; indexed and sparsely filtered segments are
//! searched per query, also on rayon. Every query's candidates are merged into one top-k.

mod plan;
mod selection;
mod together;

use std::sync::Arc;

use arrow_array::{ArrayRef, Float32Array, RecordBatch};
use rayon::prelude::*;

pub use selection::Selection;

use crate::index::flat::{scan_listed, FlatRows};
use crate::index::SearchParams;
use crate::options::IndexKind;
use crate::schema::{result_schema, QUERY_COLUMN};
use crate::snapshot::{SegmentView, Snapshot};
use crate::topk::{Neighbor, TopK};
use crate::{Error, Result};
use plan::{plan, Plan};
pub(crate) use together::Together;

/// Queries per block: the many-query kernel packs each row panel once per block, so bigger
/// blocks amortize packing.
const QUERY_BLOCK: usize = 1024;
/// Rows per parallel work unit.
const ROW_CHUNK: usize = 4096;

/// What to search for: one or more query vectors and how.
#[derive(Debug, Clone, Copy)]
pub struct SearchRequest<'a> {
    /// Query vectors, row-major (a multiple of the collection's dimension).
    pub queries: &'a [f32],
    /// Rows wanted per query.
    pub k: usize,
    /// Beam width for graph indexes, candidates re-ranked for IVF (default: the collection's
    /// `ef_search`).
    pub ef: Option<usize>,
    /// IVF lists scanned (default: the collection's `nprobe`).
    pub nprobe: Option<usize>,
    /// Only rows of this selection (made from the same snapshot) may be returned.
    pub filter: Option<&'a Selection>,
    /// Ignore indexes: scan every segment exactly.
    pub exact: bool,
    /// Search only the segments that have an index (LanceDB's `fast_search`): rows not yet
    /// indexed are not found. A snapshot with no index at all is searched whole.
    pub fast: bool,
}

impl<'a> SearchRequest<'a> {
    /// The `k` nearest rows to each of `queries`, with the collection's defaults.
    pub fn new(queries: &'a [f32], k: usize) -> Self {
        SearchRequest {
            queries,
            k,
            ef: None,
            nprobe: None,
            filter: None,
            exact: false,
            fast: false,
        }
    }

    /// With beam width `ef` (`None`: the collection's).
    pub fn ef(mut self, ef: Option<usize>) -> Self {
        self.ef = ef;
        self
    }

    /// Scanning `nprobe` IVF lists (`None`: the collection's).
    pub fn nprobe(mut self, nprobe: Option<usize>) -> Self {
        self.nprobe = nprobe;
        self
    }

    /// Restricted to the rows of `filter`.
    pub fn filter(mut self, filter: Option<&'a Selection>) -> Self {
        self.filter = filter;
        self
    }

    /// Exact (`true`) or through the indexes.
    pub fn exact(mut self, exact: bool) -> Self {
        self.exact = exact;
        self
    }

    /// Only the indexed segments (`true`), or every segment.
    pub fn fast(mut self, fast: bool) -> Self {
        self.fast = fast;
        self
    }
}

/// One search result: a row of a snapshot part, and its distance under the collection metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Index of the segment within the snapshot.
    pub part: u32,
    /// Row within that segment.
    pub row: u32,
    /// Distance to the query (see [`crate::Metric`]).
    pub distance: f32,
}

/// One segment of a snapshot, as `Snapshot::segments` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentInfo {
    /// Rows stored, deleted ones included.
    pub rows: usize,
    /// Rows deleted.
    pub deleted: usize,
    /// The segment's index, if it has one (otherwise it is searched exactly).
    pub index: Option<IndexKind>,
}

/// How one segment was searched, as `Snapshot::search_traced` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentPlan {
    /// Through its index.
    Index,
    /// Every row, exactly.
    Scan {
        /// Rows read per query.
        rows: usize,
    },
    /// Only the rows the filter selects, exactly.
    Rows {
        /// Rows read per query.
        rows: usize,
    },
    /// Not at all: the filter selects none of its rows.
    Skip,
}

/// Checks query vectors: the right dimension and finite values. Returns how many there are.
pub fn check_queries(queries: &[f32], dim: usize) -> Result<usize> {
    if queries.is_empty() || !queries.len().is_multiple_of(dim) {
        return Err(Error::invalid(format!(
            "query has {} values; expected a multiple of the collection's dimension {dim}",
            queries.len()
        )));
    }
    if let Some(i) = queries.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "query {} has a non-finite value at position {}",
            i / dim,
            i % dim
        )));
    }
    Ok(queries.len() / dim)
}

/// A part and row packed into a candidate id.
fn key(part: usize, row: u32) -> u64 {
    ((part as u64) << 32) | row as u64
}

impl Snapshot {
    /// The segments, in order.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.parts
            .iter()
            .map(|p| SegmentInfo {
                rows: p.seg.rows(),
                deleted: p.deletes.as_ref().map_or(0, |d| d.count()),
                index: p.index.as_ref().map(|i| i.kind()),
            })
            .collect()
    }

    /// About how many vector comparisons `req` makes (a compact code's counted as one), over
    /// all its queries and segments, found without searching: what a caller weighs to run it
    /// where it is or on a thread of its own. A filter's selected rows count as compared.
    pub fn search_work(&self, req: &SearchRequest<'_>) -> usize {
        let count = self.count();
        let k = req.k.min(count);
        if k == 0 {
            return 0;
        }
        let params = self.search_params(req, k, count);
        let skipped = self.skipped(req);
        let per_query = self
            .parts
            .iter()
            .enumerate()
            .map(|(p, part)| {
                let selected = req
                    .filter
                    .and_then(|f| f.parts[p].as_ref())
                    .map(|b| b.count());
                match &part.index {
                    _ if selected == Some(0) || skipped(part) => 0,
                    Some(index) if !req.exact => index
                        .search_work(&params)
                        .saturating_add(selected.unwrap_or(0)),
                    _ => selected.unwrap_or_else(|| part.seg.rows()),
                }
            })
            .fold(0usize, usize::saturating_add);
        let nq = req.queries.len() / self.dim().max(1);
        per_query.saturating_mul(nq)
    }

    /// Whether `req` leaves a segment out: a fast search, the segments without an index (when
    /// some segment has one).
    fn skipped(&self, req: &SearchRequest<'_>) -> impl Fn(&SegmentView) -> bool {
        let fast = req.fast && !req.exact && self.parts.iter().any(|p| p.index.is_some());
        move |part: &SegmentView| fast && part.index.is_none()
    }

    /// The index parameters of `req`'s searches, returning `k` of `count` live rows.
    fn search_params(&self, req: &SearchRequest<'_>, k: usize, count: usize) -> SearchParams {
        SearchParams {
            ef: req
                .ef
                .unwrap_or(self.index.graph.ef_search)
                .max(k)
                .min(count),
            nprobe: req.nprobe.unwrap_or(self.index.ivf.nprobe).max(1),
        }
    }

    /// Runs `req`: for each query, the `k` nearest live rows (of the filter, when there is
    /// one), nearest first; all of them when fewer match.
    pub fn search(&self, req: &SearchRequest<'_>) -> Result<Vec<Vec<Hit>>> {
        Ok(self.search_traced(req)?.0)
    }

    /// As [`Snapshot::search`], also saying how each segment was searched.
    pub fn search_traced(
        &self,
        req: &SearchRequest<'_>,
    ) -> Result<(Vec<Vec<Hit>>, Vec<SegmentPlan>)> {
        let dim = self.dim();
        let nq = check_queries(req.queries, dim)?;
        if let Some(f) = req.filter {
            f.check(self)?;
        }
        // No more than the live rows can come back: a huge k must not size the heaps.
        let count = self.count();
        let k = req.k.min(count);
        if k == 0 {
            return Ok((
                vec![Vec::new(); nq],
                vec![SegmentPlan::Skip; self.parts.len()],
            ));
        }
        let params = self.search_params(req, k, count);
        let ef = params.ef;
        let skipped = self.skipped(req);
        let plans: Vec<Plan> = self
            .parts
            .iter()
            .enumerate()
            .map(|(p, part)| {
                let sel = req.filter.and_then(|f| f.parts[p].as_ref());
                if skipped(part) {
                    Plan::Skip
                } else {
                    plan(part, sel, ef, req.exact)
                }
            })
            .collect();
        let trace = plans
            .iter()
            .zip(&self.parts)
            .map(|(plan, part)| match plan {
                Plan::Index(_) => SegmentPlan::Index,
                Plan::Scan(_) => SegmentPlan::Scan {
                    rows: part.seg.rows(),
                },
                Plan::Rows(rows) => SegmentPlan::Rows { rows: rows.len() },
                Plan::Skip => SegmentPlan::Skip,
            })
            .collect();
        let metric = self.metric();
        let mut qs = req.queries.to_vec();
        let qnorms: Vec<f32> = qs
            .chunks_exact_mut(dim)
            .map(|q| metric.prepare_query(q))
            .collect();

        // Work units: (part, first row, end row, first query, end query).
        let mut units = Vec::new();
        for (p, part) in self.parts.iter().enumerate() {
            if !matches!(plans[p], Plan::Scan(_)) {
                continue;
            }
            let rows = part.seg.rows();
            for r0 in (0..rows).step_by(ROW_CHUNK) {
                for q0 in (0..nq).step_by(QUERY_BLOCK) {
                    units.push((
                        p,
                        r0,
                        (r0 + ROW_CHUNK).min(rows),
                        q0,
                        (q0 + QUERY_BLOCK).min(nq),
                    ));
                }
            }
        }
        let scan_unit = |(p, r0, r1, q0, q1): (usize, usize, usize, usize, usize)| {
            let Plan::Scan(selection) = plans[p] else {
                unreachable!("units are made for scanned parts")
            };
            let part = &self.parts[p];
            let rows = FlatRows {
                metric,
                dim,
                vectors: part.seg.vectors(),
                norms: part.seg.rank_norms(metric),
                deletes: part.deletes.as_deref(),
                selection,
                key_base: key(p, 0),
            };
            (
                q0,
                rows.scan(r0, r1, &qs[q0 * dim..q1 * dim], &qnorms[q0..q1], k),
            )
        };
        // One unit runs on the calling thread: handing it to the pool and waiting for it
        // costs two thread wake-ups, more than a small scan.
        let partials: Vec<(usize, Vec<TopK>)> = if units.len() == 1 {
            units.into_iter().map(scan_unit).collect()
        } else {
            units.into_par_iter().map(scan_unit).collect()
        };

        let mut merged: Vec<TopK> = (0..nq).map(|_| TopK::new(k)).collect();
        for (q0, tops) in partials {
            for (i, t) in tops.into_iter().enumerate() {
                merged[q0 + i].merge(t.into_unsorted());
            }
        }
        if plans
            .iter()
            .any(|p| matches!(p, Plan::Index(_) | Plan::Rows(_)))
        {
            // Queries run in parallel; a single query on the calling thread (the pool would
            // add two thread wake-ups to a search of tens of microseconds).
            let per_query: Vec<Vec<Neighbor<u64>>> = if nq == 1 {
                vec![self.search_one(&plans, req.queries, &qs, k, &params)]
            } else {
                req.queries
                    .par_chunks(dim)
                    .zip(qs.par_chunks(dim))
                    .map(|(raw, prepared)| self.search_one(&plans, raw, prepared, k, &params))
                    .collect()
            };
            for (top, hits) in merged.iter_mut().zip(per_query) {
                top.merge(hits);
            }
        }
        let hits = merged
            .into_iter()
            .map(|t| {
                t.into_sorted()
                    .into_iter()
                    .map(|c| Hit {
                        part: (c.id >> 32) as u32,
                        row: c.id as u32,
                        distance: metric.finish(c.dist),
                    })
                    .collect()
            })
            .collect();
        Ok((hits, trace))
    }

    /// One query against the parts searched per query: indexes, and the selected rows of
    /// sparsely filtered parts. `raw` is the query as given, `prepared` as the scan uses it.
    fn search_one(
        &self,
        plans: &[Plan],
        raw: &[f32],
        prepared: &[f32],
        k: usize,
        params: &SearchParams,
    ) -> Vec<Neighbor<u64>> {
        let mut out = Vec::new();
        for (p, part) in self.parts.iter().enumerate() {
            match &plans[p] {
                Plan::Index(sel) => {
                    let index = part.index.as_ref().expect("index plans have an index");
                    let view = part.seg.view(self.metric);
                    let accept = |row: u32| {
                        !part.is_deleted(row as usize)
                            && sel.is_none_or(|s| s.contains(row as usize))
                    };
                    let filtered = part.deletes.is_some() || sel.is_some();
                    let found = index.search(&view, raw, k, params, filtered.then_some(&accept));
                    if found.len() < k.min(part.seg.rows()) {
                        // The index reached fewer than k rows (a graph cut apart, IVF lists
                        // that hold few of the filter's rows): when more qualify, they are
                        // scanned, so k rows come back whenever k match.
                        let rows: Vec<u32> =
                            (0..part.seg.rows() as u32).filter(|&r| accept(r)).collect();
                        if rows.len() > found.len() {
                            let top = scan_listed(&view, prepared, &rows, k, key(p, 0));
                            out.extend(top.into_unsorted());
                            continue;
                        }
                    }
                    out.extend(
                        found
                            .into_iter()
                            .map(|(row, dist)| Neighbor::new(dist, key(p, row))),
                    );
                }
                Plan::Rows(rows) => {
                    let view = part.seg.view(self.metric);
                    out.extend(scan_listed(&view, prepared, rows, k, key(p, 0)).into_unsorted());
                }
                Plan::Skip | Plan::Scan(_) => {}
            }
        }
        out
    }

    /// Searches as [`Snapshot::search`] and gathers every query's rows into one batch (the
    /// collection's columns and `_distance`, query by query, nearest first).
    pub fn search_rows(&self, req: &SearchRequest) -> Result<SearchResults> {
        let hits = self.search(req)?;
        let per_query = hits.iter().map(Vec::len).collect();
        let flat: Vec<Hit> = hits.into_iter().flatten().collect();
        Ok(SearchResults {
            rows: self.hits_to_batch(&flat)?,
            per_query,
        })
    }

    /// The rows of `hits` with a trailing `_distance` column, in hit order.
    pub fn hits_to_batch(&self, hits: &[Hit]) -> Result<RecordBatch> {
        let at: Vec<(usize, usize)> = hits
            .iter()
            .map(|h| (h.part as usize, h.row as usize))
            .collect();
        let rows = self.rows_at(&at)?;
        let mut columns: Vec<ArrayRef> = rows.columns().to_vec();
        columns.push(Arc::new(Float32Array::from_iter_values(
            hits.iter().map(|h| h.distance),
        )));
        Ok(RecordBatch::try_new(
            result_schema(&self.schema()),
            columns,
        )?)
    }
}

/// The answers to several queries as one batch: the rows of query 0, then query 1, ...
#[derive(Debug, Clone)]
pub struct SearchResults {
    rows: RecordBatch,
    per_query: Vec<usize>,
}

impl SearchResults {
    /// Results from rows in query order and how many rows answer each query.
    pub fn new(rows: RecordBatch, per_query: Vec<usize>) -> Result<SearchResults> {
        let total: usize = per_query.iter().sum();
        if total != rows.num_rows() {
            return Err(Error::Internal(format!(
                "{} result rows, but the queries' counts add up to {total}",
                rows.num_rows()
            )));
        }
        Ok(SearchResults { rows, per_query })
    }

    /// The rows, query by query.
    pub fn rows(&self) -> &RecordBatch {
        &self.rows
    }

    /// The rows, query by query.
    pub fn into_rows(self) -> RecordBatch {
        self.rows
    }

    /// How many rows answer each query.
    pub fn per_query(&self) -> &[usize] {
        &self.per_query
    }

    /// The query each row answers, row by row.
    pub fn query_of_rows(&self) -> impl Iterator<Item = usize> + '_ {
        self.per_query
            .iter()
            .enumerate()
            .flat_map(|(q, &n)| std::iter::repeat_n(q, n))
    }

    /// The rows with a leading Int32 `_query` column numbering the query each row answers.
    pub fn numbered(&self) -> Result<RecordBatch> {
        let query: arrow_array::Int32Array = self.query_of_rows().map(|q| q as i32).collect();
        let mut fields = vec![Arc::new(arrow_schema::Field::new(
            QUERY_COLUMN,
            arrow_schema::DataType::Int32,
            false,
        ))];
        fields.extend(self.rows.schema().fields().iter().cloned());
        let mut columns: Vec<ArrayRef> = vec![Arc::new(query)];
        columns.extend(self.rows.columns().iter().cloned());
        Ok(RecordBatch::try_new(
            Arc::new(arrow_schema::Schema::new(fields)),
            columns,
        )?)
    }
}
