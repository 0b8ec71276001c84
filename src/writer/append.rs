//! Appended rows, staged: a batch already in the collection's layout is written as a segment
//! file under a temporary name (`stage-*`), with the norms its metric needs and its
//! primary-key index beside it, all synced, before any manifest names them. Dropping a `Staged` removes its files unless a
//! transaction has renamed them into place; a crash leaves only `stage-*` files, which the
//! next open removes.

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
        let segment = format!("{STAGED_PREFIX}{tag}.arrow");
        let written = write_segment(&*store, &segment, batch);
        let mut staged = Staged {
            store,
            segment,
            sidecars: Vec::new(),
            rows: batch.num_rows() as u64,
            written: Written { bytes: 0, crc32: 0 },
        };
        staged.written = written?;
        let vectors = vector_values(batch.column(layout.vector_index).as_ref(), layout.dim);
        if let Some(norms) = metric_norms(metric, vectors, layout.dim) {
            staged.add(
                FileKind::Norms,
                format!("{STAGED_PREFIX}{tag}.f32"),
                |store, name| write_f32s(store, name, &norms),
            )?;
        }
        let pk = PkIndex::build(batch.column(layout.id_index).as_ref());
        staged.add(
            FileKind::Pk,
            format!("{STAGED_PREFIX}{tag}.pk"),
            |store, name| {
                store.write(name, &mut |out| {
                    pk.write(out).map_err(|e| Error::io(store.path(name), e))
                })
            },
        )?;
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
        // After a commit the temporary names are gone and these fail harmlessly.
        let _ = self.store.delete(&self.segment);
        for (_, name, _) in &self.sidecars {
            let _ = self.store.delete(name);
        }
    }
}
