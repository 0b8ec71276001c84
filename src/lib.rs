//! OmenDB engine: collections of Arrow record batches stored as memory-mapped Arrow IPC
//! segments under an atomically committed manifest, with exact SIMD vector search and graph
//! indexes (built in the background past a row threshold, searched in place from their
//! files), and filtered search through per-segment row selections.
//!
//! The engine owns storage, indexes and search, behind a synchronous API. It must not depend
//! on DataFusion, tokio or any network code: SQL (`omendb-datafusion`), the server
//! (`omendb-flight`) and the bindings sit on top of it.
//!
//! ```no_run
//! use omendb::{Database, CollectionOptions};
//! # fn main() -> omendb::Result<()> {
//! let db = Database::open("./data")?;
//! let docs = db.collection("docs")?;
//! let nearest = docs.search(&[0.1; 384], 10)?; // rows + `_distance`, nearest first
//! # Ok(()) }
//! ```
//!
//! Modules, from the bottom up (a module only uses those before it): `error`; `distance`,
//! `bitmap`, `schema`, `topk`; `vector`, `ids`, `pk`, `options`; `quant`, `ingest`, `segment`,
//! `storage`; `index`; `snapshot`; `search`; `writer`; `stats`, `collection`; `database`.

#![warn(missing_docs)]

mod bitmap;
mod collection;
mod database;
mod distance;
mod error;
mod ids;
mod index;
mod ingest;
mod options;
#[doc(hidden)]
pub mod pk;
mod quant;
mod schema;
mod search;
mod segment;
mod snapshot;
mod stats;
mod storage;
mod task;
mod topk;
mod vector;
mod writer;

pub use collection::Collection;
pub use database::{Database, Ingest, WriteMode};
pub use distance::Metric;
pub use error::{Error, ErrorKind, Result};
pub use ingest::coerce_vectors;
pub use options::{
    setting_keys, settings_help, Backpressure, CollectionOptions, CompactionPolicy, GraphSettings,
    IndexKind, IndexSettings, IvfSettings, QuantKind, Setting, SETTINGS,
};
pub use schema::{result_schema, VectorType, DISTANCE_COLUMN, QUERY_COLUMN};
pub use search::{
    check_queries, Hit, SearchRequest, SearchResults, SegmentInfo, SegmentPlan, Selection,
};
pub use snapshot::Snapshot;
pub use stats::{Backup, IndexParams, Stats};
#[doc(hidden)]
#[cfg(feature = "faults")]
pub use storage::faults::Faults;
#[doc(hidden)]
pub use storage::local::map_path;
pub use storage::npy;
pub use task::{BuildProgress, Task};
pub use vector::VectorView;

/// Where a database's files live: the traits a storage backend implements, as the local
/// directory does (`omendb-object` implements them over object storage), and what a backend
/// needs of the engine's file conventions. Open a database on a backend with
/// [`Database::on_root`].
pub mod backend {
    pub use crate::storage::local::LocalStore;
    pub use crate::storage::manifest::{is_manifest, manifest_name, manifest_version};
    pub use crate::storage::root::Root;
    pub use crate::storage::{is_collection_file, unique, Stamp, Store, Written, STAGED_PREFIX};
}

/// Building blocks the workspace's benches, kernel tests, SQL distance functions and CLI reach
/// into: the distance kernels by level and the graph index on its own. Not a stable API.
#[doc(hidden)]
pub mod internals {
    pub use crate::distance::{kernels, scalar, Kernels, Level};
    pub use crate::index::hnsw::{Hnsw, HnswParams};
}
