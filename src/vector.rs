//! The vectors of one segment as a metric sees them (`VectorView`: the rows, row-major, in
//! f32 or half precision (`Floats`), and the per-row norms the metric needs), and `Scorer`,
//! the distance from one prepared query to any row, which graph search and quantizers
//! implement. Half-precision rows are widened to f32 as they are read; every distance is
//! computed in f32 arithmetic.

use std::borrow::Cow;

use half::f16;

use crate::distance::{kernels, prefetch_rows, Metric};

/// Row-major vector values as a segment stores them.
#[derive(Clone, Copy, Debug)]
pub enum Floats<'a> {
    /// Single precision.
    F32(&'a [f32]),
    /// Half precision (`vector_type=float16` collections).
    F16(&'a [f16]),
}

impl<'a> Floats<'a> {
    /// How many values there are.
    pub fn len(&self) -> usize {
        match self {
            Floats::F32(v) => v.len(),
            Floats::F16(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values `start..end`.
    pub fn slice(&self, start: usize, end: usize) -> Floats<'a> {
        match self {
            Floats::F32(v) => Floats::F32(&v[start..end]),
            Floats::F16(v) => Floats::F16(&v[start..end]),
        }
    }

    /// The values as f32: borrowed when they are f32, widened into `buf` when half.
    pub fn widened<'b>(&self, buf: &'b mut Vec<f32>) -> &'b [f32]
    where
        'a: 'b,
    {
        match *self {
            Floats::F32(v) => v,
            Floats::F16(v) => {
                buf.resize(v.len(), 0.0);
                (kernels().widen)(v, buf);
                buf
            }
        }
    }

    /// The values as f32, copied only when half.
    pub fn to_f32(self) -> Cow<'a, [f32]> {
        match self {
            Floats::F32(v) => Cow::Borrowed(v),
            Floats::F16(v) => {
                let mut out = vec![0.0; v.len()];
                (kernels().widen)(v, &mut out);
                Cow::Owned(out)
            }
        }
    }

    /// Calls `f` with each row of `dim` values, as f32.
    pub(crate) fn for_each_row(&self, dim: usize, mut f: impl FnMut(&[f32])) {
        match *self {
            Floats::F32(v) => v.chunks_exact(dim).for_each(f),
            Floats::F16(v) => {
                let mut buf = vec![0.0; dim];
                for row in v.chunks_exact(dim) {
                    (kernels().widen)(row, &mut buf);
                    f(&buf);
                }
            }
        }
    }
}

/// Distances from one query to the rows of a segment, as a search computes them (in the
/// metric's ranking form, see [`Metric::rank`]).
pub(crate) trait Scorer {
    /// The distance to row `i`.
    fn dist(&self, i: u32) -> f32;
    /// The distances to four rows; scorers with a kernel for several rows at once override it.
    #[inline]
    fn dist4(&self, ids: [u32; 4]) -> [f32; 4] {
        ids.map(|i| self.dist(i))
    }
    /// Starts loading what `dist(i)` reads.
    fn prefetch(&self, i: u32);
    /// How many rows ahead of the distance computation a search prefetches them: enough to
    /// hide the latency, few enough not to fill the core's miss buffers with large rows.
    #[inline]
    fn lookahead(&self) -> usize {
        4
    }
    /// How many rows there are.
    fn len(&self) -> usize;
}

/// The rows of a segment under a metric, with what the metric needs precomputed.
pub struct VectorView<'a> {
    data: Floats<'a>,
    dim: usize,
    metric: Metric,
    /// 1/|v| per row, for cosine (empty otherwise).
    inv_norms: Cow<'a, [f32]>,
}

impl<'a> VectorView<'a> {
    /// A view of `data` (row-major, `dim` values per row), computing what `metric` needs.
    pub fn new(data: &'a [f32], dim: usize, metric: Metric) -> Self {
        Self::of(Floats::F32(data), dim, metric)
    }

    /// A view of `data` in either precision, computing what `metric` needs.
    pub fn of(data: Floats<'a>, dim: usize, metric: Metric) -> Self {
        let inv_norms = if metric == Metric::Cosine {
            Cow::Owned(inverse_norms(data, dim))
        } else {
            Cow::Borrowed(&[][..])
        };
        VectorView {
            data,
            dim,
            metric,
            inv_norms,
        }
    }

    /// A view whose inverse norms (cosine) were computed already, e.g. stored with a segment.
    pub(crate) fn with_inverse_norms(
        data: Floats<'a>,
        dim: usize,
        metric: Metric,
        inv_norms: &'a [f32],
    ) -> Self {
        VectorView {
            data,
            dim,
            metric,
            inv_norms: Cow::Borrowed(inv_norms),
        }
    }

    /// Rows in the view.
    pub fn len(&self) -> usize {
        self.data.len() / self.dim
    }

    /// Whether the view has no rows.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Values per row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The metric distances are measured in.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// Starts loading row `i` (and, for cosine, its norm) into the cache.
    #[inline]
    pub(crate) fn prefetch(&self, i: u32) {
        match self.data {
            Floats::F32(v) => prefetch_rows(v, i as usize * self.dim, self.dim),
            Floats::F16(v) => prefetch_rows(v, i as usize * self.dim, self.dim),
        }
        prefetch_rows(&self.inv_norms, i as usize, 1);
    }

    /// Row `i`'s stored values.
    #[inline]
    fn stored_row(&self, i: u32) -> Floats<'a> {
        let i = i as usize;
        self.data.slice(i * self.dim, (i + 1) * self.dim)
    }

    /// Whether rows `a` and `b` hold the same values (duplicates).
    #[inline]
    pub(crate) fn same_rows(&self, a: u32, b: u32) -> bool {
        match (self.stored_row(a), self.stored_row(b)) {
            (Floats::F32(x), Floats::F32(y)) => x == y,
            (Floats::F16(x), Floats::F16(y)) => x == y,
            _ => false,
        }
    }

    /// Row `i` as f32 (widened when stored in half precision).
    #[inline]
    pub(crate) fn row(&self, i: u32) -> Cow<'a, [f32]> {
        self.stored_row(i).to_f32()
    }

    /// Row `i` scaled to unit length for cosine (as graph codes store it), as it is otherwise.
    pub(crate) fn normalized_row(&self, i: usize) -> Cow<'a, [f32]> {
        let row = self.row(i as u32);
        if self.metric == Metric::Cosine {
            let inv = self.inv_norms[i];
            Cow::Owned(row.iter().map(|v| v * inv).collect())
        } else {
            row
        }
    }

    /// `q · row i` and `|q - row i|²`'s kernel, whichever the metric ranks by, for a query in
    /// f32 and the row as stored.
    #[inline]
    fn kernel(&self, q: &[f32], i: u32) -> f32 {
        let k = kernels();
        match (self.metric, self.stored_row(i)) {
            (Metric::L2, Floats::F32(r)) => (k.l2sq)(q, r),
            (Metric::L2, Floats::F16(r)) => (k.l2sq_h)(q, r),
            (_, Floats::F32(r)) => (k.dot)(q, r),
            (_, Floats::F16(r)) => (k.dot_h)(q, r),
        }
    }

    /// A query prepared for this view (see [`Metric::prepare_query`]).
    pub(crate) fn prepare(&self, q: &[f32]) -> Vec<f32> {
        let mut q = q.to_vec();
        self.metric.prepare_query(&mut q);
        q
    }

    /// Distance from a prepared query to row `i`, in the metric's ranking form.
    #[inline]
    pub(crate) fn dist(&self, q: &[f32], i: u32) -> f32 {
        let s = self.kernel(q, i);
        match self.metric {
            Metric::L2 => s,
            Metric::Dot => Metric::Dot.rank(s, 0.0, 0.0),
            Metric::Cosine => Metric::Cosine.rank(s, 0.0, self.inv_norms[i as usize]),
        }
    }

    /// Distance between rows `a` and `b`, in the metric's ranking form, with row `a` already
    /// in f32 (`ra`, from [`VectorView::row`]), so comparing one row with many widens it once.
    #[inline]
    pub(crate) fn dist_from(&self, ra: &[f32], a: u32, b: u32) -> f32 {
        let s = self.kernel(ra, b);
        match self.metric {
            Metric::L2 => s,
            Metric::Dot => Metric::Dot.rank(s, 0.0, 0.0),
            Metric::Cosine => Metric::Cosine.rank(
                s,
                0.0,
                self.inv_norms[a as usize] * self.inv_norms[b as usize],
            ),
        }
    }

    /// Exact distances from `q`, prepared for this view.
    pub(crate) fn scorer<'q>(&'q self, q: &'q [f32]) -> Exact<'q> {
        Exact { view: self, q }
    }
}

/// Exact distances from a prepared query.
pub(crate) struct Exact<'a> {
    view: &'a VectorView<'a>,
    q: &'a [f32],
}

impl Scorer for Exact<'_> {
    #[inline]
    fn dist(&self, i: u32) -> f32 {
        self.view.dist(self.q, i)
    }
    #[inline]
    fn prefetch(&self, i: u32) {
        self.view.prefetch(i)
    }
    fn len(&self) -> usize {
        self.view.len()
    }
}

/// 1/|v| for every vector (0 for zero vectors). Serial on purpose: segments compute it
/// inside lazy initializers, where a rayon loop could wait on itself.
pub(crate) fn inverse_norms(data: Floats<'_>, dim: usize) -> Vec<f32> {
    squared_norms(data, dim)
        .into_iter()
        .map(|n2| {
            let n = n2.sqrt();
            if n > 0.0 {
                1.0 / n
            } else {
                0.0
            }
        })
        .collect()
}

/// |v|² for every vector.
pub(crate) fn squared_norms(data: Floats<'_>, dim: usize) -> Vec<f32> {
    let dot = kernels().dot;
    let mut out = Vec::with_capacity(data.len() / dim);
    data.for_each_row(dim, |v| out.push(dot(v, v)));
    out
}

/// The per-row values `metric` ranks with: 1/|v| for cosine, |v|² for l2, none for dot.
pub(crate) fn metric_norms(metric: Metric, data: Floats<'_>, dim: usize) -> Option<Vec<f32>> {
    match metric {
        Metric::Cosine => Some(inverse_norms(data, dim)),
        Metric::L2 => Some(squared_norms(data, dim)),
        Metric::Dot => None,
    }
}
