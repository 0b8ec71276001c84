//! Engine round trips, reopen, isolation, deletes, snapshots, write modes, damaged files and
//! a killed writer (here); refused input, index files, float16 vectors, the on-disk format and
//! injected write failures (in the modules).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use omendb::{CollectionOptions, Database, Error, ErrorKind, Metric, SearchRequest, WriteMode};
use omendb_testkit::*;

mod backpressure;
mod faults;
mod float16;
mod format;
mod index_files;
mod refusals;

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
    let seg = std::fs::read_dir(tmp.path().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("seg-0000000001-")
        })
        .unwrap();
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
        err.to_string().contains("seg-0000000001-") && err.to_string().contains("checksum"),
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
    let manifest = manifest_path(&tmp.path().join("docs"));
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("\"rows\": 100", "\"rows\": 101");
    std::fs::write(&manifest, text).unwrap();
    let err = Database::open(tmp.path())
        .unwrap()
        .collection("docs")
        .unwrap_err();
    assert!(
        err.to_string().contains("manifest-") && err.to_string().contains("checksum"),
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

/// Searches of one snapshot made at once run together as one many-query search (sharing its
/// exact scans): each gets the hits it gets alone, whatever its k and ef, in any mix.
#[test]
fn searches_made_together_find_what_each_finds_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (_db, c) = create_docs(tmp.path(), DIM, Metric::Cosine);
    for start in (0..3_000).step_by(500) {
        c.append(&[batch(start..start + 500, DIM)]).unwrap();
    }
    let snapshot = c.snapshot();
    let asked = |t: u64, i: u64| {
        let query = vector(10_000 + t * 100 + i, DIM);
        let k = if i.is_multiple_of(2) { 5 } else { 12 };
        let ef = i.is_multiple_of(3).then_some(40);
        (query, k, ef)
    };
    let together: Vec<Vec<(Vec<omendb::Hit>, Vec<omendb::Hit>)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8u64)
            .map(|t| {
                let snapshot = &snapshot;
                s.spawn(move || {
                    (0..40u64)
                        .map(|i| {
                            let (query, k, ef) = asked(t, i);
                            let req = SearchRequest::new(&query, k).ef(ef);
                            let (mut hits, trace) = snapshot.search_together(&req).unwrap();
                            assert_eq!((hits.len(), trace.len()), (1, snapshot.segments().len()));
                            let alone = snapshot.search(&req).unwrap().pop().unwrap();
                            (hits.pop().unwrap(), alone)
                        })
                        .collect()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for (hits, alone) in together.iter().flatten() {
        assert_eq!(hits.len(), alone.len());
        for (h, a) in hits.iter().zip(alone) {
            assert_eq!((h.part, h.row), (a.part, a.row));
            assert!((h.distance - a.distance).abs() < 1e-5, "{h:?} vs {a:?}");
        }
    }
    // Several queries run alone, at once.
    let query = vector(7, DIM);
    let two: Vec<f32> = query.iter().chain(&query).copied().collect();
    let (hits, _) = snapshot
        .search_together(&SearchRequest::new(&two, 3))
        .unwrap();
    assert_eq!(hits, snapshot.search(&SearchRequest::new(&two, 3)).unwrap());
}

/// Each version's manifest is created once, create-only: a commit on a version another writer
/// committed first is refused as a `Conflict` with nothing of it left, and the collection
/// stays at the version it had.
#[test]
fn a_commit_on_a_version_taken_by_another_writer_is_a_conflict_that_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (_db, c) = create_docs(tmp.path(), DIM, Metric::Cosine);
    c.append(&[batch(0..100, DIM)]).unwrap();
    let dir = tmp.path().join("docs");
    let version = c.snapshot().version();
    let ours = manifest_path(&dir);
    assert_eq!(
        ours.file_name().unwrap().to_string_lossy(),
        format!("manifest-{version:020}.json")
    );
    // Another writer (another server over the same storage) takes the next version.
    let theirs = dir.join(format!("manifest-{:020}.json", version + 1));
    std::fs::copy(&ours, &theirs).unwrap();
    let before = files(&dir);
    let err = c.append(&[batch(100..150, DIM)]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    for needle in ["collection 'docs'", "another writer", "nothing was written"] {
        assert!(err.to_string().contains(needle), "'{err}' lacks '{needle}'");
    }
    assert_eq!(files(&dir), before);
    assert_eq!((c.count(), c.snapshot().version()), (100, version));
    // Once that version is gone, commits go on; older manifests do not pile up.
    std::fs::remove_file(&theirs).unwrap();
    c.append(&[batch(100..150, DIM)]).unwrap();
    assert_eq!(c.count(), 150);
    let manifests: Vec<String> = files(&dir)
        .into_iter()
        .filter(|f| f.starts_with("manifest-"))
        .collect();
    assert_eq!(manifests, [format!("manifest-{:020}.json", version + 1)]);
}
