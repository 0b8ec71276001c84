//! A segment: one immutable, memory-mapped record batch plus what is derived from it: the
//! per-row norms the metric needs and the primary-key index (both written beside the segment
//! when it is committed and mapped with it; computed on first use for segments without them).
//!
//! Nothing derived lazily here runs a parallel loop: a lazy initializer runs while other
//! threads wait on it, and a rayon loop inside one can steal a job that waits on the same
//! initializer (the deadlock of issue 7).

use std::sync::{Arc, Mutex, OnceLock};

use arrow_array::RecordBatch;
use arrow_buffer::ScalarBuffer;

use crate::distance::Metric;
use crate::error::lock;
use crate::ids::IdRef;
use crate::ingest::vector_values;
use crate::pk::PkIndex;
use crate::schema::Layout;
use crate::storage::{Stamp, Store};
use crate::vector::{inverse_norms, squared_norms, Floats, VectorView};

/// One segment's rows and what is derived from them.
#[derive(Debug)]
pub(crate) struct Segment {
    pub id: u64,
    pub batch: RecordBatch,
    pub dim: usize,
    vector_index: usize,
    id_index: usize,
    pk: OnceLock<PkIndex>,
    sq_norms: OnceLock<ScalarBuffer<f32>>,
    inv_norms: OnceLock<ScalarBuffer<f32>>,
    /// The segment file's size and modification time when it was mapped.
    pub stamp: Option<Stamp>,
    /// Files to remove once no snapshot holds the segment (set when a merge replaced it).
    retired: Mutex<Option<Retired>>,
}

/// The store and the files of a replaced segment.
type Retired = (Arc<dyn Store>, Vec<String>);

impl Drop for Segment {
    fn drop(&mut self) {
        if let Some((store, files)) = lock(&self.retired).take() {
            for file in files {
                // A failure leaves garbage the next open removes.
                let _ = store.delete(&file);
            }
        }
    }
}

impl Segment {
    /// Segment `id` holding `batch` (in `layout`).
    pub(crate) fn new(id: u64, batch: RecordBatch, layout: &Layout) -> Self {
        Segment {
            id,
            batch,
            dim: layout.dim,
            vector_index: layout.vector_index,
            id_index: layout.id_index,
            pk: OnceLock::new(),
            sq_norms: OnceLock::new(),
            inv_norms: OnceLock::new(),
            stamp: None,
            retired: Mutex::new(None),
        }
    }

    /// Has `files` (this segment's files, which no manifest names any more) removed once the
    /// last snapshot that maps the segment is gone, never while a reader can still use them.
    pub(crate) fn retire(&self, store: Arc<dyn Store>, files: Vec<String>) {
        if store.shared() {
            return; // other servers may still read them (see `Store::shared`)
        }
        *lock(&self.retired) = Some((store, files));
    }

    /// Adopts the norms stored beside the segment for `metric` (see `vector::metric_norms`).
    pub(crate) fn with_norms(self, metric: Metric, norms: ScalarBuffer<f32>) -> Self {
        let slot = match metric {
            Metric::Cosine => &self.inv_norms,
            Metric::L2 => &self.sq_norms,
            Metric::Dot => return self,
        };
        let _ = slot.set(norms);
        self
    }

    pub(crate) fn rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// The vectors, row-major, read in place from the mapped file.
    pub(crate) fn vectors(&self) -> Floats<'_> {
        vector_values(self.batch.column(self.vector_index).as_ref(), self.dim)
    }

    /// Squared norms of every vector: stored with the segment (l2 collections), otherwise
    /// computed on first use, serially.
    pub(crate) fn sq_norms(&self) -> &[f32] {
        self.sq_norms
            .get_or_init(|| squared_norms(self.vectors(), self.dim).into())
    }

    /// 1/|v| of every vector (0 for zero vectors): stored with the segment (cosine
    /// collections), otherwise computed on first use, serially.
    pub(crate) fn inv_norms(&self) -> &[f32] {
        self.inv_norms
            .get_or_init(|| inverse_norms(self.vectors(), self.dim).into())
    }

    /// The per-row values `metric` ranks with (see `Metric::rank`): 1/|v| for cosine, |v|²
    /// for l2, none for dot.
    pub(crate) fn rank_norms(&self, metric: Metric) -> &[f32] {
        match metric {
            Metric::Dot => &[],
            Metric::Cosine => self.inv_norms(),
            Metric::L2 => self.sq_norms(),
        }
    }

    /// The rows as `metric` measures them.
    pub(crate) fn view(&self, metric: Metric) -> VectorView<'_> {
        let inv = if metric == Metric::Cosine {
            self.inv_norms()
        } else {
            &[]
        };
        VectorView::with_inverse_norms(self.vectors(), self.dim, metric, inv)
    }

    /// Adopts the primary-key index stored beside the segment.
    pub(crate) fn with_pk(self, pk: PkIndex) -> Self {
        let _ = self.pk.set(pk);
        self
    }

    /// The row holding `id`, through the primary-key index (built on first use for a segment
    /// stored without one).
    pub(crate) fn row_of(&self, id: IdRef<'_>) -> Option<u32> {
        let ids = self.batch.column(self.id_index).as_ref();
        self.pk.get_or_init(|| PkIndex::build(ids)).get(id, ids)
    }
}
