//! OmenDB engine: collections of Arrow record batches stored as memory-mapped Arrow IPC
//! segments under an atomically committed manifest, with exact SIMD vector search and HNSW
//! indexes (built automatically past a row threshold, searched in place from their files),
//! and filtered search through per-segment row selections.
//!
//! ```no_run
//! use omendb::{Database, CollectionOptions};
//! # fn main() -> omendb::Result<()> {
//! let db = Database::open("./data")?;
//! let docs = db.collection("docs")?;
//! let nearest = docs.search(&[0.1; 384], 10)?; // rows + `_distance`, nearest first
//! # Ok(()) }
//! ```

pub mod collection;
pub mod database;
pub mod distance;
pub mod error;
pub mod hnsw;
pub mod npy;
pub mod search;
pub mod segment;
pub mod snapshot;
pub mod storage;
pub mod validate;
pub mod writer;

pub use collection::{Collection, CollectionOptions, Stats};
pub use database::Database;
pub use distance::Metric;
pub use error::{Error, Result};
pub use search::{Hit, Selection};
pub use snapshot::{Snapshot, DISTANCE_COLUMN};
pub use writer::Ingest;
