//! A snapshot: one committed version of a collection, immutable and shared by `Arc`. Readers
//! keep the snapshot they started with while writers commit new ones.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BooleanArray, Float32Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::distance::Metric;
use crate::search::Hit;
use crate::segment::{ids_of, IdRef, SegmentRef};
use crate::storage::Bitmap;
use crate::validate::Layout;
use crate::Result;

/// One segment as this snapshot sees it: its rows and the deletions committed so far.
#[derive(Debug, Clone)]
pub struct Part {
    pub seg: SegmentRef,
    pub deletes: Option<Arc<Bitmap>>,
    /// The segment's HNSW graph, mapped from its index file; `None` means searched exactly.
    pub index: Option<Arc<crate::hnsw::Hnsw>>,
}

impl Part {
    #[inline]
    pub fn is_deleted(&self, row: usize) -> bool {
        self.deletes.as_ref().is_some_and(|d| d.contains(row))
    }
    pub fn live_rows(&self) -> usize {
        self.seg.rows() - self.deletes.as_ref().map_or(0, |d| d.count())
    }
}

#[derive(Debug)]
pub struct Snapshot {
    pub(crate) layout: Arc<Layout>,
    pub(crate) metric: Metric,
    pub(crate) version: u64,
    pub(crate) parts: Vec<Part>,
    pub(crate) index: crate::storage::IndexSettings,
}

/// The name of the distance column search results carry.
pub const DISTANCE_COLUMN: &str = "_distance";

impl Snapshot {
    pub fn schema(&self) -> SchemaRef {
        self.layout.schema.clone()
    }
    pub fn dim(&self) -> usize {
        self.layout.dim
    }
    pub fn metric(&self) -> Metric {
        self.metric
    }
    /// The manifest version this snapshot reads.
    pub fn version(&self) -> u64 {
        self.version
    }
    pub fn id_column(&self) -> &str {
        self.layout.schema.field(self.layout.id_index).name()
    }
    pub fn vector_column(&self) -> &str {
        self.layout.schema.field(self.layout.vector_index).name()
    }
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }
    /// The same rows with every index left out: searches of it are exact.
    pub fn without_indexes(&self) -> Snapshot {
        Snapshot {
            layout: self.layout.clone(),
            metric: self.metric,
            version: self.version,
            parts: self
                .parts
                .iter()
                .map(|p| Part {
                    index: None,
                    ..p.clone()
                })
                .collect(),
            index: self.index,
        }
    }

    /// Live (not deleted) rows.
    pub fn count(&self) -> usize {
        self.parts.iter().map(Part::live_rows).sum()
    }

    /// The live rows, one batch per segment. Segments without deletions are returned as they
    /// are mapped (no copy).
    pub fn batches(&self) -> Result<Vec<RecordBatch>> {
        self.parts
            .iter()
            .filter(|p| p.live_rows() > 0)
            .map(|p| match &p.deletes {
                None => Ok(p.seg.batch.clone()),
                Some(d) => {
                    let keep: BooleanArray =
                        (0..p.seg.rows()).map(|r| Some(!d.contains(r))).collect();
                    Ok(arrow_select::filter::filter_record_batch(
                        &p.seg.batch,
                        &keep,
                    )?)
                }
            })
            .collect()
    }

    /// Where the live row with this id is.
    pub fn locate(&self, id: IdRef<'_>) -> Option<(usize, usize)> {
        // Newest segments first: an id lives in at most one segment, so the order only
        // matters for speed.
        self.parts.iter().enumerate().rev().find_map(|(p, part)| {
            let row = part.seg.id_map().get(id)? as usize;
            (!part.is_deleted(row)).then_some((p, row))
        })
    }

    /// The first id in `ids` that is already stored live, if any.
    pub fn first_existing(&self, ids: &dyn Array) -> Option<String> {
        ids_of(ids)
            .find(|&id| self.locate(id).is_some())
            .map(|id| match id {
                IdRef::Int(v) => v.to_string(),
                IdRef::Str(s) => format!("'{s}'"),
            })
    }

    /// The rows with the given ids (in the order asked; ids not found are skipped).
    pub fn get(&self, ids: &dyn Array) -> Result<RecordBatch> {
        let ids = self.layout.cast_ids(ids)?;
        let at: Vec<(usize, usize)> = ids_of(ids.as_ref())
            .filter_map(|id| self.locate(id))
            .collect();
        self.rows_at(&at)
    }

    /// The rows at `(part, row)` positions, in that order.
    pub fn rows_at(&self, at: &[(usize, usize)]) -> Result<RecordBatch> {
        let batches: Vec<&RecordBatch> = self.parts.iter().map(|p| &p.seg.batch).collect();
        if batches.is_empty() {
            return Ok(RecordBatch::new_empty(self.schema()));
        }
        Ok(arrow_select::interleave::interleave_record_batch(
            &batches, at,
        )?)
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

/// The schema of search results: the collection's columns plus `_distance`.
pub fn result_schema(schema: &Schema) -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(
        DISTANCE_COLUMN,
        DataType::Float32,
        false,
    )));
    Arc::new(Schema::new(fields))
}
