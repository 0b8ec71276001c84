//! Vector indexes: HNSW recall on the raw graph, and the index inside a collection (automatic
//! builds, IVF and compact codes, merges and compaction). Real embeddings: a slice of
//! minilm-words (`omendb_testkit::words`).

mod common;

mod compaction;
mod indexing;
mod ivf;
mod recall;
