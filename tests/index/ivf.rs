//! IVF and compact codes (RaBitQ, binary, SQ4) in a collection.

use omendb::{CollectionOptions, Database, SearchRequest};

use crate::common::*;

/// IVF (chosen by size under `index=auto`, or asked for) and compact codes in a
/// collection: recall against exact search, k rows under a filter, and the same answers
/// from the mapped files after reopening.
#[test]
fn ivf_and_compact_codes_by_size_and_by_setting() {
    let (data, queries, dim, want) = dataset_and_answers(100);
    let n = N;
    let cases = [
        // (options, the index built, nprobe, recall floor)
        (vec!["index=auto", "ivf_threshold=4000"], "ivf", 70, 0.9),
        (
            vec!["index=ivf", "quantization=rabitq4", "nlist=50"],
            "ivf",
            20,
            0.9,
        ),
        (
            vec!["index=ivf", "quantization=binary", "nlist=50"],
            "ivf",
            20,
            0.85,
        ),
        (vec!["index=ivf", "quantization=none"], "ivf", 70, 0.9),
        (vec!["index=hnsw", "quantization=rabitq2"], "hnsw", 1, 0.9),
        (vec!["index=hnsw", "quantization=sq4"], "hnsw", 1, 0.95),
        (vec!["index=auto"], "hnsw", 1, 0.95),
    ];
    for (opts, kind, nprobe, floor) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let mut o = CollectionOptions::parse(opts.iter().copied()).unwrap();
        o.index.threshold = 0;
        let answers = {
            let db = Database::open(tmp.path()).unwrap();
            let c = db.create_collection("words", &schema(dim), o).unwrap();
            c.append(&[rows(&data, dim, 0..n)]).unwrap();
            c.build_index(1).unwrap();
            assert_eq!(c.stats().unwrap().index_kinds, [kind], "{opts:?}");
            let snap = c.snapshot();
            let req = SearchRequest::new(&queries, 10)
                .ef(Some(64))
                .nprobe(Some(nprobe));
            let got = hit_ids(&snap, snap.search(&req).unwrap());
            let recall = recall(&got, &want);
            eprintln!("{opts:?}: recall@10 {recall:.4}");
            assert!(recall >= floor, "{opts:?}: recall {recall}");
            // 70% of the rows selected: searched through the index, k rows that match.
            let sel = bucket_filter(&snap, |b| b < 70);
            let got = hit_ids(&snap, snap.search(&req.filter(Some(&sel))).unwrap());
            for ids in &got {
                assert_eq!(ids.len(), 10, "{opts:?}");
                assert!(ids.iter().all(|i| i % 100 < 70), "{opts:?}");
            }
            hit_ids(&snap, snap.search(&req).unwrap())
        };
        // A leftover index file of this kind that no manifest names is collected on open.
        let stray = tmp
            .path()
            .join("words")
            .join(format!("idx-0000000099-0000000099.{kind}"));
        std::fs::write(&stray, b"left over").unwrap();
        let db = Database::open(tmp.path()).unwrap();
        let c = db.collection("words").unwrap();
        assert!(
            !stray.exists(),
            "{opts:?}: {} was not collected",
            stray.display()
        );
        assert_eq!(c.stats().unwrap().index_kinds, [kind]);
        let snap = c.snapshot();
        let req = SearchRequest::new(&queries, 10)
            .ef(Some(64))
            .nprobe(Some(nprobe));
        assert_eq!(
            hit_ids(&snap, snap.search(&req).unwrap()),
            answers,
            "{opts:?}"
        );
    }
}

/// IVF lists smaller than k (1,000 lists over 5,000 rows, one asked for): the search probes
/// further lists until k rows (of the filter's) are seen, and k come back.
#[test]
fn a_search_whose_probed_lists_hold_fewer_than_k_rows_still_returns_k() {
    let (data, queries, dim) = dataset();
    let queries = &queries[..20 * dim];
    let tmp = tempfile::tempdir().unwrap();
    let mut o = CollectionOptions::parse(["index=ivf", "nlist=1000"]).unwrap();
    o.index.threshold = 0;
    let db = Database::open(tmp.path()).unwrap();
    let c = db.create_collection("words", &schema(dim), o).unwrap();
    c.append(&[rows(&data, dim, 0..N)]).unwrap();
    c.build_index(1).unwrap();
    assert_eq!(c.stats().unwrap().index_kinds, ["ivf"]);
    let snap = c.snapshot();
    let req = SearchRequest::new(queries, 10).nprobe(Some(1));
    let sel = bucket_filter(&snap, |b| b < 70);
    for (filter, keep) in [(None, 100), (Some(&sel), 70)] {
        let got = hit_ids(&snap, snap.search(&req.filter(filter)).unwrap());
        for ids in &got {
            assert_eq!(ids.len(), 10, "{ids:?}");
            assert!(ids.iter().all(|i| i % 100 < keep), "{ids:?}");
        }
    }
}
