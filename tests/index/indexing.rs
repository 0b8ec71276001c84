//! The index inside a collection: automatic and background builds, filters and reopen, closing
//! during a build, readers and writers during a build, `build_index`, and search work.

use std::sync::atomic::{AtomicBool, Ordering};

use arrow_array::Int64Array;
use omendb::{CollectionOptions, CompactionPolicy, Database, SearchRequest};

use crate::common::*;

#[test]
fn automatic_index_filters_and_reopen() {
    let (data, queries, dim) = dataset();
    let tmp = tempfile::tempdir().unwrap();
    let n = N;
    let fresh = 1000;
    let queries = &queries[..100 * dim];
    let answers = {
        let db = Database::open(tmp.path()).unwrap();
        let c = db
            .create_collection("words", &schema(dim), options(2000))
            .unwrap();
        // Reaches the threshold: indexed in the background.
        c.append(&[rows(&data, dim, 0..n - fresh)]).unwrap();
        c.wait_for_indexing();
        // Under the threshold: stays exact.
        c.append(&[rows(&data, dim, n - fresh..n)]).unwrap();
        c.wait_for_indexing();
        let stats = c.stats().unwrap();
        assert_eq!(stats.index_kinds, ["hnsw", "flat"]);
        assert!(!stats.indexing);
        assert_eq!(stats.index_error, None);

        let snap = c.snapshot();
        // 100%, 70% and 1% of the rows selected: the graph skips unselected rows; the 1% filter
        // is answered by an exact pass over the selected rows.
        for (fraction, floor) in [(100, 0.95), (70, 0.95), (1, 1.0)] {
            let keep = |b: i64| b < fraction;
            let sel = bucket_filter(&snap, keep);
            assert_eq!(sel.count(&snap), n * fraction as usize / 100);
            let got = hit_ids(
                &snap,
                snap.search(
                    &SearchRequest::new(queries, 10)
                        .ef(Some(64))
                        .filter(Some(&sel)),
                )
                .unwrap(),
            );
            let mut found = 0;
            for (q, ids) in queries.chunks(dim).zip(&got) {
                assert_eq!(ids.len(), 10, "{fraction}% filter: k rows come back");
                assert!(
                    ids.iter().all(|&i| keep(i % 100)),
                    "an unselected row came back"
                );
                let want = exact_ids(&data, dim, n, q, |i| keep(i as i64 % 100));
                found += ids.iter().filter(|i| want.contains(i)).count();
            }
            let recall = found as f64 / (10 * got.len()) as f64;
            eprintln!("{fraction}% filter: recall@10 {recall:.4}");
            assert!(recall >= floor, "{fraction}% filter: recall {recall}");
        }
        // A filter nothing matches returns nothing.
        let none = bucket_filter(&snap, |_| false);
        let got = snap
            .search(&SearchRequest::new(queries, 10).filter(Some(&none)))
            .unwrap();
        assert!(got.iter().all(Vec::is_empty));
        // A selection belongs to the snapshot it was made from.
        c.delete(&Int64Array::from(vec![0])).unwrap();
        let err = c
            .snapshot()
            .search(&SearchRequest::new(queries, 10).filter(Some(&none)))
            .unwrap_err();
        assert!(err.to_string().contains("another snapshot"), "{err}");
        hit_ids(
            &c.snapshot(),
            c.snapshot()
                .search(&SearchRequest::new(queries, 10))
                .unwrap(),
        )
    };
    // Reopened: the index is mapped, not rebuilt, and answers the same.
    let db = Database::open(tmp.path()).unwrap();
    let c = db.collection("words").unwrap();
    assert!(!c.stats().unwrap().indexing);
    assert_eq!(c.stats().unwrap().index_kinds, ["hnsw", "flat"]);
    let snap = c.snapshot();
    assert_eq!(
        hit_ids(
            &snap,
            snap.search(&SearchRequest::new(queries, 10)).unwrap()
        ),
        answers
    );
}

#[test]
fn closing_during_a_build_stops_it_and_reopening_finishes_it() {
    let (data, _, dim) = dataset();
    let tmp = tempfile::tempdir().unwrap();
    {
        let db = Database::open(tmp.path()).unwrap();
        let c = db
            .create_collection("words", &schema(dim), options(1000))
            .unwrap();
        c.append(&[rows(&data, dim, 0..N)]).unwrap();
        assert!(c.stats().unwrap().indexing);
        // Dropping the database stops the build before the directory lock is released.
    }
    let db = Database::open(tmp.path()).unwrap();
    let c = db.collection("words").unwrap();
    c.wait_for_indexing();
    let stats = c.stats().unwrap();
    assert_eq!(stats.index_kinds, ["hnsw"]);
    assert_eq!(stats.index_error, None);
    let files: Vec<String> = std::fs::read_dir(tmp.path().join("words"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.starts_with("idx-"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
}

#[test]
fn readers_and_writers_go_on_during_a_build() {
    let (data, queries, dim) = dataset();
    let tmp = tempfile::tempdir().unwrap();
    let n = 4000;
    let db = Database::open(tmp.path()).unwrap();
    let c = db
        .create_collection("words", &schema(dim), options(0))
        .unwrap();
    c.append(&[rows(&data, dim, 0..n)]).unwrap();
    let queries = &queries[..20 * dim];
    let exact = hit_ids(
        &c.snapshot(),
        c.snapshot()
            .search(&SearchRequest::new(queries, 10))
            .unwrap(),
    );
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let (mut before, mut after) = (0, 0);
                    loop {
                        let finished = done.load(Ordering::SeqCst);
                        let snap = c.snapshot();
                        let got = hit_ids(
                            &snap,
                            snap.search(&SearchRequest::new(queries, 10)).unwrap(),
                        );
                        let indexed = snap.segments()[0].index.is_some();
                        let mut found = 0;
                        for (g, e) in got.iter().zip(&exact) {
                            assert_eq!(g.len(), 10);
                            if !indexed && snap.segments().len() == 1 {
                                assert_eq!(g, e, "before the index, search is exact");
                            }
                            found += g.iter().filter(|i| e.contains(i)).count();
                        }
                        assert!(found as f64 >= 0.9 * (10 * exact.len()) as f64);
                        if indexed {
                            after += 1;
                        } else {
                            before += 1;
                        }
                        if finished {
                            return (before, after);
                        }
                    }
                })
            })
            .collect();
        let writer = s.spawn(|| c.append(&[rows(&data, dim, n..n + 100)]).unwrap());
        assert!(c.build_index(1).unwrap() >= 1);
        done.store(true, Ordering::SeqCst);
        assert_eq!(writer.join().unwrap(), 100);
        for r in readers {
            let (before, after) = r.join().unwrap();
            assert!(
                before > 0 && after > 0,
                "reads before {before}, after {after}"
            );
        }
    });
    // The append made during the build is there; the new small segment got no index
    // (build_index(1) may or may not have seen it, both are fine), and counts add up.
    assert_eq!(c.count(), n + 100);
    assert_eq!(c.stats().unwrap().index_kinds[0], "hnsw");
}

#[test]
fn search_work_counts_graph_expansions_and_scanned_rows() {
    let (data, _, dim) = dataset();
    let tmp = tempfile::tempdir().unwrap();
    let (db, c) = words_collection(tmp.path(), dim, 1000, CompactionPolicy::default());
    c.append(&[rows(&data, dim, 0..2000)]).unwrap();
    c.wait_for_indexing();
    let snap = c.snapshot();
    assert_eq!(snap.segments()[0].index, Some(omendb::IndexKind::Hnsw));
    let (one, two) = (&data[..dim], &data[..2 * dim]);
    let work = |q, k, ef| snap.search_work(&SearchRequest::new(q, k).ef(Some(ef)));
    // A graph search: ef expansions of one neighbour list each, whatever the rows.
    assert!(work(one, 10, 16) > 0);
    assert_eq!(work(one, 10, 32), 2 * work(one, 10, 16));
    assert!(work(one, 10, 16) < 2000, "{}", work(one, 10, 16));
    assert_eq!(work(two, 10, 16), 2 * work(one, 10, 16), "per query");
    assert_eq!(work(one, 0, 16), 0, "k 0 searches nothing");
    // Exact search, a filter and an unindexed collection compare the rows they read.
    let exact = SearchRequest::new(one, 10).exact(true);
    assert_eq!(snap.search_work(&exact), 2000);
    let bucket = bucket_filter(&snap, |b| b == 3);
    let filtered = SearchRequest::new(one, 10)
        .ef(Some(16))
        .filter(Some(&bucket));
    assert_eq!(snap.search_work(&filtered), work(one, 10, 16) + 20);
    let small = db
        .create_collection("few", &schema(dim), CollectionOptions::default())
        .unwrap();
    small.append(&[rows(&data, dim, 0..500)]).unwrap();
    let small = small.snapshot();
    assert_eq!(small.segments()[0].index, None);
    assert_eq!(small.search_work(&SearchRequest::new(two, 10)), 1000);
}

#[test]
fn build_index_leaves_no_segment_unindexed_while_small_segments_merge() {
    let (data, _, dim) = dataset();
    for round in 0..3 {
        let tmp = tempfile::tempdir().unwrap();
        // No automatic builds; small writes, merged in the background as they come.
        let compaction = CompactionPolicy {
            merge_factor: 4,
            ..Default::default()
        };
        let (_db, c) = words_collection(tmp.path(), dim, 0, compaction);
        for start in (0..4000).step_by(500) {
            c.append(&[rows(&data, dim, start..start + 500)]).unwrap();
        }
        assert!(c.build_index(0).unwrap() >= 1);
        let stats = c.stats().unwrap();
        assert!(
            stats.index_kinds.iter().all(|k| k == "hnsw"),
            "round {round}: after build_index {:?}",
            stats.index_kinds
        );
        assert_eq!(c.count(), 4000);
    }
}
