//! Engine round trips, reopen, isolation, deletes, snapshots and every refused input.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{FixedSizeListBuilder, Float32Builder, Float64Builder, ListBuilder};
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use omendb::{CollectionOptions, Database, Error, ErrorKind, Metric, SearchRequest, WriteMode};
use omendb_testkit::*;

mod faults;
mod format;

const DIM: usize = 16;

fn opts(metric: Metric) -> CollectionOptions {
    CollectionOptions {
        metric,
        ..Default::default()
    }
}

/// Opens a database at `path` with one collection `docs` of dimension `dim`.
fn create_docs(path: &Path, dim: usize, metric: Metric) -> (Database, Arc<omendb::Collection>) {
    let db = Database::open(path).unwrap();
    let c = db
        .create_collection("docs", &schema(dim), opts(metric))
        .unwrap();
    (db, c)
}

fn files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn rows(range: std::ops::Range<i64>) -> Vec<(i64, Vec<f32>)> {
    range.map(|i| (i, vector(i as u64, DIM))).collect()
}

#[test]
fn append_get_reopen_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (db, c) = create_docs(tmp.path(), DIM, Metric::Cosine);
        assert_eq!(c.append(&[batch(0..100, DIM)]).unwrap(), 100);
        assert_eq!(
            c.append(&[batch(100..150, DIM), batch(150..200, DIM)])
                .unwrap(),
            100
        );
        assert_eq!(c.count(), 200);
        let got = c.get(&Int64Array::from(vec![150, 3, 999])).unwrap();
        assert_eq!(ids_of(&got), vec![150, 3]);
        let stats = c.stats().unwrap();
        assert_eq!((stats.rows, stats.segments, stats.dim), (200, 2, DIM));
        assert!(stats.bytes_on_disk > (200 * DIM * 4) as u64);
        assert_eq!(stats.index_kinds, vec!["flat", "flat"]);
        assert_eq!(db.list_collections().unwrap(), vec!["docs"]);
    }
    let db = Database::open(tmp.path()).unwrap();
    let c = db.collection("docs").unwrap();
    assert_eq!(c.count(), 200);
    let got = c.get(&Int64Array::from(vec![7])).unwrap();
    let expected = batch(7..8, DIM);
    assert_eq!(got.columns(), expected.columns());
    assert_eq!(c.schema().field(0).data_type(), &DataType::Int64);
}

#[test]
fn flat_search_equals_brute_force_for_every_metric() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Database::open(tmp.path()).unwrap();
    let data = rows(0..3000);
    for metric in [Metric::Cosine, Metric::L2, Metric::Dot] {
        let name = format!("c_{metric}");
        let c = db
            .create_collection(&name, &schema(DIM), opts(metric))
            .unwrap();
        // Several segments, so the top-k merge across segments is exercised.
        c.append(&[batch(0..1000, DIM)]).unwrap();
        c.append(&[batch(1000..2500, DIM)]).unwrap();
        c.append(&[batch(2500..3000, DIM)]).unwrap();
        let snap = c.snapshot();
        let queries: Vec<f32> = (0..70).flat_map(|i| vector(10_000 + i, DIM)).collect();
        let batched = snap.search(&SearchRequest::new(&queries, 10)).unwrap();
        for (qi, q) in queries.chunks(DIM).enumerate() {
            let want = brute_force(&data, q, 10, metric);
            let single = c.search(q, 10).unwrap();
            assert_eq!(ids_of(&single), want, "{metric} query {qi}");
            let hits: Vec<i64> = batched[qi]
                .iter()
                .map(|h| ids_of(&snap.hits_to_batch(&[*h]).unwrap())[0])
                .collect();
            assert_eq!(hits, want, "{metric} batched query {qi}");
            // Distances are reported under the metric, ascending.
            let d = single.column_by_name("_distance").unwrap();
            let d = d
                .as_any()
                .downcast_ref::<arrow_array::Float32Array>()
                .unwrap();
            assert!(d.values().windows(2).all(|w| w[0] <= w[1]));
            let v0 = vector(want[0] as u64, DIM);
            assert!((d.value(0) - metric.distance(q, &v0)).abs() < 1e-4);
        }
    }
}

#[test]
fn two_databases_are_isolated_and_a_directory_opens_once() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let da = Database::open(a.path()).unwrap();
    let db = Database::open(b.path()).unwrap();
    da.create_collection("docs", &schema(DIM), opts(Metric::L2))
        .unwrap()
        .append(&[batch(0..10, DIM)])
        .unwrap();
    db.create_collection("docs", &schema(DIM), opts(Metric::L2))
        .unwrap()
        .append(&[batch(100..103, DIM)])
        .unwrap();
    assert_eq!(da.collection("docs").unwrap().count(), 10);
    assert_eq!(db.collection("docs").unwrap().count(), 3);
    da.drop_collection("docs").unwrap();
    assert!(matches!(da.collection("docs"), Err(Error::NotFound(_))));
    assert_eq!(db.collection("docs").unwrap().count(), 3);
    assert!(matches!(Database::open(a.path()), Err(Error::Locked(_))));
}

#[test]
fn deleted_rows_are_never_returned_and_deletes_persist() {
    let tmp = tempfile::tempdir().unwrap();
    let data = rows(0..500);
    let q = vector(77_777, DIM);
    let nearest = brute_force(&data, &q, 500, Metric::L2);
    let gone: Vec<i64> = nearest[..20].to_vec();
    {
        let (_db, c) = create_docs(tmp.path(), DIM, Metric::L2);
        c.append(&[batch(0..250, DIM)]).unwrap();
        c.append(&[batch(250..500, DIM)]).unwrap();
        assert_eq!(c.delete(&Int64Array::from(gone.clone())).unwrap(), 20);
        assert_eq!(
            c.delete(&Int64Array::from(vec![gone[0], 12345])).unwrap(),
            0
        );
        assert_eq!(c.count(), 480);
        let got = ids_of(&c.search(&q, 10).unwrap());
        assert_eq!(got, nearest[20..30].to_vec());
        // A deleted id can be written again (upsert = delete + append).
        c.append(&[batch(gone[0]..gone[0] + 1, DIM)]).unwrap();
        assert_eq!(ids_of(&c.search(&q, 1).unwrap()), vec![gone[0]]);
    }
    let db = Database::open(tmp.path()).unwrap();
    let c = db.collection("docs").unwrap();
    assert_eq!(c.count(), 481);
    let got = ids_of(&c.search(&q, 10).unwrap());
    assert_eq!(got[0], gone[0]);
    assert_eq!(got[1..], nearest[20..29]);
    assert!(c.get(&Int64Array::from(vec![gone[1]])).unwrap().num_rows() == 0);
    // k larger than the live rows: every live row, once.
    assert_eq!(c.search(&q, 10_000).unwrap().num_rows(), 481);
}

#[test]
fn snapshots_are_stable_while_writers_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let (_db, c) = create_docs(tmp.path(), DIM, Metric::Cosine);
    c.append(&[batch(0..100, DIM)]).unwrap();
    let before = c.snapshot();
    let readers: Vec<_> = (0..2)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    let s = c.snapshot();
                    let n = s.count();
                    assert_eq!(n % 100, 0, "a snapshot saw a half-applied append");
                    let hits = s
                        .search(&SearchRequest::new(&vector(t * 1000 + i, DIM), 5))
                        .unwrap()
                        .remove(0);
                    assert_eq!(hits.len(), 5);
                }
            })
        })
        .collect();
    for k in 1..10 {
        c.append(&[batch(k * 100..(k + 1) * 100, DIM)]).unwrap();
    }
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(before.count(), 100);
    assert_eq!(c.count(), 1000);
    c.delete(&Int64Array::from(vec![1, 2, 3])).unwrap();
    assert_eq!(before.count(), 100);
    assert_eq!(
        before
            .batches()
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>(),
        100
    );
}

/// Appends `bad` and checks it is refused with a message containing `needle`, and that the
/// collection (its count and its files) is exactly as before.
fn assert_refused(c: &omendb::Collection, dir: &Path, bad: RecordBatch, needle: &str) {
    let (count, before) = (c.count(), files(dir));
    let err = c.append(&[bad]).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    assert!(
        err.to_string().contains(needle),
        "'{err}' should mention '{needle}'"
    );
    assert_eq!(c.count(), count);
    assert_eq!(files(dir), before);
}

fn with_vectors(ids: Vec<i64>, vectors: ArrayRef, vec_type: DataType) -> RecordBatch {
    let n = ids.len();
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("vec", vec_type, true),
        Field::new("word", DataType::Utf8, true),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from(ids)),
            vectors,
            Arc::new(StringArray::from(vec![Some("x"); n])),
        ],
    )
    .unwrap()
}

fn fsl_with(values: &[Option<Vec<Option<f32>>>], dim: usize) -> ArrayRef {
    let mut b = FixedSizeListBuilder::new(Float32Builder::new(), dim as i32);
    for v in values {
        match v {
            Some(v) => {
                for x in v {
                    b.values().append_option(*x);
                }
                b.append(true);
            }
            None => {
                b.values().append_nulls(dim);
                b.append(false);
            }
        }
    }
    Arc::new(b.finish())
}

#[test]
fn bad_batches_are_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (_db, c) = create_docs(tmp.path(), DIM, Metric::Cosine);
    c.append(&[batch(0..10, DIM)]).unwrap();
    let dir = tmp.path().join("docs");
    let ok = || Some(vector(1, DIM).into_iter().map(Some).collect::<Vec<_>>());
    let fsl_type = |d: usize| {
        DataType::FixedSizeList(
            Arc::new(Field::new("item", DataType::Float32, true)),
            d as i32,
        )
    };

    // Wrong dimension.
    assert_refused(
        &c,
        &dir,
        batch(100..101, DIM + 1)
            .with_schema(schema(DIM + 1))
            .unwrap(),
        "wrong dimension 17",
    );
    let refuse_vectors = |ids: Vec<i64>, rows: &[Option<Vec<Option<f32>>>], needle: &str| {
        assert_refused(
            &c,
            &dir,
            with_vectors(ids, fsl_with(rows, DIM), fsl_type(DIM)),
            needle,
        )
    };
    // NaN and infinity, naming the row.
    let mut nan = ok().unwrap();
    nan[3] = Some(f32::NAN);
    refuse_vectors(
        vec![100, 101],
        &[ok(), Some(nan)],
        "row 1 has a non-finite value",
    );
    let mut inf = ok().unwrap();
    inf[0] = Some(f32::INFINITY);
    refuse_vectors(vec![100], &[Some(inf)], "non-finite");
    // Null vector and null element.
    refuse_vectors(vec![100, 101, 102], &[ok(), ok(), None], "row 2 is null");
    let mut hole = ok().unwrap();
    hole[5] = None;
    refuse_vectors(
        vec![100, 101],
        &[ok(), Some(hole)],
        "row 1 has a null element",
    );
    // Duplicate ids within the batch and against stored rows.
    refuse_vectors(vec![100, 100], &[ok(), ok()], "duplicate id 100");
    assert_refused(
        &c,
        &dir,
        batch(5..12, DIM),
        "duplicate id 5 is already stored",
    );
    // Across the batches of one append.
    let (count, before) = (c.count(), files(&dir));
    let err = c
        .append(&[batch(20..25, DIM), batch(24..26, DIM)])
        .unwrap_err();
    assert!(err.to_string().contains("duplicate id 24"), "{err}");
    assert_eq!((c.count(), files(&dir)), (count, before));
    // Schema mismatches: missing column, extra column, wrong type.
    let b = batch(100..101, DIM);
    assert_refused(
        &c,
        &dir,
        b.project(&[0, 1]).unwrap(),
        "missing column 'word'",
    );
    let extra = RecordBatch::try_from_iter(
        b.schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .zip(b.columns().iter().cloned())
            .chain([(
                "score".to_string(),
                Arc::new(Int64Array::from(vec![1])) as ArrayRef,
            )]),
    )
    .unwrap();
    assert_refused(
        &c,
        &dir,
        extra,
        "batch column 'score' is not in the collection",
    );
    let wrong_type = RecordBatch::try_from_iter(vec![
        ("id", b.column(0).clone()),
        ("vec", b.column(1).clone()),
        ("word", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
    ])
    .unwrap();
    assert_refused(&c, &dir, wrong_type, "column 'word' has type Int64");
    // Ragged List vectors name the row.
    let mut lb = ListBuilder::new(Float64Builder::new());
    lb.values().append_slice(&[0.5; DIM]);
    lb.append(true);
    lb.values().append_slice(&[0.5; DIM - 1]);
    lb.append(true);
    let ragged = lb.finish();
    let list_type = ragged.data_type().clone();
    assert_refused(
        &c,
        &dir,
        with_vectors(vec![100, 101], Arc::new(ragged), list_type),
        "row 1 has wrong dimension 15",
    );
    assert_eq!(c.count(), 10);
}

#[test]
fn list_vectors_of_float64_are_stored_as_fixed_size_float32() {
    let tmp = tempfile::tempdir().unwrap();
    let (_db, c) = create_docs(tmp.path(), 4, Metric::L2);
    let mut lb = ListBuilder::new(Float64Builder::new());
    for i in 0..3 {
        lb.values().append_slice(&[i as f64, 1.0, 2.0, 3.0]);
        lb.append(true);
    }
    let list = lb.finish();
    let t = list.data_type().clone();
    c.append(&[with_vectors(vec![1, 2, 3], Arc::new(list), t)])
        .unwrap();
    let got = c.search(&[2.0, 1.0, 2.0, 3.0], 1).unwrap();
    assert_eq!(ids_of(&got), vec![3]);
    assert_eq!(
        got.schema().field(1).data_type(),
        &schema(4).field(1).data_type().clone()
    );
}

#[test]
fn names_unknown_collections_and_bad_definitions_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Database::open(tmp.path()).unwrap();
    for bad in [
        "",
        ".",
        "..",
        "a/b",
        "../etc",
        "a\\b",
        "-x",
        "name with space",
        &"x".repeat(65),
    ] {
        let err = db
            .create_collection(bad, &schema(DIM), opts(Metric::Cosine))
            .unwrap_err();
        assert!(
            err.to_string().contains("invalid collection name"),
            "{bad:?}: {err}"
        );
    }
    assert!(matches!(db.collection("nope"), Err(Error::NotFound(m)) if m.contains("nope")));
    assert!(matches!(
        db.drop_collection("nope"),
        Err(Error::NotFound(_))
    ));
    db.create_collection("docs", &schema(DIM), opts(Metric::Cosine))
        .unwrap();
    assert!(matches!(
        db.create_collection("docs", &schema(DIM), opts(Metric::Cosine)),
        Err(Error::AlreadyExists(_))
    ));
    let no_vec = Schema::new(vec![Field::new("id", DataType::Int64, false)]);
    let err = db
        .create_collection("other", &no_vec, opts(Metric::Cosine))
        .unwrap_err();
    assert!(err.to_string().contains("no vector column"), "{err}");
    let float_id = Schema::new(vec![
        Field::new("id", DataType::Float64, false),
        schema(DIM).field(1).clone(),
    ]);
    let err = db
        .create_collection("other", &float_id, opts(Metric::Cosine))
        .unwrap_err();
    assert!(err.to_string().contains("expected Utf8 or Int64"), "{err}");
    assert_eq!(db.list_collections().unwrap(), vec!["docs"]);
    assert!("hamming".parse::<Metric>().is_err());
    let c = db.collection("docs").unwrap();
    let err = c.search(&[1.0; 3], 5).unwrap_err();
    assert!(err.to_string().contains("dimension 16"), "{err}");
}

#[test]
fn string_ids_work() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Database::open(tmp.path()).unwrap();
    let s = Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        schema(DIM).field(1).clone(),
    ]);
    let c = db
        .create_collection(
            "s",
            &s,
            CollectionOptions {
                id_column: "key".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let keys = StringArray::from(vec!["a", "b", "c"]);
    let vecs = fsl(&[vector(1, DIM), vector(2, DIM), vector(3, DIM)], DIM);
    let b = RecordBatch::try_from_iter(vec![
        ("key", Arc::new(keys) as ArrayRef),
        ("vec", Arc::new(vecs) as ArrayRef),
    ])
    .unwrap();
    c.append(std::slice::from_ref(&b)).unwrap();
    let err = c.append(&[b.slice(1, 1)]).unwrap_err();
    assert!(err.to_string().contains("duplicate id 'b'"), "{err}");
    assert_eq!(c.delete(&StringArray::from(vec!["b"])).unwrap(), 1);
    assert_eq!(
        c.get(&StringArray::from(vec!["c", "b"]))
            .unwrap()
            .num_rows(),
        1
    );
}

fn corrupt_setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (_db, c) = create_docs(tmp.path(), DIM, Metric::Cosine);
    c.append(&[batch(0..100, DIM)]).unwrap();
    let seg = tmp.path().join("docs").join("seg-0000000001.arrow");
    assert!(seg.is_file());
    (tmp, seg)
}

#[test]
fn corrupt_and_truncated_files_are_reported_naming_the_file() {
    // A flipped byte in a segment.
    let (tmp, seg) = corrupt_setup();
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let err = Database::open(tmp.path())
        .unwrap()
        .collection("docs")
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains("seg-0000000001.arrow") && err.to_string().contains("checksum"),
        "{err}"
    );

    // A truncated segment.
    let (tmp, seg) = corrupt_setup();
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let err = Database::open(tmp.path())
        .unwrap()
        .collection("docs")
        .unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");

    // A damaged manifest.
    let (tmp, _) = corrupt_setup();
    let manifest = tmp.path().join("docs").join("MANIFEST");
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("\"rows\": 100", "\"rows\": 101");
    std::fs::write(&manifest, text).unwrap();
    let err = Database::open(tmp.path())
        .unwrap()
        .collection("docs")
        .unwrap_err();
    assert!(
        err.to_string().contains("MANIFEST") && err.to_string().contains("checksum"),
        "{err}"
    );
}

#[test]
fn files_left_by_an_interrupted_write_are_ignored_and_removed() {
    let (tmp, _) = corrupt_setup();
    let dir = tmp.path().join("docs");
    std::fs::write(dir.join("seg-0000000009.arrow"), b"half a segment").unwrap();
    std::fs::write(dir.join("MANIFEST.tmp"), b"half a manifest").unwrap();
    std::fs::create_dir(tmp.path().join(".creating-x-1")).unwrap();
    let db = Database::open(tmp.path()).unwrap();
    assert_eq!(db.collection("docs").unwrap().count(), 100);
    assert!(!dir.join("seg-0000000009.arrow").exists() && !dir.join("MANIFEST.tmp").exists());
    assert_eq!(db.list_collections().unwrap(), vec!["docs"]);
}

/// Run as a child process by `acknowledged_writes_survive_a_kill`: appends batches of 100 rows
/// forever, printing each acknowledged total.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("OMENDB_CRASH_DIR") else {
        return;
    };
    let db = Database::open(&dir).unwrap();
    let c = db
        .create_collection("docs", &schema(DIM), opts(Metric::Cosine))
        .unwrap();
    for i in 0.. {
        c.append(&[batch(i * 100..(i + 1) * 100, DIM)]).unwrap();
        println!("acked {}", (i + 1) * 100);
        use std::io::Write;
        std::io::stdout().flush().unwrap();
    }
}

#[test]
fn acknowledged_writes_survive_a_kill() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("OMENDB_CRASH_DIR", tmp.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut acked = 0;
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        if let Some(n) = line.unwrap().strip_prefix("acked ") {
            acked = n.parse::<i64>().unwrap();
            if acked >= 2000 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL, mid-append
    child.wait().unwrap();
    assert!(acked >= 2000);
    let db = Database::open(tmp.path()).unwrap();
    let c = db.collection("docs").unwrap();
    let n = c.count() as i64;
    assert!(
        n >= acked && n % 100 == 0,
        "{n} rows after {acked} acknowledged"
    );
    let ids = Int64Array::from_iter_values(0..n);
    assert_eq!(c.get(&ids).unwrap().num_rows() as i64, n);
    // The reopened collection takes new writes.
    c.append(&[batch(n..n + 100, DIM)]).unwrap();
}

#[test]
fn hnsw_index_is_persisted_searched_in_place_and_respects_deletes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = rows(0..4000);
    let queries: Vec<Vec<f32>> = (0..50).map(|i| vector(90_000 + i, DIM)).collect();
    let before: Vec<Vec<i64>>;
    {
        let (_db, c) = create_docs(tmp.path(), DIM, Metric::L2);
        c.append(&[batch(0..3000, DIM)]).unwrap();
        c.append(&[batch(3000..4000, DIM)]).unwrap();
        // Only segments with at least 2000 rows get a graph; the other stays exact.
        assert_eq!(c.build_index(2000).unwrap(), 1);
        assert_eq!(c.stats().unwrap().index_kinds, vec!["hnsw", "flat"]);
        assert_eq!(c.build_index(2000).unwrap(), 0);
        let mut found = 0;
        before = queries
            .iter()
            .map(|q| {
                let got = ids_of(&c.search(q, 10).unwrap());
                let want = brute_force(&data, q, 10, Metric::L2);
                found += got.iter().filter(|g| want.contains(g)).count();
                got
            })
            .collect();
        let recall = found as f64 / (10 * queries.len()) as f64;
        assert!(recall >= 0.95, "recall@10 {recall}");
    }
    // Reopened: the graph is mapped from its file, not rebuilt, and answers identically.
    let db = Database::open(tmp.path()).unwrap();
    let c = db.collection("docs").unwrap();
    assert_eq!(c.stats().unwrap().index_kinds, vec!["hnsw", "flat"]);
    for (q, want) in queries.iter().zip(&before) {
        assert_eq!(&ids_of(&c.search(q, 10).unwrap()), want);
    }
    // Deleted rows never come back, and k live rows still do.
    let q = &queries[0];
    let gone = Int64Array::from(before[0].clone());
    assert_eq!(c.delete(&gone).unwrap(), 10);
    let got = ids_of(&c.search(q, 10).unwrap());
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|id| !before[0].contains(id)));
    // A larger ef comes close to exact results on this small collection. (Not always equal:
    // a parallel build can leave a node that no neighbour links back to, as in any HNSW.)
    let snap = c.snapshot();
    let exact: Vec<i64> = brute_force(&data, q, 30, Metric::L2)
        .into_iter()
        .filter(|id| !before[0].contains(id))
        .take(10)
        .collect();
    let hits = snap
        .search(&SearchRequest::new(q, 10).ef(Some(400)))
        .unwrap();
    let ids: Vec<i64> = hits[0]
        .iter()
        .map(|h| ids_of(&snap.hits_to_batch(&[*h]).unwrap())[0])
        .collect();
    assert_eq!(ids.len(), 10);
    assert!(ids.iter().all(|id| !before[0].contains(id)));
    let found = ids.iter().filter(|id| exact.contains(id)).count();
    assert!(
        found >= 9,
        "ef=400 found {found} of the exact 10: {ids:?} vs {exact:?}"
    );
}

#[test]
fn a_damaged_index_file_is_set_aside_and_rebuilt_while_the_collection_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let query: Vec<f32> = {
        let (_db, c) = create_docs(tmp.path(), DIM, Metric::Cosine);
        c.append(&[batch(0..500, DIM)]).unwrap();
        assert_eq!(c.build_index(1).unwrap(), 1);
        vector(7, DIM)
    };
    let dir = tmp.path().join("docs");
    let idx = files(&dir)
        .into_iter()
        .find(|f| f.ends_with(".hnsw"))
        .unwrap();
    let mut bytes = std::fs::read(dir.join(&idx)).unwrap();
    let at = bytes.len() - 8;
    bytes[at] ^= 0x55;
    std::fs::write(dir.join(&idx), bytes).unwrap();
    let db = Database::open(tmp.path()).unwrap();
    let c = db.collection("docs").unwrap();
    // Reported, naming the file, and searched exactly meanwhile.
    let repairs = c.stats().unwrap().repairs;
    assert!(
        repairs.len() == 1 && repairs[0].contains(&idx) && repairs[0].contains("set aside"),
        "{repairs:?}"
    );
    let search = |exact| {
        let req = SearchRequest::new(&query, 5).exact(exact);
        c.snapshot().search(&req).unwrap().remove(0)
    };
    let exact = search(true);
    assert_eq!(search(false)[0], exact[0]);
    // The damaged file is kept aside for inspection, and a new index is built.
    assert!(dir.join(format!("{idx}.damaged")).exists());
    c.wait_for_indexing();
    assert_eq!(c.stats().unwrap().index_kinds, ["hnsw"]);
    drop(c);
    drop(db);
    let reopened = Database::open(tmp.path()).unwrap();
    assert!(reopened
        .collection("docs")
        .unwrap()
        .stats()
        .unwrap()
        .repairs
        .is_empty());
}

#[test]
fn unchanged_index_files_open_without_rehashing_and_verify_still_reads_them() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (_db, c) = create_docs(tmp.path(), DIM, Metric::Cosine);
        c.append(&[batch(0..500, DIM)]).unwrap();
        assert_eq!(c.build_index(1).unwrap(), 1);
    }
    let dir = tmp.path().join("docs");
    let idx = dir.join(
        files(&dir)
            .into_iter()
            .find(|f| f.ends_with(".hnsw"))
            .unwrap(),
    );
    // A byte changed behind the engine's back, the size and modification time put back as
    // they were committed: opening trusts the stamp (no re-hash of the whole file) ...
    let stamp = std::fs::metadata(&idx).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&idx).unwrap();
    let at = bytes.len() - 8;
    bytes[at] ^= 0x55;
    std::fs::write(&idx, &bytes).unwrap();
    let file = std::fs::File::options().write(true).open(&idx).unwrap();
    file.set_modified(stamp).unwrap();
    drop(file);
    {
        let db = Database::open(tmp.path()).unwrap();
        let c = db.collection("docs").unwrap();
        let stats = c.stats().unwrap();
        assert!(stats.repairs.is_empty(), "{:?}", stats.repairs);
        assert_eq!(stats.index_kinds, ["hnsw"]);
        // ... while verify reads every byte and names the file.
        let err = c.verify().unwrap_err();
        let name = idx.file_name().unwrap().to_str().unwrap();
        assert!(
            err.to_string().contains(name) && err.to_string().contains("checksum"),
            "{err}"
        );
    }
    // Once its modification time differs too, opening re-hashes it and sets it aside.
    let file = std::fs::File::options().write(true).open(&idx).unwrap();
    file.set_modified(stamp + std::time::Duration::from_secs(1))
        .unwrap();
    drop(file);
    let db = Database::open(tmp.path()).unwrap();
    let repairs = db.collection("docs").unwrap().stats().unwrap().repairs;
    assert!(
        repairs.len() == 1 && repairs[0].contains("checksum"),
        "{repairs:?}"
    );
}

#[test]
fn delete_where_update_where_and_upsert_commit_once_each() {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::BooleanArray;
    let tmp = tempfile::tempdir().unwrap();
    let (_db, c) = create_docs(tmp.path(), DIM, Metric::Cosine);
    c.append(&[batch(0..100, DIM)]).unwrap();
    let ids =
        |b: &RecordBatch| -> Vec<i64> { b.column(0).as_primitive::<Int64Type>().values().to_vec() };
    let below = |n: i64| {
        move |b: &RecordBatch| -> omendb::Result<BooleanArray> {
            Ok(b.column(0)
                .as_primitive::<Int64Type>()
                .iter()
                .map(|v| v.map(|v| v < n))
                .collect())
        }
    };
    // delete_where: the rows selected go, once.
    let version = c.snapshot().version();
    assert_eq!(c.delete_where(below(10)).unwrap(), 10);
    assert_eq!(c.snapshot().version(), version + 1);
    assert_eq!(c.delete_where(below(10)).unwrap(), 0);
    assert_eq!(c.count(), 90);
    // update_where: ids 10..20 get new words, still one row per id, in one commit.
    let version = c.snapshot().version();
    let n = c
        .update_where(below(20), |rows| {
            let words: StringArray = (0..rows.num_rows()).map(|_| Some("new")).collect();
            let mut cols = rows.columns().to_vec();
            cols[2] = Arc::new(words);
            Ok(RecordBatch::try_new(rows.schema(), cols)?)
        })
        .unwrap();
    assert_eq!(n, 10);
    assert_eq!(c.snapshot().version(), version + 1);
    assert_eq!(c.count(), 90);
    let got = c.get(&Int64Array::from(vec![15])).unwrap();
    assert_eq!(got.column(2).as_string::<i32>().value(0), "new");
    // An update that would collide with a row that stays is refused, and changes nothing.
    let err = c
        .update_where(below(11), |rows| {
            let mut cols = rows.columns().to_vec();
            cols[0] = Arc::new(Int64Array::from(vec![50]));
            Ok(RecordBatch::try_new(rows.schema(), cols)?)
        })
        .unwrap_err();
    assert!(err.to_string().contains("duplicate id 50"), "{err}");
    assert_eq!(c.count(), 90);
    // upsert: ids 95..105 replace 95..99 and add 100..104.
    assert_eq!(c.upsert(&[batch(95..105, DIM)]).unwrap(), 10);
    assert_eq!(c.count(), 95);
    let mut all = ids(&c
        .get(&Int64Array::from((0..200).collect::<Vec<i64>>()))
        .unwrap());
    all.sort();
    assert_eq!(all, (10..105).collect::<Vec<i64>>());
    // Reopened, the same rows.
    drop(c);
    drop(_db);
    let db = Database::open(tmp.path()).unwrap();
    assert_eq!(db.collection("docs").unwrap().count(), 95);
}

#[test]
fn write_modes_hold_at_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open(dir.path()).unwrap());
    // Two creates of one name, both started before either commits: the second fails at its
    // commit and appends nothing.
    let mut first = db
        .ingest("docs", WriteMode::Create, CollectionOptions::default())
        .unwrap();
    let mut second = db
        .ingest("docs", WriteMode::Create, CollectionOptions::default())
        .unwrap();
    first.push(&batch(0..10, DIM)).unwrap();
    second.push(&batch(10..20, DIM)).unwrap();
    first.commit().unwrap();
    assert!(matches!(second.commit(), Err(Error::AlreadyExists(_))));
    assert_eq!(db.collection("docs").unwrap().count(), 10);
    // A create of a stored name fails at once; an append to a missing one too.
    let again = db.ingest("docs", WriteMode::Create, CollectionOptions::default());
    assert_eq!(again.unwrap_err().kind(), ErrorKind::AlreadyExists);
    let missing = db.ingest("other", WriteMode::Append, CollectionOptions::default());
    assert_eq!(missing.unwrap_err().kind(), ErrorKind::NotFound);
    // create_or_append racing a create: the loser's rows are appended.
    let mut late = db
        .ingest(
            "pair",
            WriteMode::CreateOrAppend,
            CollectionOptions::default(),
        )
        .unwrap();
    late.push(&batch(0..5, DIM)).unwrap();
    db.append_or_create("pair", CollectionOptions::default(), &[batch(5..8, DIM)])
        .unwrap();
    late.commit().unwrap();
    assert_eq!(db.collection("pair").unwrap().count(), 8);
    // Every mode parses from its name, and an unknown one names the choices.
    for (name, mode) in WriteMode::ALL {
        assert_eq!(name.parse::<WriteMode>().unwrap(), mode);
        assert_eq!(mode.name(), name);
    }
    let bad = "merge".parse::<WriteMode>().unwrap_err().to_string();
    assert!(bad.contains("create_or_append"), "{bad}");
    // Closing with wait leaves no background work behind.
    db.close(true);
}
