//! Small writes merging into one graph, compaction dropping deleted rows, and readers keeping
//! their snapshot (and its files) through a merge.

use arrow_array::Int64Array;
use omendb::{CompactionPolicy, Database};

use crate::common::*;

#[test]
fn small_writes_merge_into_one_graph_and_compaction_drops_deleted_rows() {
    let (data, queries, dim) = dataset();
    let queries = &queries[..50 * dim];
    let n = N;
    let tmp = tempfile::tempdir().unwrap();
    let compaction = CompactionPolicy {
        merge_factor: 4,
        idle_ms: 50,
        ..Default::default()
    };
    let (_db, c) = words_collection(tmp.path(), dim, 1000, compaction);
    // Writes wait while 2,000 rows are not yet indexed (the bound in force is twice the
    // threshold): at most 20 fresh segments of 100 rows stand beside the indexed ones, however
    // little CPU the merger gets beside the other tests.
    c.alter(&[("max_unindexed_rows", "2000"), ("write_stall_ms", "600000")])
        .unwrap();
    let mut most = 0;
    for start in (0..n).step_by(100) {
        c.append(&[rows(&data, dim, start..start + 100)]).unwrap();
        most = most.max(c.snapshot().segments().len());
    }
    // Merged as they come: never one segment per write (20 fresh ones at the most, and the
    // indexed segments of 1,000 rows or more).
    assert!(most <= 30, "{most} segments at once (of 50 writes)");
    assert!(c.stats().unwrap().writes_refused == 0);
    c.wait_for_indexing();
    let snap = c.snapshot();
    let segs = snap.segments();
    assert_eq!(segs.len(), 1, "{segs:?}");
    assert_eq!(segs[0].index, Some(omendb::IndexKind::Hnsw));
    assert_eq!(c.count(), n);
    let all: Vec<i64> = (0..n as i64).collect();
    let got = c.get(&Int64Array::from(all.clone())).unwrap();
    assert_eq!(
        omendb_testkit::ids_of(&got),
        all,
        "every row once, in order asked"
    );
    let want = exact_answers(&data, dim, n, queries, |_| true);
    let r = recall(&id_hits(&snap, queries, dim, 64), &want);
    assert!(r >= 0.95, "recall@10 of the merged graph {r}");

    // A tenth of the rows deleted, then compacted: the graph is carried over and repaired.
    let gone: Vec<i64> = (0..n as i64).filter(|i| i % 10 == 7).collect();
    assert_eq!(c.delete(&Int64Array::from(gone.clone())).unwrap(), n / 10);
    assert_eq!(c.compact().unwrap(), 1);
    let stats = c.stats().unwrap();
    assert_eq!(
        (stats.segments, stats.deleted_rows, stats.rows),
        (1, 0, n - n / 10)
    );
    assert_eq!(stats.index_kinds, ["hnsw"]);
    let want = exact_answers(&data, dim, n, queries, |i| i % 10 != 7);
    let got = id_hits(&c.snapshot(), queries, dim, 64);
    assert!(
        got.iter().flatten().all(|i| i % 10 != 7),
        "a deleted row came back"
    );
    let r = recall(&got, &want);
    assert!(r >= 0.95, "recall@10 after dropping deleted rows {r}");
    // Nothing left to do: compacting again merges nothing.
    assert_eq!(c.compact().unwrap(), 0);
}

#[test]
fn readers_keep_their_snapshot_through_a_merge_and_files_go_when_it_is_dropped() {
    let (data, queries, dim) = dataset();
    let queries = &queries[..10 * dim];
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("words");
    let names = || -> std::collections::BTreeSet<String> {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("seg-"))
            .collect()
    };
    {
        let db = Database::open(tmp.path()).unwrap();
        let c = db
            .create_collection("words", &schema(dim), options(0))
            .unwrap();
        for start in (0..3000).step_by(1000) {
            c.append(&[rows(&data, dim, start..start + 1000)]).unwrap();
        }
        c.delete(&Int64Array::from(vec![5, 1500])).unwrap();
        let old = c.snapshot();
        let before = id_hits(&old, queries, dim, 64);
        let files_before = names();
        assert_eq!(files_before.len(), 3);
        assert_eq!(c.compact().unwrap(), 1);
        assert_eq!(c.snapshot().segments().len(), 1);
        // The old snapshot still reads and searches what it saw; its files stay.
        assert_eq!(id_hits(&old, queries, dim, 64), before);
        assert_eq!(old.count(), 2998);
        assert!(names().is_superset(&files_before));
        drop(old);
        assert_eq!(
            names().len(),
            1,
            "replaced files removed with the last snapshot"
        );
        assert_eq!(id_hits(&c.snapshot(), queries, dim, 64), before);
    }
    let db = Database::open(tmp.path()).unwrap();
    let c = db.collection("words").unwrap();
    assert_eq!(c.count(), 2998);
    assert_eq!(
        c.get(&Int64Array::from(vec![5, 1500, 6]))
            .unwrap()
            .num_rows(),
        1
    );
}

/// A vector stored many times (the same text embedded twice, a default vector) once cut the
/// graph into islands of copies: every link of a copy went to another copy. Searching for any
/// of them finds 10 copies, in graphs built afresh and in graphs a merge carried over.
#[test]
fn copies_of_a_vector_stay_reachable_in_built_and_merged_graphs() {
    let (data, _, dim) = dataset();
    let distinct = 100;
    // Row i holds distinct vector i % 100: 40 copies of each.
    let copies: Vec<f32> = (0..4000)
        .flat_map(|i| data[(i % distinct) * dim..(i % distinct + 1) * dim].to_vec())
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let compaction = CompactionPolicy {
        enabled: false,
        ..Default::default()
    };
    let (_db, c) = words_collection(tmp.path(), dim, 1000, compaction);
    for start in (0..4000).step_by(1000) {
        c.append(&[rows(&copies, dim, start..start + 1000)])
            .unwrap();
    }
    let queries = &data[..distinct * dim];
    let check = |stage: &str| {
        let snap = c.snapshot();
        assert!(snap.segments().iter().all(|s| s.index.is_some()), "{stage}");
        for (q, hits) in id_hits(&snap, queries, dim, 64).iter().enumerate() {
            assert_eq!(hits.len(), 10, "{stage}: query {q}");
            assert!(
                hits.iter().all(|&id| id as usize % distinct == q),
                "{stage}: query {q} found {hits:?}, not 10 of its copies"
            );
        }
    };
    c.build_index(0).unwrap();
    check("four graphs");
    assert!(c.compact().unwrap() >= 1);
    assert_eq!(c.snapshot().segments().len(), 1);
    check("merged");
}
