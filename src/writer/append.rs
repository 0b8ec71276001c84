//! Appended rows, staged: a batch already in the collection's layout is written as a segment
//! file under a temporary name (`stage-*`), with the norms its metric needs beside it, both
//! synced, before any manifest names them. Dropping a `Staged` removes its files unless a
//! transaction has renamed them into place; a crash leaves only `stage-*` files, which the
//! next open removes.

use std::sync::Arc;

use arrow_array::RecordBatch;

use crate::distance::Metric;
use crate::ingest::vector_values;
use crate::schema::Layout;
use crate::storage::segment_file::{write_f32s, write_segment};
use crate::storage::{Store, Written, STAGED_PREFIX};
use crate::vector::metric_norms;
use crate::{Error, Result};

/// A streamed write is staged in segments of about this many bytes of Arrow data.
pub(crate) const SEGMENT_BYTES: usize = 64 << 20;

/// A segment written under a temporary name, not yet named by any manifest.
#[derive(Debug)]
pub(crate) struct Staged {
    store: Arc<dyn Store>,
    segment: String,
    norms: Option<(String, Written)>,
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
            norms: None,
            rows: batch.num_rows() as u64,
            written: Written { bytes: 0, crc32: 0 },
        };
        staged.written = written?;
        let vectors = vector_values(batch.column(layout.vector_index).as_ref(), layout.dim);
        if let Some(norms) = metric_norms(metric, vectors, layout.dim) {
            let name = format!("{STAGED_PREFIX}{tag}.f32");
            staged.norms = Some((name.clone(), Written { bytes: 0, crc32: 0 }));
            let written = write_f32s(&*staged.store, &name, &norms)?;
            staged.norms = Some((name, written));
        }
        Ok(staged)
    }

    pub(crate) fn segment_name(&self) -> &str {
        &self.segment
    }

    pub(crate) fn norms(&self) -> Option<(&str, Written)> {
        self.norms.as_ref().map(|(n, w)| (n.as_str(), *w))
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
        if let Some((name, _)) = &self.norms {
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
        if let Some((name, _)) = &self.norms {
            let _ = self.store.delete(name);
        }
    }
}
