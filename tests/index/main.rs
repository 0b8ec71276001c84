//! HNSW recall against exact search on real embeddings (a slice of minilm-words).

use omendb::distance::Metric;
use omendb::index::hnsw::{Hnsw, HnswParams};
use omendb::VectorView as Space;

const N: usize = 5000;

/// The first N rows and 200 queries of minilm-words (the cut the repository ships).
fn dataset() -> (Vec<f32>, Vec<f32>, usize) {
    let d = omendb_testkit::test_dataset();
    (
        d.base.data[..N * d.base.cols].to_vec(),
        d.queries.data[..200 * d.queries.cols].to_vec(),
        d.base.cols,
    )
}

fn exact(space_data: &[f32], dim: usize, q: &[f32], k: usize, metric: Metric) -> Vec<u32> {
    let mut d: Vec<(f32, u32)> = space_data
        .chunks(dim)
        .enumerate()
        .map(|(i, v)| (metric.distance(q, v), i as u32))
        .collect();
    d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    d.into_iter().take(k).map(|x| x.1).collect()
}

#[allow(clippy::too_many_arguments)]
fn recall(
    graph: &Hnsw,
    space: &Space<'_>,
    data: &[f32],
    queries: &[f32],
    dim: usize,
    metric: Metric,
    ef: usize,
    filter: Option<&dyn Fn(u32) -> bool>,
) -> f64 {
    let accept = |i: u32| filter.is_none_or(|f| f(i));
    let mut hits = 0;
    let mut total = 0;
    for q in queries.chunks(dim) {
        let got: Vec<u32> = graph
            .search(space, q, 10, ef, filter)
            .into_iter()
            .map(|h| h.0)
            .collect();
        let filtered: Vec<f32> = data
            .chunks(dim)
            .enumerate()
            .filter(|(i, _)| accept(*i as u32))
            .flat_map(|(_, v)| v.to_vec())
            .collect();
        let ids: Vec<u32> = (0..data.len() / dim)
            .map(|i| i as u32)
            .filter(|i| accept(*i))
            .collect();
        let want: Vec<u32> = exact(&filtered, dim, q, 10, metric)
            .into_iter()
            .map(|j| ids[j as usize])
            .collect();
        assert!(
            got.iter().all(|g| accept(*g)),
            "a rejected row was returned"
        );
        assert_eq!(got.len(), 10.min(ids.len()));
        hits += got.iter().filter(|g| want.contains(g)).count();
        total += want.len();
    }
    hits as f64 / total as f64
}

#[test]
fn recall_at_10_against_exact_search() {
    let (data, queries, dim) = dataset();
    for metric in [Metric::Cosine, Metric::L2] {
        let space = Space::new(&data, dim, metric);
        let graph = Hnsw::build(&space, HnswParams::default());
        let r = recall(&graph, &space, &data, &queries, dim, metric, 64, None);
        eprintln!("{metric}: recall@10 at ef=64: {r:.4}");
        assert!(r >= 0.95, "{metric} recall {r}");
        let high = recall(&graph, &space, &data, &queries, dim, metric, 400, None);
        assert!(high >= 0.995, "{metric} recall at ef=400: {high}");
        // Rebuilding with the same parameters gives the same graph's quality; every node is reachable.
        assert!(graph.layer0.chunks(1 + 2 * graph.m).all(|l| l[0] > 0));
    }
}

#[test]
fn filtered_search_returns_only_accepted_rows() {
    let (data, queries, dim) = dataset();
    let space = Space::new(&data, dim, Metric::Cosine);
    let graph = Hnsw::build(&space, HnswParams::default());
    // 10% of rows accepted: the graph search still returns 10 of them, with good recall.
    let accept = |i: u32| i % 10 == 3;
    let r = recall(
        &graph,
        &space,
        &data,
        &queries[..50 * dim],
        dim,
        Metric::Cosine,
        200,
        Some(&accept),
    );
    eprintln!("10% filter: recall@10 at ef=200: {r:.4}");
    assert!(r >= 0.95, "filtered recall {r}");
}

mod collection {
    //! The index inside a collection: automatic builds, filters, readers during a build.

    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
    use arrow_array::{ArrayRef, Int64Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};
    use omendb::{
        CollectionOptions, Database, IndexSettings, Metric, SearchRequest, Selection, Snapshot,
    };

    /// Rows `ids` of the dataset, with a `bucket` column of `id % 100`.
    fn rows(data: &[f32], dim: usize, ids: std::ops::Range<usize>) -> RecordBatch {
        let mut vectors = FixedSizeListBuilder::new(Float32Builder::new(), dim as i32)
            .with_field(Arc::new(Field::new("item", DataType::Float32, true)));
        for i in ids.clone() {
            vectors.values().append_slice(&data[i * dim..(i + 1) * dim]);
            vectors.append(true);
        }
        let ids: Vec<i64> = ids.map(|i| i as i64).collect();
        let buckets: Vec<i64> = ids.iter().map(|i| i % 100).collect();
        RecordBatch::try_from_iter(vec![
            ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
            ("vec", Arc::new(vectors.finish()) as ArrayRef),
            ("bucket", Arc::new(Int64Array::from(buckets)) as ArrayRef),
        ])
        .unwrap()
    }

    fn schema(dim: usize) -> Schema {
        rows(&vec![0.0; dim], dim, 0..1).schema().as_ref().clone()
    }

    /// Indexing at `threshold`, without merges (these tests look at segments as appended).
    fn options(threshold: usize) -> CollectionOptions {
        CollectionOptions {
            metric: Metric::Cosine,
            index: IndexSettings {
                threshold,
                compaction: false,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// The ids of each query's hits (rows are numbered in append order across segments).
    fn hit_ids(snap: &Snapshot, hits: Vec<Vec<omendb::Hit>>) -> Vec<Vec<i64>> {
        let offsets: Vec<usize> = snap
            .segments()
            .iter()
            .scan(0, |at, p| {
                let start = *at;
                *at += p.rows;
                Some(start)
            })
            .collect();
        hits.into_iter()
            .map(|h| {
                h.iter()
                    .map(|h| (offsets[h.part as usize] + h.row as usize) as i64)
                    .collect()
            })
            .collect()
    }

    /// Exact top-10 by cosine among the rows `keep` accepts.
    fn exact_ids(
        data: &[f32],
        dim: usize,
        n: usize,
        q: &[f32],
        keep: impl Fn(usize) -> bool,
    ) -> Vec<i64> {
        let rows: Vec<usize> = (0..n).filter(|&i| keep(i)).collect();
        let mut d: Vec<(f32, usize)> = rows
            .iter()
            .map(|&i| (Metric::Cosine.distance(q, &data[i * dim..(i + 1) * dim]), i))
            .collect();
        d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        d.into_iter().take(10).map(|x| x.1 as i64).collect()
    }

    /// The share of each query's exact top 10 (`want`) that `got` found.
    fn recall_at_10(got: &[Vec<i64>], want: &[Vec<i64>]) -> f64 {
        let found: usize = got
            .iter()
            .zip(want)
            .map(|(g, w)| g.iter().filter(|i| w.contains(i)).count())
            .sum();
        found as f64 / (10 * want.len()) as f64
    }

    fn bucket_filter(snap: &Snapshot, keep: impl Fn(i64) -> bool) -> Selection {
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

    #[test]
    fn automatic_index_filters_and_reopen() {
        let (data, queries, dim) = super::dataset();
        let tmp = tempfile::tempdir().unwrap();
        let n = super::N;
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

    /// IVF (chosen by size under `index=auto`, or asked for) and compact codes in a
    /// collection: recall against exact search, k rows under a filter, and the same answers
    /// from the mapped files after reopening.
    #[test]
    fn ivf_and_compact_codes_by_size_and_by_setting() {
        let (data, queries, dim) = super::dataset();
        let n = super::N;
        let queries = &queries[..100 * dim];
        let want: Vec<Vec<i64>> = queries
            .chunks(dim)
            .map(|q| exact_ids(&data, dim, n, q, |_| true))
            .collect();
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
                let req = SearchRequest::new(queries, 10)
                    .ef(Some(64))
                    .nprobe(Some(nprobe));
                let got = hit_ids(&snap, snap.search(&req).unwrap());
                let recall = recall_at_10(&got, &want);
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
            let req = SearchRequest::new(queries, 10)
                .ef(Some(64))
                .nprobe(Some(nprobe));
            assert_eq!(
                hit_ids(&snap, snap.search(&req).unwrap()),
                answers,
                "{opts:?}"
            );
        }
    }

    /// Vectors stored in half precision: the column is `FixedSizeList<Float16>` on disk (half
    /// the bytes), every index searches it with distances computed in f32 and keeps its
    /// recall against exact f32 search, float16 input stays float16 without being asked, and
    /// a value float16 cannot hold is refused with nothing written.
    #[test]
    fn float16_collections_store_half_and_search_in_f32() {
        use arrow_array::cast::AsArray;
        use arrow_array::types::Float32Type;

        let (data, queries, dim) = super::dataset();
        let n = super::N;
        let queries = &queries[..100 * dim];
        let want: Vec<Vec<i64>> = queries
            .chunks(dim)
            .map(|q| exact_ids(&data, dim, n, q, |_| true))
            .collect();
        let half_list = DataType::FixedSizeList(
            Arc::new(Field::new("item", DataType::Float16, true)),
            dim as i32,
        );
        let segment_bytes = |dir: &std::path::Path| -> u64 {
            std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".arrow"))
                .map(|e| e.metadata().unwrap().len())
                .sum()
        };
        let full = {
            let tmp = tempfile::tempdir().unwrap();
            let db = Database::open(tmp.path()).unwrap();
            let c = db
                .create_collection("words", &schema(dim), options(n + 1))
                .unwrap();
            c.append(&[rows(&data, dim, 0..n)]).unwrap();
            segment_bytes(&tmp.path().join("words"))
        };
        for (opts, kind, floor) in [
            (vec!["index=flat"], "flat", 0.99),
            (vec!["index=hnsw"], "hnsw", 0.95),
            (vec!["index=hnsw", "quantization=none"], "hnsw", 0.95),
            (
                vec!["index=ivf", "quantization=rabitq4", "nlist=50", "nprobe=20"],
                "ivf",
                0.9,
            ),
            (
                vec!["index=ivf", "quantization=none", "nlist=50", "nprobe=20"],
                "ivf",
                0.9,
            ),
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let mut o =
                CollectionOptions::parse(opts.iter().copied().chain(["vector_type=float16"]))
                    .unwrap();
            o.index.threshold = 0;
            o.index.compaction = false;
            let answers = {
                let db = Database::open(tmp.path()).unwrap();
                let c = db.create_collection("words", &schema(dim), o).unwrap();
                assert_eq!(c.schema().field(1).data_type(), &half_list);
                c.append(&[rows(&data, dim, 0..n)]).unwrap();
                let half = segment_bytes(&tmp.path().join("words"));
                assert!(
                    half * 10 < full * 6,
                    "{opts:?}: float16 segment {half} B, float32 {full} B"
                );
                if kind != "flat" {
                    c.build_index(1).unwrap();
                }
                assert_eq!(c.stats().unwrap().index_kinds, [kind], "{opts:?}");
                assert_eq!(c.stats().unwrap().vector_type, "float16");
                let snap = c.snapshot();
                let req = SearchRequest::new(queries, 10).ef(Some(64));
                let got = hit_ids(&snap, snap.search(&req).unwrap());
                let recall = recall_at_10(&got, &want);
                eprintln!("float16 {opts:?}: recall@10 {recall:.4}");
                assert!(recall >= floor, "{opts:?}: recall {recall}");
                // Distances are those of the stored (rounded) vectors, computed in f32.
                let hits = snap
                    .search(&SearchRequest::new(&queries[..dim], 10))
                    .unwrap();
                let (batches, stored) = (snap.batches().unwrap(), &hits[0]);
                let vectors = batches[0].column(1).as_fixed_size_list();
                for h in stored {
                    let row = vectors.value(h.row as usize);
                    let widened: Vec<f32> = arrow_cast::cast(&row, &DataType::Float32)
                        .unwrap()
                        .as_primitive::<Float32Type>()
                        .values()
                        .to_vec();
                    let d = Metric::Cosine.distance(&queries[..dim], &widened);
                    assert!(
                        (d - h.distance).abs() < 1e-5,
                        "{opts:?}: distance {} for a stored row at {d}",
                        h.distance
                    );
                }
                got
            };
            let db = Database::open(tmp.path()).unwrap();
            let c = db.collection("words").unwrap();
            assert_eq!(c.schema().field(1).data_type(), &half_list);
            let snap = c.snapshot();
            let req = SearchRequest::new(queries, 10).ef(Some(64));
            assert_eq!(
                hit_ids(&snap, snap.search(&req).unwrap()),
                answers,
                "{opts:?}"
            );
        }

        // Rows that arrive as float16 create a float16 collection; a value beyond float16's
        // range is refused and nothing of its batch is written.
        let tmp = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(tmp.path()).unwrap());
        let halves = |batch: &RecordBatch| -> RecordBatch {
            let mut cols = batch.columns().to_vec();
            let field = Arc::new(Field::new("vec", half_list.clone(), false));
            cols[1] = arrow_cast::cast(&cols[1], field.data_type()).unwrap();
            let mut fields: Vec<_> = batch.schema().fields().iter().cloned().collect();
            fields[1] = field;
            RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
        };
        let first = halves(&rows(&data, dim, 0..100));
        db.append_or_create("h", options(1000), &[first]).unwrap();
        let c = db.collection("h").unwrap();
        assert_eq!(c.schema().field(1).data_type(), &half_list);
        let mut big = data[..110 * dim].to_vec();
        big[103 * dim + 7] = 70_000.0;
        let err = c
            .append(&[rows(&big, dim, 100..110)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("row 3") && err.contains("position 7") && err.contains("65504"),
            "{err}"
        );
        assert_eq!(c.count(), 100);
        // The option is checked by name.
        let err = CollectionOptions::parse(["vector_type=float8"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("float32 or float16"), "{err}");
    }

    #[test]
    fn closing_during_a_build_stops_it_and_reopening_finishes_it() {
        let (data, _, dim) = super::dataset();
        let tmp = tempfile::tempdir().unwrap();
        {
            let db = Database::open(tmp.path()).unwrap();
            let c = db
                .create_collection("words", &schema(dim), options(1000))
                .unwrap();
            c.append(&[rows(&data, dim, 0..super::N)]).unwrap();
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
        let (data, queries, dim) = super::dataset();
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

    /// Each query's hit ids, read from the id column (row positions change when segments merge).
    fn id_hits(snap: &Snapshot, queries: &[f32], dim: usize, ef: usize) -> Vec<Vec<i64>> {
        let hits = snap
            .search(&SearchRequest::new(queries, 10).ef(Some(ef)))
            .unwrap();
        assert_eq!(hits.len(), queries.len() / dim);
        hits.iter()
            .map(|h| omendb_testkit::ids_of(&snap.hits_to_batch(h).unwrap()))
            .collect()
    }

    fn recall_of(got: &[Vec<i64>], want: &[Vec<i64>]) -> f64 {
        let hits: usize = got
            .iter()
            .zip(want)
            .map(|(g, w)| g.iter().filter(|i| w.contains(i)).count())
            .sum();
        hits as f64 / want.iter().map(Vec::len).sum::<usize>() as f64
    }

    #[test]
    fn search_work_counts_graph_expansions_and_scanned_rows() {
        let (data, _, dim) = super::dataset();
        let tmp = tempfile::tempdir().unwrap();
        let db = Database::open(tmp.path()).unwrap();
        let opts = CollectionOptions {
            index: IndexSettings {
                threshold: 1000,
                ..Default::default()
            },
            ..Default::default()
        };
        let c = db.create_collection("words", &schema(dim), opts).unwrap();
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
        let (data, _, dim) = super::dataset();
        for round in 0..3 {
            let tmp = tempfile::tempdir().unwrap();
            // No automatic builds; small writes, merged in the background as they come.
            let opts = CollectionOptions {
                index: IndexSettings {
                    threshold: 0,
                    merge_factor: 4,
                    ..Default::default()
                },
                ..Default::default()
            };
            let db = Database::open(tmp.path()).unwrap();
            let c = db.create_collection("words", &schema(dim), opts).unwrap();
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

    #[test]
    fn small_writes_merge_into_one_graph_and_compaction_drops_deleted_rows() {
        let (data, queries, dim) = super::dataset();
        let queries = &queries[..50 * dim];
        let n = super::N;
        let tmp = tempfile::tempdir().unwrap();
        let opts = CollectionOptions {
            index: IndexSettings {
                threshold: 1000,
                merge_factor: 4,
                compaction_idle_ms: 50,
                ..Default::default()
            },
            ..Default::default()
        };
        let db = Database::open(tmp.path()).unwrap();
        let c = db.create_collection("words", &schema(dim), opts).unwrap();
        let mut most = 0;
        for start in (0..n).step_by(100) {
            c.append(&[rows(&data, dim, start..start + 100)]).unwrap();
            most = most.max(c.snapshot().segments().len());
        }
        // Merged as they come: never one segment per write (the bound leaves room for a
        // merger starved of CPU by the tests running beside it on a 2-core machine).
        assert!(most <= 30, "{most} segments at once (of 50 writes)");
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
        let want: Vec<Vec<i64>> = queries
            .chunks(dim)
            .map(|q| exact_ids(&data, dim, n, q, |_| true))
            .collect();
        let r = recall_of(&id_hits(&snap, queries, dim, 64), &want);
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
        let want: Vec<Vec<i64>> = queries
            .chunks(dim)
            .map(|q| exact_ids(&data, dim, n, q, |i| i % 10 != 7))
            .collect();
        let got = id_hits(&c.snapshot(), queries, dim, 64);
        assert!(
            got.iter().flatten().all(|i| i % 10 != 7),
            "a deleted row came back"
        );
        let r = recall_of(&got, &want);
        assert!(r >= 0.95, "recall@10 after dropping deleted rows {r}");
        // Nothing left to do: compacting again merges nothing.
        assert_eq!(c.compact().unwrap(), 0);
    }

    #[test]
    fn readers_keep_their_snapshot_through_a_merge_and_files_go_when_it_is_dropped() {
        let (data, queries, dim) = super::dataset();
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
}
