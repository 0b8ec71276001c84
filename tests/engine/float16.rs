//! Collections of float16 vectors: stored in half precision, searched in f32.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema};
use omendb::{CollectionOptions, Database, Metric, SearchRequest};
use omendb_testkit::recall;
use omendb_testkit::words::{dataset_and_answers, hit_ids, options, rows, schema, N};

/// Vectors stored in half precision: the column is `FixedSizeList<Float16>` on disk (half
/// the bytes), every index searches it with distances computed in f32 and keeps its
/// recall against exact f32 search, float16 input stays float16 without being asked, and
/// a value float16 cannot hold is refused with nothing written.
#[test]
fn float16_collections_store_half_and_search_in_f32() {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Float32Type;

    let (data, queries, dim, want) = dataset_and_answers(100);
    let n = N;
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
            CollectionOptions::parse(opts.iter().copied().chain(["vector_type=float16"])).unwrap();
        o.index.threshold = 0;
        o.index.compaction.enabled = false;
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
            let req = SearchRequest::new(&queries, 10).ef(Some(64));
            let got = hit_ids(&snap, snap.search(&req).unwrap());
            let recall = recall(&got, &want);
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
        let req = SearchRequest::new(&queries, 10).ef(Some(64));
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
