//! Helpers shared by the collection-level index tests: the minilm-words rows and exact answers
//! of `omendb_testkit::words`, recall, and filters and hit ids read from columns.

use std::path::Path;
use std::sync::Arc;

use arrow_array::Int64Array;
use omendb::{
    Collection, CollectionOptions, CompactionPolicy, Database, IndexSettings, SearchRequest,
    Selection, Snapshot,
};
pub(crate) use omendb_testkit::recall;
pub(crate) use omendb_testkit::words::*;

/// The rows whose `bucket` column `keep` accepts.
pub(crate) fn bucket_filter(snap: &Snapshot, keep: impl Fn(i64) -> bool) -> Selection {
    Selection::from_masks(snap, |b| {
        let col = b
            .column_by_name("bucket")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        Ok(col.iter().map(|v| v.map(&keep)).collect())
    })
    .unwrap()
}

/// Each query's hit ids, read from the id column (row positions change when segments merge).
pub(crate) fn id_hits(snap: &Snapshot, queries: &[f32], dim: usize, ef: usize) -> Vec<Vec<i64>> {
    let hits = snap
        .search(&SearchRequest::new(queries, 10).ef(Some(ef)))
        .unwrap();
    assert_eq!(hits.len(), queries.len() / dim);
    hits.iter()
        .map(|h| omendb_testkit::ids_of(&snap.hits_to_batch(h).unwrap()))
        .collect()
}

/// A database at `dir` holding collection `words` of the dataset's schema, indexed from
/// `threshold` rows and merged under `compaction` (the database is returned to keep it open).
pub(crate) fn words_collection(
    dir: &Path,
    dim: usize,
    threshold: usize,
    compaction: CompactionPolicy,
) -> (Database, Arc<Collection>) {
    let opts = CollectionOptions {
        index: IndexSettings {
            threshold,
            compaction,
            ..Default::default()
        },
        ..Default::default()
    };
    let db = Database::open(dir).unwrap();
    let c = db.create_collection("words", &schema(dim), opts).unwrap();
    (db, c)
}
