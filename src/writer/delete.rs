//! Deletes: each segment that loses rows gets a new version of its deletion bitmap, written
//! in the transaction; the old version is removed once the new one is committed.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::bitmap::Bitmap;
use crate::snapshot::{SegmentView, Snapshot};
use crate::storage::manifest::DeletesMeta;
use crate::storage::{deletes, FileKind};
use crate::writer::Transaction;
use crate::Result;

/// Marks `rows` (part → rows within it) deleted in `txn`; returns the new parts and how many
/// rows were newly deleted.
pub(crate) fn delete_rows(
    txn: &mut Transaction<'_>,
    snapshot: &Snapshot,
    rows: &BTreeMap<usize, Vec<usize>>,
) -> Result<(Vec<SegmentView>, usize)> {
    let mut parts = snapshot.parts.clone();
    let mut deleted = 0;
    for (&p, rows) in rows {
        let part = &snapshot.parts[p];
        let mut bitmap = part
            .deletes
            .as_deref()
            .cloned()
            .unwrap_or_else(|| Bitmap::new(part.seg.rows()));
        for &r in rows {
            deleted += bitmap.insert(r) as usize;
        }
        let meta = txn.write_file(FileKind::Deletes, part.seg.id, |store, name| {
            deletes::write(store, name, &bitmap)
        })?;
        if let Some(old) = txn.next.segments[p].deletes.take() {
            txn.replace(old.file);
        }
        txn.next.segments[p].deletes = Some(DeletesMeta {
            file: meta.file,
            count: bitmap.count() as u64,
        });
        parts[p] = SegmentView {
            deletes: Some(Arc::new(bitmap)),
            ..part.clone()
        };
    }
    Ok((parts, deleted))
}
