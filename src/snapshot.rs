//! A snapshot: one committed version of a collection, immutable and shared by `Arc`. Readers
//! keep the snapshot they started with while writers commit new ones. It reads rows (all of
//! them, by id, by position); searching it is in `search`.

use std::sync::Arc;

use arrow_array::{Array, BooleanArray, RecordBatch};
use arrow_schema::SchemaRef;

use crate::bitmap::Bitmap;
use crate::distance::Metric;
use crate::ids::{ids_of, IdRef};
use crate::index::{self, VectorIndex};
use crate::options::IndexSettings;
use crate::schema::Layout;
use crate::search::Together;
use crate::segment::Segment;
use crate::storage::manifest::{IndexFileMeta, SegmentMeta};
use crate::storage::segment_file::{map_f32s, open_segment};
use crate::storage::{deletes, map_committed, Store};
use crate::{Error, Result};

/// One segment as a snapshot sees it: its rows, the deletions committed so far, its index.
#[derive(Debug, Clone)]
pub(crate) struct SegmentView {
    pub seg: Arc<Segment>,
    pub deletes: Option<Arc<Bitmap>>,
    /// The segment's index, mapped from its file; `None` means searched exactly.
    pub index: Option<Arc<dyn VectorIndex>>,
}

impl SegmentView {
    #[inline]
    pub(crate) fn is_deleted(&self, row: usize) -> bool {
        self.deletes.as_ref().is_some_and(|d| d.contains(row))
    }

    pub(crate) fn live_rows(&self) -> usize {
        self.seg.rows() - self.deletes.as_ref().map_or(0, |d| d.count())
    }

    /// Opens one committed segment with its deletions, norms and index. With `trust_stamp`, a
    /// segment file whose size and modification time match the manifest is not re-hashed
    /// (opening stays instant); any other is checked against its CRC32. A damaged index does
    /// not fail the segment: it comes back as the second value, and the part is searched
    /// exactly.
    pub(crate) fn open(
        store: &dyn Store,
        layout: &Layout,
        metric: Metric,
        meta: &SegmentMeta,
        trust_stamp: bool,
    ) -> Result<(SegmentView, Option<Error>)> {
        let path = store.path(&meta.file);
        let stamp = store.stamp(&meta.file)?;
        let verify = trust_stamp && !stamp.unchanged_since(meta.bytes, meta.mtime_ns);
        let batch = open_segment(store, &meta.segment_file(), &layout.schema, verify)?;
        let rows = batch.num_rows();
        if rows as u64 != meta.rows {
            return Err(Error::corrupt(
                &path,
                format!("holds {rows} rows, the manifest says {}", meta.rows),
            ));
        }
        let deletes = match &meta.deletes {
            None => None,
            Some(d) => Some(Arc::new(deletes::read(store, &d.file, rows)?)),
        };
        let mut seg = Segment::new(meta.id, batch, layout);
        seg.stamp = Some(stamp);
        if let Some(n) = &meta.norms {
            seg = seg.with_norms(metric, map_f32s(store, n, rows)?);
        }
        if let Some(pk) = &meta.pk {
            let buffer = map_committed(store, &pk.file, pk.bytes, pk.crc32, pk.mtime_ns)?;
            seg = seg.with_pk(crate::pk::open_file(buffer, rows, &store.path(&pk.file))?);
        }
        let (index, damage) = match &meta.index {
            None => (None, None),
            Some(i) => match open_index(store, i) {
                Ok(index) => (Some(index), None),
                Err(e @ Error::Corrupt { .. }) => (None, Some(e)),
                Err(e) => return Err(e),
            },
        };
        let part = SegmentView {
            seg: Arc::new(seg),
            deletes,
            index,
        };
        Ok((part, damage))
    }
}

/// Maps an index file and opens the index in place.
pub(crate) fn open_index(store: &dyn Store, meta: &IndexFileMeta) -> Result<Arc<dyn VectorIndex>> {
    let buffer = map_committed(store, &meta.file, meta.bytes, meta.crc32, meta.mtime_ns)?;
    index::open(meta.kind, buffer, &store.path(&meta.file))
}

/// One committed version of a collection.
#[derive(Debug)]
pub struct Snapshot {
    pub(crate) layout: Arc<Layout>,
    pub(crate) metric: Metric,
    pub(crate) version: u64,
    pub(crate) parts: Vec<SegmentView>,
    pub(crate) index: IndexSettings,
    /// Searches waiting to run together (see `Snapshot::search_together`).
    pub(crate) together: Together,
}

impl Snapshot {
    /// The collection's schema.
    pub fn schema(&self) -> SchemaRef {
        self.layout.schema.clone()
    }

    /// The vectors' dimension.
    pub fn dim(&self) -> usize {
        self.layout.dim
    }

    /// The metric rows are ranked by.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The manifest version this snapshot reads.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The primary-key column's name.
    pub fn id_column(&self) -> &str {
        self.layout.id_column()
    }

    /// The vector column's name.
    pub fn vector_column(&self) -> &str {
        self.layout.vector_column()
    }

    /// The collection's index settings as of this version.
    pub fn index_settings(&self) -> IndexSettings {
        self.index
    }

    /// Live (not deleted) rows.
    pub fn count(&self) -> usize {
        self.parts.iter().map(SegmentView::live_rows).sum()
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

    /// Where the live row with this id is: (part, row).
    pub(crate) fn locate(&self, id: IdRef<'_>) -> Option<(usize, usize)> {
        // Newest segments first: an id lives in at most one segment, so the order only
        // matters for speed.
        self.parts.iter().enumerate().rev().find_map(|(p, part)| {
            let row = part.seg.row_of(id)? as usize;
            (!part.is_deleted(row)).then_some((p, row))
        })
    }

    /// The first of `ids` (in the collection's id type) stored live, as error messages show it.
    pub(crate) fn first_stored<'a>(
        &self,
        mut ids: impl Iterator<Item = IdRef<'a>>,
    ) -> Option<String> {
        ids.find(|&id| self.locate(id).is_some())
            .map(|id| id.to_string())
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
    pub(crate) fn rows_at(&self, at: &[(usize, usize)]) -> Result<RecordBatch> {
        let batches: Vec<&RecordBatch> = self.parts.iter().map(|p| &p.seg.batch).collect();
        if batches.is_empty() {
            return Ok(RecordBatch::new_empty(self.schema()));
        }
        Ok(arrow_select::interleave::interleave_record_batch(
            &batches, at,
        )?)
    }

    /// Builds the snapshot of `version` with these parts, keeping the rest of `self`.
    pub(crate) fn with_parts(&self, version: u64, parts: Vec<SegmentView>) -> Snapshot {
        Snapshot {
            layout: self.layout.clone(),
            metric: self.metric,
            version,
            parts,
            index: self.index,
            together: Together::default(),
        }
    }
}
