//! Merging segments: the live rows of the input segments become one new segment (deleted rows
//! dropped), with the index that suits its size. When the first input has a graph, the new
//! graph starts from its links and inserts only the other rows.
//!
//! The expensive part (`merge`) runs without the writer lock, from a snapshot, so writers go on
//! meanwhile; `commit` then swaps the inputs for the merged segment inside one transaction,
//! carrying over the rows deleted since the snapshot. The inputs' files are removed only when
//! the last snapshot mapping them is dropped (`Segment::retire`).

use std::sync::Arc;

use arrow_array::BooleanArray;

use crate::bitmap::Bitmap;
use crate::distance::Metric;
use crate::index::{self, hnsw::builder::DROPPED};
use crate::options::{IndexKind, IndexSettings};
use crate::schema::Layout;
use crate::segment::Segment;
use crate::snapshot::{SegmentView, Snapshot};
use crate::storage::manifest::{DeletesMeta, FileMeta, IndexFileMeta};
use crate::storage::segment_file::open_segment;
use crate::storage::{deletes, FileKind, Store, Written, STAGED_PREFIX};
use crate::task::Task;
use crate::writer::append::Staged;
use crate::writer::Transaction;
use crate::Result;

/// The inputs of a merge, merged and staged, not yet committed.
pub(crate) struct Merged {
    /// The parts merged, as the snapshot the merge read had them.
    inputs: Vec<SegmentView>,
    /// For each input, where each of its rows went (`DROPPED`: it was deleted).
    rowmaps: Vec<Vec<u32>>,
    segment: Option<Staged>,
    index: Option<(IndexKind, StagedFile)>,
}

/// A file written under a temporary name, removed on drop unless renamed into place.
struct StagedFile {
    store: Arc<dyn Store>,
    name: String,
    written: Written,
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        let _ = self.store.delete(&self.name);
    }
}

/// Merges the live rows of `inputs` (the first one's rows first) into a staged segment with
/// the index `settings` ask for at its size. `None` when `cancel` was set meanwhile.
pub(crate) fn merge(
    store: &Arc<dyn Store>,
    layout: &Layout,
    metric: Metric,
    settings: &IndexSettings,
    inputs: Vec<SegmentView>,
    cancel: &Task,
) -> Result<Option<Merged>> {
    let mut rowmaps = Vec::with_capacity(inputs.len());
    let mut pieces = Vec::with_capacity(inputs.len());
    let mut next = 0u32;
    for part in &inputs {
        let rows = part.seg.rows();
        let map: Vec<u32> = (0..rows)
            .map(|r| {
                if part.is_deleted(r) {
                    DROPPED
                } else {
                    next += 1;
                    next - 1
                }
            })
            .collect();
        pieces.push(match &part.deletes {
            None => part.seg.batch.clone(),
            Some(_) => {
                let keep: BooleanArray = map.iter().map(|&m| Some(m != DROPPED)).collect();
                arrow_select::filter::filter_record_batch(&part.seg.batch, &keep)?
            }
        });
        rowmaps.push(map);
    }
    let rows = next as usize;
    let mut merged = Merged {
        inputs,
        rowmaps,
        segment: None,
        index: None,
    };
    if rows == 0 {
        return Ok(Some(merged));
    }
    let tag = crate::storage::unique();
    let staged = {
        let batch = arrow_select::concat::concat_batches(&layout.schema, &pieces)?;
        drop(pieces);
        Staged::write(store.clone(), layout, metric, &batch, &tag)?
    };
    let indexed_before = merged.inputs[0].index.is_some();
    let wanted = settings.kind != IndexKind::Flat
        && ((settings.threshold > 0 && rows >= settings.threshold) || indexed_before);
    if wanted {
        // Built over the staged file as it is mapped, not over a copy in memory.
        let written = staged.written();
        let file = FileMeta {
            file: staged.segment_name().to_string(),
            bytes: written.bytes,
            crc32: written.crc32,
            mtime_ns: 0,
        };
        let batch = open_segment(&**store, &file, &layout.schema, false)?;
        let seg = Segment::new(0, batch, layout);
        let base = merged.inputs[0]
            .index
            .as_deref()
            .map(|i| (i, merged.rowmaps[0].as_slice()));
        let Some((kind, bytes)) = index::build(settings, &seg.view(metric), base, cancel)? else {
            return Ok(None);
        };
        let name = format!("{STAGED_PREFIX}{tag}.idx");
        let written = store.put(&name, &bytes)?;
        merged.index = Some((
            kind,
            StagedFile {
                store: store.clone(),
                name,
                written,
            },
        ));
    }
    merged.segment = Some(staged);
    Ok(Some(merged))
}

/// Replaces the merged inputs with the merged segment in `txn`, from `current` (the snapshot
/// the commit is made on). Rows deleted from the inputs since the merge read them are deleted
/// from the merged segment too. Returns the new parts and the replaced segments with the files
/// to remove once no snapshot holds them; `None` if an input is gone (nothing was changed).
#[allow(clippy::type_complexity)]
pub(crate) fn commit(
    txn: &mut Transaction<'_>,
    current: &Snapshot,
    merged: &Merged,
    layout: &Layout,
) -> Result<Option<(Vec<SegmentView>, Vec<(Arc<Segment>, Vec<String>)>)>> {
    let mut late = Vec::new();
    let mut retired = Vec::new();
    for (input, map) in merged.inputs.iter().zip(&merged.rowmaps) {
        let Some(now) = current.parts.iter().find(|p| p.seg.id == input.seg.id) else {
            return Ok(None);
        };
        if let Some(d) = &now.deletes {
            late.extend(
                d.iter()
                    .filter(|&r| !input.is_deleted(r))
                    .map(|r| map[r] as usize),
            );
        }
        let Some(meta) = txn
            .next
            .position(input.seg.id)
            .map(|p| &txn.next.segments[p])
        else {
            return Ok(None);
        };
        let files = meta.files().map(String::from).collect();
        retired.push((now.seg.clone(), files));
    }
    let gone: Vec<u64> = merged.inputs.iter().map(|p| p.seg.id).collect();
    txn.next.segments.retain(|s| !gone.contains(&s.id));
    let mut parts: Vec<SegmentView> = current
        .parts
        .iter()
        .filter(|p| !gone.contains(&p.seg.id))
        .cloned()
        .collect();
    if let Some(staged) = &merged.segment {
        let p = txn.add_segment(staged)?;
        let id = txn.next.segments[p].id;
        if let Some((kind, file)) = &merged.index {
            let meta = txn.write_file(FileKind::Index(*kind), id, |store, name| {
                store.rename(&file.name, name)?;
                Ok(file.written)
            })?;
            txn.next.segments[p].index = Some(IndexFileMeta {
                kind: *kind,
                file: meta.file,
                bytes: meta.bytes,
                crc32: meta.crc32,
                mtime_ns: meta.mtime_ns,
            });
        }
        if !late.is_empty() {
            let mut bitmap = Bitmap::new(staged.rows() as usize);
            for r in late {
                bitmap.insert(r);
            }
            let meta = txn.write_file(FileKind::Deletes, id, |store, name| {
                deletes::write(store, name, &bitmap)
            })?;
            txn.next.segments[p].deletes = Some(DeletesMeta {
                file: meta.file,
                count: bitmap.count() as u64,
            });
        }
        let meta = &txn.next.segments[p];
        parts.push(SegmentView::open(txn.store(), layout, txn.next.metric, meta, false)?.0);
    }
    Ok(Some((parts, retired)))
}
