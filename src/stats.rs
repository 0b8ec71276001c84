//! What `Collection::stats` reports, serializable as it is: servers and bindings serialize it
//! rather than map it field by field.

use serde::Serialize;

use crate::distance::Metric;
use crate::options::{IndexKind, QuantKind};

/// Counts, sizes and settings of a collection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// The collection's name.
    pub collection: String,
    /// Live rows.
    pub rows: usize,
    /// Rows deleted but still stored.
    pub deleted_rows: usize,
    /// Segments.
    pub segments: usize,
    /// Bytes of every file the current version names, the manifest included.
    pub bytes_on_disk: u64,
    /// Bytes of the segments' index files (part of `bytes_on_disk`).
    pub index_bytes: u64,
    /// The id column's name.
    pub id_column: String,
    /// The vector column's name.
    pub vector_column: String,
    /// The vectors' dimension.
    pub dim: usize,
    /// The precision vectors are stored in: `float32` or `float16`.
    pub vector_type: String,
    /// The metric rows are ranked by.
    pub metric: Metric,
    /// The index kind of each segment, in segment order (`flat`: none).
    pub index_kinds: Vec<String>,
    /// The manifest version.
    pub version: u64,
    /// The index segments get past the threshold.
    pub index_kind: IndexKind,
    /// The codes indexes traverse.
    pub quantization: QuantKind,
    /// The index parameters.
    pub index: IndexParams,
    /// Whether a background index build is running or queued.
    pub indexing: bool,
    /// Segment merges (compactions) running now.
    pub merges_running: usize,
    /// Index builds running now.
    pub index_builds_running: usize,
    /// How far the background index build is (a merge that extends a graph builds one too):
    /// rows done of the total, seconds elapsed and the estimated seconds left.
    pub index_build: Option<crate::task::BuildProgress>,
    /// The error of the last failed background index build, if any.
    pub index_error: Option<String>,
    /// Damage found and contained since the collection opened (an index set aside and rebuilt).
    pub repairs: Vec<String>,
    /// Rows of segments not yet indexed that the background work will index (searched
    /// exactly meanwhile).
    pub unindexed_rows: usize,
    /// The bound on `unindexed_rows` past which writes wait (0: none; see
    /// `max_unindexed_rows`).
    pub max_unindexed_rows: usize,
    /// Writes that waited for room under the bound since the collection opened.
    pub writes_stalled: u64,
    /// Writes refused after waiting `write_stall_ms`.
    pub writes_refused: u64,
    /// Milliseconds writes spent waiting for room, in all.
    pub write_stall_ms: u64,
}

/// A collection's index parameters, as options name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IndexParams {
    /// Graph neighbours per node.
    pub m: usize,
    /// The beam width while building.
    pub ef_construction: usize,
    /// The default search beam width.
    pub ef_search: usize,
    /// Rows from which a segment is indexed automatically (0: never).
    pub index_threshold: usize,
    /// Rows from which `index=auto` builds IVF rather than a graph.
    pub ivf_threshold: usize,
    /// IVF lists per segment (0: about 4·√rows).
    pub nlist: usize,
    /// IVF lists scanned by default.
    pub nprobe: usize,
}

/// What a backup of one collection copied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backup {
    /// The collection.
    pub collection: String,
    /// The manifest version copied.
    pub version: u64,
    /// Files copied (the manifest included).
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// How many of them are hard links to the originals (same file system) rather than copies.
    pub linked: usize,
}
