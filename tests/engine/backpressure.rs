//! Backpressure: past `max_unindexed_rows` rows not yet indexed, writes wait for the background
//! indexing and are refused (nothing written) once `write_stall_ms` passes.

use std::sync::Arc;

use omendb::{Database, ErrorKind, WriteMode};
use omendb_testkit::*;

use super::{files, opts};

const DIM: usize = 32;

/// A collection holding 30,000 rows in one segment whose graph is being built (bound in force
/// 20,000: twice the threshold of 10,000).
fn loaded(path: &std::path::Path, stall_ms: u64) -> (Arc<Database>, Arc<omendb::Collection>) {
    let db = Arc::new(Database::open(path).unwrap());
    let mut o = opts(omendb::Metric::Cosine);
    o.set("write_stall_ms", &stall_ms.to_string()).unwrap();
    let c = db.create_collection("docs", &schema(DIM), o).unwrap();
    c.append(&[batch(0..30_000, DIM)]).unwrap();
    (db, c)
}

#[test]
fn writes_past_the_unindexed_bound_are_refused_after_the_stall_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // No stall: a write over the bound is refused at once, while the build of the 30,000
    // rows it just committed runs (it takes far longer than the next call).
    let (db, c) = loaded(tmp.path(), 0);
    let dir = tmp.path().join("docs");
    let (version, before) = (c.snapshot().version(), files(&dir));
    let err = c.append(&[batch(30_000..30_100, DIM)]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
    for needle in [
        "30000 rows not yet indexed",
        "max_unindexed_rows",
        "write_stall_ms",
        "retry",
    ] {
        assert!(err.to_string().contains(needle), "'{err}' lacks '{needle}'");
    }
    let err = c.upsert(&[batch(0..10, DIM)]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
    // A streamed put into the collection is refused before it stages a row.
    let mut ingest = db
        .ingest("docs", WriteMode::Append, opts(omendb::Metric::Cosine))
        .unwrap();
    let err = ingest.push(&batch(40_000..40_100, DIM)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
    drop(ingest);
    assert_eq!(c.count(), 30_000);
    assert_eq!(c.snapshot().version(), version, "a refused write committed");
    let after: Vec<_> = files(&dir).difference(&before).cloned().collect();
    assert!(
        after.iter().all(|f| !f.starts_with("seg-")),
        "a refused write left segment files: {after:?}"
    );
    let stats = c.stats().unwrap();
    assert_eq!(
        (stats.max_unindexed_rows, stats.writes_refused),
        (20_000, 3)
    );

    // Deletes add no rows: never held back.
    assert_eq!(
        c.delete(&arrow_array::Int64Array::from(vec![0])).unwrap(),
        1
    );

    // With time to wait, the same write waits for the index and goes in.
    c.alter(&[("write_stall_ms", "600000")]).unwrap();
    c.append(&[batch(30_000..30_100, DIM)]).unwrap();
    let stats = c.stats().unwrap();
    assert_eq!(stats.rows, 30_099);
    assert!(
        stats.writes_stalled >= 1 && stats.unindexed_rows <= 20_000,
        "{stats:?}"
    );
}

#[test]
fn the_bound_is_off_when_nothing_drains_the_unindexed_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let (_db, c) = loaded(tmp.path(), 0);
    // Flat collections are never indexed, and a bound of 0 is none: writes go straight in.
    c.alter(&[("index", "flat")]).unwrap();
    c.append(&[batch(30_000..30_100, DIM)]).unwrap();
    c.alter(&[("index", "auto"), ("max_unindexed_rows", "0")])
        .unwrap();
    c.append(&[batch(30_100..30_200, DIM)]).unwrap();
    assert_eq!(c.stats().unwrap().writes_refused, 0);
    // A bound below twice the threshold is raised to it: 25,000 rows fit under 2 × 20,000.
    c.alter(&[("max_unindexed_rows", "100"), ("index_threshold", "20000")])
        .unwrap();
    assert_eq!(c.stats().unwrap().max_unindexed_rows, 40_000);
}
