//! Vector indexes. Search reaches them only through the read-side `VectorIndex` trait (opened
//! from a mapped file by `open`); the write side (`build`) is reached only from the writer.
//! `flat` is the exact scan every index is measured against and what segments without an index
//! use; `hnsw` is the graph; `ivf` the inverted lists for segments past a graph's reach.

pub(crate) mod flat;
pub(crate) mod hnsw;
pub(crate) mod ivf;

use std::path::Path;
use std::sync::Arc;

use arrow_buffer::Buffer;

use crate::options::{IndexKind, IndexSettings};
use crate::task::Task;
use crate::topk::Neighbor;
use crate::vector::{Exact, Scorer, VectorView};
use crate::{Error, Result};

/// Per-query search parameters an index may use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SearchParams {
    /// Beam width (graphs); candidates re-ranked (IVF).
    pub ef: usize,
    /// Lists scanned (IVF).
    pub nprobe: usize,
}

/// Which rows a search may return: `None` accepts every row (an index may then search more
/// simply); a filter's rejected rows are never returned.
pub(crate) type Accept<'a> = Option<&'a dyn Fn(u32) -> bool>;

/// How many candidates ahead re-ranking prefetches their full vectors.
const RERANK_AHEAD: usize = 1;

/// `found` with exact distances, nearest first: how an index re-ranks the candidates its
/// compact codes found.
fn rerank(exact: &Exact<'_>, mut found: Vec<Neighbor>) -> Vec<Neighbor> {
    for n in found.iter().take(RERANK_AHEAD) {
        exact.prefetch(n.id);
    }
    for j in 0..found.len() {
        if let Some(next) = found.get(j + RERANK_AHEAD) {
            exact.prefetch(next.id);
        }
        found[j].dist = exact.dist(found[j].id);
    }
    found.sort_unstable();
    found
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
        accept: Accept<'_>,
    ) -> Vec<(u32, f32)>;
    /// About how many vector comparisons a search with `params` makes (a compact code's
    /// comparison counted as one): what a caller weighs to run a search where it is.
    fn search_work(&self, params: &SearchParams) -> usize;
    /// The graph, for indexes that are one (a merge extends it instead of rebuilding).
    fn graph(&self) -> Option<&hnsw::Hnsw> {
        None
    }
}

/// Opens an index of `kind` from its file image (read in place). `path` names it in errors.
pub(crate) fn open(kind: IndexKind, buffer: Buffer, path: &Path) -> Result<Arc<dyn VectorIndex>> {
    match kind {
        IndexKind::Hnsw => Ok(Arc::new(hnsw::Hnsw::from_buffer(buffer, path)?)),
        IndexKind::Ivf => Ok(Arc::new(ivf::Ivf::from_buffer(buffer, path)?)),
        IndexKind::Flat | IndexKind::Auto => Err(Error::corrupt(
            path,
            format!("a segment indexed '{}' has no index file", kind.as_str()),
        )),
    }
}

/// Builds the index `settings` ask for over `view` (`auto` chosen by its size) and returns
/// its kind and file image, or `None` when `cancel` was set meanwhile. With `base` (an index
/// over another segment, and where each of its rows went in `view`, see
/// `hnsw::builder::Base`) a graph starts from its links when it can, and inserts only the
/// other rows.
pub(crate) fn build(
    settings: &IndexSettings,
    view: &VectorView<'_>,
    base: Option<(&dyn VectorIndex, &[u32])>,
    cancel: &Task,
) -> Result<Option<(IndexKind, Vec<u8>)>> {
    let kind = settings.kind_for(view.len());
    cancel.begin(kind.as_str(), view.len());
    let built = build_kind(kind, settings, view, base, cancel);
    cancel.end();
    built
}

fn build_kind(
    kind: IndexKind,
    settings: &IndexSettings,
    view: &VectorView<'_>,
    base: Option<(&dyn VectorIndex, &[u32])>,
    cancel: &Task,
) -> Result<Option<(IndexKind, Vec<u8>)>> {
    match kind {
        IndexKind::Hnsw => {
            let params = hnsw::HnswParams::from_settings(settings);
            let base = base.and_then(|(index, keep)| {
                let graph = index.graph()?;
                Some(hnsw::builder::Base { graph, keep })
            });
            Ok(hnsw::builder::extend(view, params, base, cancel)
                .map(|g| (IndexKind::Hnsw, g.to_bytes())))
        }
        IndexKind::Ivf => {
            Ok(ivf::Ivf::build(view, settings, cancel).map(|i| (IndexKind::Ivf, i.to_bytes())))
        }
        IndexKind::Flat | IndexKind::Auto => Err(Error::Internal(
            "asked to build an index for a flat collection".into(),
        )),
    }
}
