//! Appended rows, staged: a batch already in the collection's layout is written as a segment
//! file under a temporary name (`stage-*`), with the norms its metric needs and its
//! primary-key index beside it, all synced, before any manifest names them. Dropping a
//! `Staged` removes its files unless a transaction has renamed them into place (or, on shared
//! storage, committed them under their own names); a crash leaves only `stage-*` files, which
//! the next open removes.
//!
//! On shared storage (object storage) the files are written under names of committed files
//! from the start, unique to this write, and a commit names them as they are: a rename there
//! is a copy and a delete, and a write that lost a commit race to another server tries again
//! at once, with nothing to move back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arrow_array::RecordBatch;

use crate::distance::Metric;
use crate::ingest::vector_values;
use crate::pk::PkIndex;
use crate::schema::Layout;
use crate::storage::segment_file::{write_f32s, write_segment};
use crate::storage::{FileKind, Store, Written, STAGED_PREFIX};
use crate::vector::metric_norms;
use crate::{Error, Result};

/// A streamed write is staged in segments of about this many bytes of Arrow data.
pub(crate) const SEGMENT_BYTES: usize = 64 << 20;

/// A segment written under a temporary name, not yet named by any manifest.
#[derive(Debug)]
pub(crate) struct Staged {
    store: Arc<dyn Store>,
    segment: String,
    /// Files derived from the segment (norms, primary-key index), with their kind.
    sidecars: Vec<(FileKind, String, Written)>,
    rows: u64,
    written: Written,
    /// Set once a committed manifest names the files under the names they were written with.
    committed: Arc<AtomicBool>,
}

impl Staged {
    /// Writes `batch` (already in `layout`) and the norms `metric` needs into `store`;
    /// `tag` makes the names unique.
    pub(crate) fn write(
        store: Arc<dyn Store>,
        layout: &Layout,
        metric: Metric,
        batch: &RecordBatch,
        tag: &str,
    ) -> Result<Staged> {
        if batch.num_rows() > u32::MAX as usize {
            return Err(Error::invalid("a segment may hold at most 2^32 - 1 rows"));
        }
        // Staged names, or on shared storage the names the commit keeps.
        let name = |kind: FileKind| match (store.shared(), kind) {
            (false, FileKind::Segment) => format!("{STAGED_PREFIX}{tag}.arrow"),
            (false, FileKind::Norms) => format!("{STAGED_PREFIX}{tag}.f32"),
            (false, _) => format!("{STAGED_PREFIX}{tag}.pk"),
            (true, FileKind::Segment) => format!("seg-w{tag}.arrow"),
            (true, FileKind::Norms) => format!("nrm-w{tag}.f32"),
            (true, _) => format!("pk-w{tag}.bin"),
        };
        let segment = name(FileKind::Segment);
        let (norms_name, pk_name) = (name(FileKind::Norms), name(FileKind::Pk));
        let written = write_segment(&*store, &segment, batch);
        let mut staged = Staged {
            store,
            segment,
            sidecars: Vec::new(),
            rows: batch.num_rows() as u64,
            written: Written { bytes: 0, crc32: 0 },
            committed: Arc::new(AtomicBool::new(false)),
        };
        staged.written = written?;
        let vectors = vector_values(batch.column(layout.vector_index).as_ref(), layout.dim);
        if let Some(norms) = metric_norms(metric, vectors, layout.dim) {
            staged.add(FileKind::Norms, norms_name, |store, name| {
                write_f32s(store, name, &norms)
            })?;
        }
        let pk = PkIndex::build(batch.column(layout.id_index).as_ref());
        staged.add(FileKind::Pk, pk_name, |store, name| {
            store.write(name, &mut |out| {
                pk.write(out).map_err(|e| Error::io(store.path(name), e))
            })
        })?;
        Ok(staged)
    }

    /// Writes a file derived from the segment.
    fn add(
        &mut self,
        kind: FileKind,
        name: String,
        write: impl FnOnce(&dyn Store, &str) -> Result<Written>,
    ) -> Result<()> {
        // Recorded first: a write that fails half-way leaves a file to remove too.
        self.sidecars
            .push((kind, name.clone(), Written { bytes: 0, crc32: 0 }));
        let written = write(&*self.store, &name)?;
        self.sidecars.last_mut().expect("just pushed").2 = written;
        Ok(())
    }

    pub(crate) fn segment_name(&self) -> &str {
        &self.segment
    }

    /// Whether a commit keeps the files under their names (shared storage) rather than
    /// renaming them into place.
    pub(crate) fn kept_as_written(&self) -> bool {
        self.store.shared()
    }

    /// The flag a transaction sets when its commit names these files as they are.
    pub(crate) fn committed_flag(&self) -> Arc<AtomicBool> {
        self.committed.clone()
    }

    /// The files derived from the segment: kind, staged name, what was written.
    pub(crate) fn sidecars(&self) -> &[(FileKind, String, Written)] {
        &self.sidecars
    }

    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    pub(crate) fn written(&self) -> Written {
        self.written
    }

    /// Moves the staged files into another store of the same backend, keeping their names.
    pub(crate) fn move_to(&mut self, to: Arc<dyn Store>) -> Result<()> {
        to.adopt(&*self.store, &self.segment)?;
        for (_, name, _) in &self.sidecars {
            to.adopt(&*self.store, name)?;
        }
        self.store = to;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.committed.load(Ordering::SeqCst) {
            return;
        }
        // After a commit the temporary names are gone and these fail harmlessly.
        let _ = self.store.delete(&self.segment);
        for (_, name, _) in &self.sidecars {
            let _ = self.store.delete(name);
        }
    }
}
