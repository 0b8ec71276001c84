//! The on-disk format stays readable, and backups are consistent copies that open as
//! databases.
//!
//! `tests/fixtures/format-1` is a database written by the engine of on-disk format 1 and then
//! frozen: never regenerate it to make a test pass. `make_format_1_fixture` (ignored) is how it
//! was made, kept to show what it holds.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use omendb::{CollectionOptions, CompactionPolicy, Database, IndexSettings, Metric};
use omendb_testkit::*;

const DIM: usize = 8;

fn fixture_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-1")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn names_batch(range: std::ops::Range<u64>) -> RecordBatch {
    let keys: StringArray = range.clone().map(|i| Some(format!("n-{i}"))).collect();
    let vectors: Vec<Vec<f32>> = range.map(|i| vector(1000 + i, DIM)).collect();
    RecordBatch::try_from_iter(vec![
        ("key", Arc::new(keys) as ArrayRef),
        ("vec", Arc::new(fsl(&vectors, DIM)) as ArrayRef),
    ])
    .unwrap()
}

/// Writes the fixture: `docs` (Int64 ids 0..600, cosine; an HNSW-indexed segment of 500 rows
/// with ids 0, 7, ..., 98 deleted, and a flat one of 100) and `names` (Utf8 ids n-0..n-49,
/// l2). `OMENDB_WRITE_FIXTURE=1 cargo test -p omendb --test engine -- --ignored make_format`.
#[test]
#[ignore]
fn make_format_1_fixture() {
    if std::env::var("OMENDB_WRITE_FIXTURE").is_err() {
        return;
    }
    let dir = fixture_dir();
    let _ = std::fs::remove_dir_all(&dir);
    let db = Database::open(&dir).unwrap();
    let settings = IndexSettings {
        threshold: 300,
        compaction: CompactionPolicy {
            enabled: false,
            ..Default::default()
        },
        ..Default::default()
    };
    let docs = db
        .create_collection(
            "docs",
            &schema(DIM),
            CollectionOptions {
                metric: Metric::Cosine,
                index: settings,
                ..Default::default()
            },
        )
        .unwrap();
    docs.append(&[batch(0..500, DIM)]).unwrap();
    docs.wait_for_indexing();
    docs.append(&[batch(500..600, DIM)]).unwrap();
    docs.delete(&Int64Array::from((0..100).step_by(7).collect::<Vec<i64>>()))
        .unwrap();
    let names = db
        .create_collection(
            "names",
            &Schema::new(vec![
                Field::new("key", DataType::Utf8, false),
                schema(DIM).field(1).clone(),
            ]),
            CollectionOptions {
                metric: Metric::L2,
                id_column: "key".into(),
                index: settings,
                ..Default::default()
            },
        )
        .unwrap();
    names.append(&[names_batch(0..50)]).unwrap();
    drop(db);
    std::fs::remove_file(dir.join("LOCK")).unwrap();
}

/// What the fixture holds, checked through every read path.
fn check_fixture_contents(db: &Database) {
    assert_eq!(db.list_collections().unwrap(), ["docs", "names"]);
    let docs = db.collection("docs").unwrap();
    let stats = docs.stats().unwrap();
    assert_eq!(stats.rows, 600 - 15);
    assert_eq!(stats.deleted_rows, 15);
    assert_eq!(stats.index_kinds, ["hnsw", "flat"]);
    assert_eq!(docs.metric(), Metric::Cosine);
    let got = docs.get(&Int64Array::from(vec![1, 7, 599, 600])).unwrap();
    assert_eq!(ids_of(&got), [1, 599]);
    assert_eq!(
        got.column(2)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .value(1),
        "w599"
    );
    for id in [5u64, 350, 550] {
        let hits = docs.search(&vector(id, DIM), 3).unwrap();
        assert_eq!(ids_of(&hits)[0], id as i64, "nearest to row {id}'s vector");
    }
    let hits = docs.search(&vector(14, DIM), 600).unwrap();
    assert!(!ids_of(&hits).contains(&14), "a deleted row came back");
    docs.verify().unwrap();
    let names = db.collection("names").unwrap();
    let got = names.get(&StringArray::from(vec!["n-3", "n-50"])).unwrap();
    assert_eq!(got.num_rows(), 1);
    let hits = names.search(&vector(1000 + 42, DIM), 1).unwrap();
    let key = hits
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert_eq!(key.value(0), "n-42");
}

#[test]
fn the_format_1_fixture_still_opens_reads_and_takes_writes() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture_dir(), tmp.path());
    {
        let db = Database::open(tmp.path()).unwrap();
        check_fixture_contents(&db);
        let docs = db.collection("docs").unwrap();
        docs.append(&[batch(600..610, DIM)]).unwrap();
        docs.upsert(&[batch(1..2, DIM)]).unwrap();
        let names = db.collection("names").unwrap();
        names.upsert(&[names_batch(3..4)]).unwrap();
    }
    let db = Database::open(tmp.path()).unwrap();
    let docs = db.collection("docs").unwrap();
    assert_eq!(docs.count(), 600 - 15 + 10);
    assert_eq!(ids_of(&docs.search(&vector(605, DIM), 1).unwrap()), [605]);
    assert_eq!(db.collection("names").unwrap().count(), 50);
}

#[test]
fn a_backup_taken_during_writes_is_one_version_and_opens_as_a_database() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture_dir(), &tmp.path().join("db"));
    let db = Arc::new(Database::open(tmp.path().join("db")).unwrap());
    let docs = db.collection("docs").unwrap();
    let writer = {
        let docs = docs.clone();
        std::thread::spawn(move || {
            for i in 0..40 {
                let start = 1000 + i * 10;
                docs.append(&[batch(start..start + 10, DIM)]).unwrap();
                docs.delete(&Int64Array::from(vec![start])).unwrap();
            }
        })
    };
    let mut backups = Vec::new();
    for b in 0..3 {
        let to = tmp.path().join(format!("backup-{b}"));
        let copied = db.backup(&to, None).unwrap();
        assert_eq!(copied.len(), 2);
        backups.push((to, copied));
    }
    writer.join().unwrap();
    for (to, copied) in backups {
        let restored = Database::open(&to).unwrap();
        let docs = restored.collection("docs").unwrap();
        // Each copy is one committed version: ten rows appended, then one of them deleted.
        let added = docs.count() - 585;
        assert!(
            added % 9 == 0 || (added >= 10 && (added - 10) % 9 == 0),
            "{} holds {added} rows more than the fixture",
            to.display()
        );
        assert_eq!(docs.stats().unwrap().version, copied[0].version);
        docs.verify().unwrap();
        assert!(omendb_testkit::unnamed_files(&to.join("docs")).is_empty());
        let names = restored.collection("names").unwrap();
        assert_eq!(names.count(), 50);
    }
    // A destination that holds anything is refused; one collection can be copied alone.
    let err = db.backup(&tmp.path().join("db"), None).unwrap_err();
    assert!(err.to_string().contains("is not empty"), "{err}");
    let one = tmp.path().join("one");
    let copied = db.backup(&one, Some("names")).unwrap();
    assert_eq!(copied[0].collection, "names");
    assert_eq!(
        Database::open(&one).unwrap().list_collections().unwrap(),
        ["names"]
    );
}

#[test]
fn a_damaged_collection_fails_its_backup_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture_dir(), &tmp.path().join("db"));
    let manifest = tmp.path().join("db/names/MANIFEST");
    let mut text = std::fs::read(&manifest).unwrap();
    let last = text.len() - 3;
    text[last] ^= 1;
    std::fs::write(&manifest, text).unwrap();
    let db = Database::open(tmp.path().join("db")).unwrap();
    let err = db.backup(&tmp.path().join("copy"), None).unwrap_err();
    assert!(
        err.to_string().contains("names") && err.to_string().contains("MANIFEST"),
        "{err}"
    );
    // The damaged collection's files are all still there.
    assert!(tmp.path().join("db/names").read_dir().unwrap().count() > 1);
}
