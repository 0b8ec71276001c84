//! Vector indexes. Search reaches them only through the read-side `VectorIndex` trait (opened
//! from a mapped file by `open`); the write side (`build`) is reached only from the writer.
//! `flat` is the exact scan every index is measured against and what segments without an index
//! use; `hnsw` is the graph.

pub(crate) mod flat;
pub mod hnsw;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arrow_buffer::Buffer;

use crate::options::{IndexKind, IndexSettings};
use crate::vector::VectorView;
use crate::{Error, Result};

/// Per-query search parameters an index may use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SearchParams {
    /// Beam width (graphs).
    pub ef: usize,
}

/// The read side of an index over one segment's rows.
pub(crate) trait VectorIndex: Send + Sync + std::fmt::Debug {
    /// Which kind of index this is.
    fn kind(&self) -> IndexKind;
    /// The `k` nearest rows of `view` to `query` (raw; the index prepares it) that `accept`
    /// lets through, nearest first, with their ranking distances.
    fn search(
        &self,
        view: &VectorView<'_>,
        query: &[f32],
        k: usize,
        params: &SearchParams,
        accept: &dyn Fn(u32) -> bool,
    ) -> Vec<(u32, f32)>;
    /// The graph, for indexes that are one (a merge extends it instead of rebuilding).
    fn graph(&self) -> Option<&hnsw::Hnsw> {
        None
    }
}

/// Opens an index of `kind` from its file image (read in place). `path` names it in errors.
pub(crate) fn open(kind: IndexKind, buffer: Buffer, path: &Path) -> Result<Arc<dyn VectorIndex>> {
    match kind {
        IndexKind::Hnsw => Ok(Arc::new(hnsw::Hnsw::from_buffer(buffer, path)?)),
        IndexKind::Flat => Err(Error::corrupt(path, "a flat segment has no index file")),
    }
}

/// Builds the index `settings` ask for over `view` and returns its file image, or `None` when
/// `cancel` was set meanwhile. With `base` (an index over another segment, and where each of
/// its rows went in `view`, see `hnsw::builder::Base`) a graph starts from its links when it
/// can, and inserts only the other rows.
pub(crate) fn build(
    settings: &IndexSettings,
    view: &VectorView<'_>,
    base: Option<(&dyn VectorIndex, &[u32])>,
    cancel: &AtomicBool,
) -> Result<Option<Vec<u8>>> {
    match settings.kind {
        IndexKind::Hnsw => {
            let params = hnsw::HnswParams::from_settings(settings);
            let base = base.and_then(|(index, keep)| {
                let graph = index.graph()?;
                Some(hnsw::builder::Base { graph, keep })
            });
            Ok(hnsw::builder::extend(view, params, base, cancel).map(|g| g.to_bytes()))
        }
        IndexKind::Flat => Err(Error::Internal(
            "asked to build an index for a flat collection".into(),
        )),
    }
}
