//! A segment: one immutable, memory-mapped record batch plus what is derived from it: the
//! per-row norms the metric needs (written beside the segment when it is committed and mapped
//! with it) and the id lookup table (built on first use).
//!
//! Nothing derived lazily here runs a parallel loop: a lazy initializer runs while other
//! threads wait on it, and a rayon loop inside one can steal a job that waits on the same
//! initializer (the deadlock of issue 7).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, RecordBatch};
use arrow_buffer::ScalarBuffer;

use crate::distance::{kernels, Metric};
use crate::storage::Stamp;

/// An id value, borrowed from a lookup or an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdRef<'a> {
    Int(i64),
    Str(&'a str),
}

/// Row lookup by id within one segment.
#[derive(Debug)]
pub enum IdMap {
    Int(HashMap<i64, u32>),
    Str(HashMap<Box<str>, u32>),
}

impl IdMap {
    pub fn get(&self, id: IdRef<'_>) -> Option<u32> {
        match (self, id) {
            (IdMap::Int(m), IdRef::Int(v)) => m.get(&v).copied(),
            (IdMap::Str(m), IdRef::Str(v)) => m.get(v).copied(),
            _ => None,
        }
    }
}

/// Iterates the ids of an id column (Int64 or Utf8, no nulls).
pub fn ids_of(array: &dyn Array) -> Box<dyn Iterator<Item = IdRef<'_>> + '_> {
    match array.data_type() {
        arrow_schema::DataType::Int64 => Box::new(
            array
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .map(|&v| IdRef::Int(v)),
        ),
        _ => Box::new(
            array
                .as_string::<i32>()
                .iter()
                .map(|v| IdRef::Str(v.unwrap_or_default())),
        ),
    }
}

#[derive(Debug)]
pub struct Segment {
    pub id: u64,
    pub batch: RecordBatch,
    pub dim: usize,
    vector_index: usize,
    id_index: usize,
    ids: OnceLock<IdMap>,
    sq_norms: OnceLock<ScalarBuffer<f32>>,
    inv_norms: OnceLock<ScalarBuffer<f32>>,
    /// The segment file's size and modification time when it was mapped.
    pub stamp: Option<Stamp>,
}

/// The per-row values `metric` needs precomputed: 1/|v| for cosine, |v|² for l2, none for dot.
pub fn metric_norms(metric: Metric, vectors: &[f32], dim: usize) -> Option<Vec<f32>> {
    match metric {
        Metric::Cosine => Some(crate::hnsw::inverse_norms(vectors, dim)),
        Metric::L2 => Some(squared_norms(vectors, dim)),
        Metric::Dot => None,
    }
}

fn squared_norms(vectors: &[f32], dim: usize) -> Vec<f32> {
    let dot = kernels().dot;
    vectors.chunks_exact(dim).map(|v| dot(v, v)).collect()
}

impl Segment {
    pub fn new(
        id: u64,
        batch: RecordBatch,
        id_index: usize,
        vector_index: usize,
        dim: usize,
    ) -> Self {
        Segment {
            id,
            batch,
            dim,
            vector_index,
            id_index,
            ids: OnceLock::new(),
            sq_norms: OnceLock::new(),
            inv_norms: OnceLock::new(),
            stamp: None,
        }
    }

    /// Adopts the norms stored beside the segment for `metric` (see [`metric_norms`]).
    pub fn with_norms(self, metric: Metric, norms: ScalarBuffer<f32>) -> Self {
        let slot = match metric {
            Metric::Cosine => &self.inv_norms,
            Metric::L2 => &self.sq_norms,
            Metric::Dot => return self,
        };
        let _ = slot.set(norms);
        self
    }

    pub fn rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// The vectors, row-major, read in place from the mapped file.
    pub fn vectors(&self) -> &[f32] {
        let fsl = self.batch.column(self.vector_index).as_fixed_size_list();
        let values = fsl
            .values()
            .as_primitive::<arrow_array::types::Float32Type>()
            .values();
        let start = fsl.offset() * self.dim;
        &values[start..start + fsl.len() * self.dim]
    }

    /// Squared norms of every vector: stored with the segment (l2 collections), otherwise
    /// computed on first use, serially.
    pub fn sq_norms(&self) -> &[f32] {
        self.sq_norms
            .get_or_init(|| squared_norms(self.vectors(), self.dim).into())
    }

    /// 1/|v| of every vector (0 for zero vectors): stored with the segment (cosine
    /// collections), otherwise computed on first use, serially.
    pub fn inv_norms(&self) -> &[f32] {
        self.inv_norms
            .get_or_init(|| crate::hnsw::inverse_norms(self.vectors(), self.dim).into())
    }

    /// The space an HNSW graph over this segment measures distances in.
    pub fn space(&self, metric: crate::Metric) -> crate::hnsw::Space<'_> {
        let inv = if metric == crate::Metric::Cosine {
            self.inv_norms()
        } else {
            &[]
        };
        crate::hnsw::Space::with_inverse_norms(self.vectors(), self.dim, metric, inv)
    }

    /// The id → row table, built on first use.
    pub fn id_map(&self) -> &IdMap {
        self.ids.get_or_init(|| {
            let col = self.batch.column(self.id_index);
            match col.data_type() {
                arrow_schema::DataType::Int64 => IdMap::Int(
                    col.as_primitive::<Int64Type>()
                        .values()
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| (v, i as u32))
                        .collect(),
                ),
                _ => IdMap::Str(
                    col.as_string::<i32>()
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (Box::from(v.unwrap_or_default()), i as u32))
                        .collect(),
                ),
            }
        })
    }
}

pub type SegmentRef = Arc<Segment>;
