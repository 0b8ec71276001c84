//! Databases on object storage through the engine's storage traits: round trips on an
//! in-memory store and on `file://`, two handles over one store whose commits race, and a
//! damaged cache that is fetched again.

use std::sync::Arc;

use arrow_array::Int64Array;
use object_store::memory::InMemory;
use object_store::ObjectStore;
use omendb::{CollectionOptions, Database, ErrorKind, Metric, SearchRequest};
use omendb_testkit::{batch, schema, vector};

const DIM: usize = 8;

fn options() -> CollectionOptions {
    CollectionOptions {
        metric: Metric::L2,
        ..Default::default()
    }
}

fn nearest(db: &Database, seed: u64) -> Vec<i64> {
    let c = db.collection("docs").unwrap();
    let q = vector(seed, DIM);
    let found = c
        .snapshot()
        .search_rows(&SearchRequest::new(&q, 3))
        .unwrap();
    omendb_testkit::ids_of(found.rows())
}

/// Writes, searches, deletes, indexes, compacts and drops a collection on `db`, then checks a
/// second handle (`reopen`) sees what the first committed.
fn round_trip(db: &Database, reopen: impl Fn() -> Database) {
    let c = db
        .create_collection("docs", &schema(DIM), options())
        .unwrap();
    c.append(&[batch(0..300, DIM)]).unwrap();
    c.append(&[batch(300..500, DIM)]).unwrap();
    assert_eq!(c.delete(&Int64Array::from(vec![7, 8, 9])).unwrap(), 3);
    assert_eq!(nearest(db, 42)[0], 42);
    assert_eq!(c.build_index(1).unwrap(), 2);
    c.compact().unwrap();
    assert_eq!(c.count(), 497);
    c.verify().unwrap();

    let other = reopen();
    assert_eq!(other.list_collections().unwrap(), ["docs"]);
    assert_eq!(other.collection("docs").unwrap().count(), 497);
    assert_eq!(nearest(&other, 42), nearest(db, 42));
    assert!(!nearest(&other, 8).contains(&8));
    drop(other);

    db.drop_collection("docs").unwrap();
    assert!(reopen().list_collections().unwrap().is_empty());
}

#[test]
fn a_database_in_memory_storage_round_trips() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let cache = tempfile::tempdir().unwrap();
    let open = || {
        omendb_object::open_store(
            store.clone(),
            "dbs/one",
            "memory:///dbs/one",
            cache.path().into(),
        )
        .unwrap()
    };
    round_trip(&open(), open);
}

#[test]
fn a_database_at_a_file_url_round_trips_and_refetches_a_damaged_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().join("bucket").display());
    std::fs::create_dir_all(tmp.path().join("bucket")).unwrap();
    let cache = tmp.path().join("cache");
    let open = |cache: &std::path::Path| {
        omendb_object::open(&url, &[], Some(cache.to_path_buf())).unwrap()
    };
    round_trip(&open(&cache), || open(&cache));

    // A cached segment truncated, another flipped: a fresh handle fetches both again.
    let db = open(&cache);
    let c = db
        .create_collection("docs", &schema(DIM), options())
        .unwrap();
    c.append(&[batch(0..100, DIM)]).unwrap();
    c.append(&[batch(100..200, DIM)]).unwrap();
    drop((c, db));
    let mut segments: Vec<_> = std::fs::read_dir(cache.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .collect();
    segments.sort();
    assert_eq!(segments.len(), 2);
    let bytes = std::fs::read(&segments[0]).unwrap();
    std::fs::write(&segments[0], &bytes[..bytes.len() / 2]).unwrap();
    let mut bytes = std::fs::read(&segments[1]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&segments[1], &bytes).unwrap();
    let db = open(&cache);
    assert_eq!(db.collection("docs").unwrap().count(), 200);
    assert_eq!(nearest(&db, 150)[0], 150);
    db.collection("docs").unwrap().verify().unwrap();
}

/// Two handles over one store (two servers over one bucket): a handle that commits on a
/// version the other took first gets `Conflict` and writes nothing; one that looks for newer
/// versions before every use reads the other's commits and lands its own.
#[test]
fn two_handles_committing_on_one_version_conflict_and_lose_nothing() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let cache = tempfile::tempdir().unwrap();
    let open = |name: &str, refresh: u64| {
        let cache = cache.path().join(name);
        omendb_object::open_store(store.clone(), "db", "memory:///db", cache)
            .unwrap()
            .with_refresh(std::time::Duration::from_secs(refresh))
    };
    // A never looks for newer versions again; B before every use.
    let a = open("a", 3600);
    a.create_collection("docs", &schema(DIM), options())
        .unwrap()
        .append(&[batch(0..10, DIM)])
        .unwrap();
    let b = open("b", 0);
    b.collection("docs")
        .unwrap()
        .append(&[batch(10..20, DIM)])
        .unwrap();
    let err = a
        .collection("docs")
        .unwrap()
        .append(&[batch(20..30, DIM)])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("another writer"), "{err}");
    assert_eq!(open("c", 0).collection("docs").unwrap().count(), 20);
    b.collection("docs")
        .unwrap()
        .append(&[batch(20..30, DIM)])
        .unwrap();
    assert_eq!(open("d", 0).collection("docs").unwrap().count(), 30);
    // Creating a collection that another handle created meanwhile is AlreadyExists.
    let err = b
        .create_collection("docs", &schema(DIM), options())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
}

#[test]
fn bad_urls_are_refused_naming_them() {
    for (url, needle) in [("nope://bucket/x", "nope://bucket/x"), ("s3://", "s3://")] {
        let err = omendb_object::open(url, &[], None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    }
}

/// Over shared storage a file no manifest names may be another server's write in progress:
/// opening the collection leaves it alone (a local directory would remove it).
#[test]
fn opening_over_shared_storage_leaves_files_it_does_not_know() {
    use object_store::{path::Path, ObjectStoreExt, PutPayload};
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let cache = tempfile::tempdir().unwrap();
    let open = || {
        omendb_object::open_store(store.clone(), "db", "memory:///db", cache.path().into()).unwrap()
    };
    let db = open();
    db.create_collection("docs", &schema(DIM), options())
        .unwrap()
        .append(&[batch(0..10, DIM)])
        .unwrap();
    let stray = Path::from("db/docs/stage-another-server-1");
    let put = store.clone();
    let at = stray.clone();
    futures::executor::block_on(async move { put.put(&at, PutPayload::from_static(b"x")).await })
        .unwrap();
    assert_eq!(open().collection("docs").unwrap().count(), 10);
    let head = store.clone();
    futures::executor::block_on(async move { head.head(&stray).await }).unwrap();
}
