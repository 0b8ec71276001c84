//! The vectors of one segment as a metric sees them (`VectorView`: the rows, row-major, and
//! the per-row norms the metric needs), and `Scorer`, the distance from one prepared query to
//! any row, which graph search and quantizers implement.

use std::borrow::Cow;

use crate::distance::{kernels, prefetch_rows, Metric};

/// Distances from one query to the rows of a segment, as a search computes them (in the
/// metric's ranking form, see [`Metric::rank`]).
pub(crate) trait Scorer {
    /// The distance to row `i`.
    fn dist(&self, i: u32) -> f32;
    /// Starts loading what `dist(i)` reads.
    fn prefetch(&self, i: u32);
    /// How many rows there are.
    fn len(&self) -> usize;
}

/// The rows of a segment under a metric, with what the metric needs precomputed.
pub struct VectorView<'a> {
    data: &'a [f32],
    dim: usize,
    metric: Metric,
    /// 1/|v| per row, for cosine (empty otherwise).
    inv_norms: Cow<'a, [f32]>,
}

impl<'a> VectorView<'a> {
    /// A view of `data` (row-major, `dim` values per row), computing what `metric` needs.
    pub fn new(data: &'a [f32], dim: usize, metric: Metric) -> Self {
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
        data: &'a [f32],
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

    /// Starts loading row `i` into the cache.
    #[inline]
    pub(crate) fn prefetch(&self, i: u32) {
        prefetch_rows(self.data, i as usize * self.dim, self.dim);
    }

    /// Row `i`.
    #[inline]
    pub(crate) fn row(&self, i: u32) -> &[f32] {
        let i = i as usize;
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Row `i` scaled to unit length for cosine (as graph codes store it), as it is otherwise.
    pub(crate) fn normalized_row(&self, i: usize) -> Cow<'_, [f32]> {
        let row = self.row(i as u32);
        if self.metric == Metric::Cosine {
            let inv = self.inv_norms[i];
            Cow::Owned(row.iter().map(|v| v * inv).collect())
        } else {
            Cow::Borrowed(row)
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
        let k = kernels();
        match self.metric {
            Metric::L2 => (k.l2sq)(q, self.row(i)),
            Metric::Dot => Metric::Dot.rank((k.dot)(q, self.row(i)), 0.0, 0.0),
            Metric::Cosine => {
                Metric::Cosine.rank((k.dot)(q, self.row(i)), 0.0, self.inv_norms[i as usize])
            }
        }
    }

    /// Distance between rows `a` and `b`, in the metric's ranking form.
    pub(crate) fn dist_rows(&self, a: u32, b: u32) -> f32 {
        let k = kernels();
        match self.metric {
            Metric::L2 => (k.l2sq)(self.row(a), self.row(b)),
            Metric::Dot => Metric::Dot.rank((k.dot)(self.row(a), self.row(b)), 0.0, 0.0),
            Metric::Cosine => Metric::Cosine.rank(
                (k.dot)(self.row(a), self.row(b)),
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
pub(crate) fn inverse_norms(data: &[f32], dim: usize) -> Vec<f32> {
    let dot = kernels().dot;
    data.chunks_exact(dim)
        .map(|v| {
            let n = dot(v, v).sqrt();
            if n > 0.0 {
                1.0 / n
            } else {
                0.0
            }
        })
        .collect()
}

/// |v|² for every vector.
pub(crate) fn squared_norms(data: &[f32], dim: usize) -> Vec<f32> {
    let dot = kernels().dot;
    data.chunks_exact(dim).map(|v| dot(v, v)).collect()
}

/// The per-row values `metric` ranks with: 1/|v| for cosine, |v|² for l2, none for dot.
pub(crate) fn metric_norms(metric: Metric, data: &[f32], dim: usize) -> Option<Vec<f32>> {
    match metric {
        Metric::Cosine => Some(inverse_norms(data, dim)),
        Metric::L2 => Some(squared_norms(data, dim)),
        Metric::Dot => None,
    }
}
