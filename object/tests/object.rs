//! Databases on object storage through the engine's storage traits: round trips on an
//! in-memory store and on `file://`, two handles over one store whose commits race, and a
//! damaged cache that is fetched again.

use std::sync::Arc;

use arrow_array::Int64Array;
use object_store::memory::InMemory;
use object_store::ObjectStore;
use omendb::{CollectionOptions, Database, ErrorKind, Metric, SearchRequest};
use omendb_object::Cache;
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
            &Cache::at(Some(cache.path().into())),
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
        omendb_object::open(&url, &[], &Cache::at(Some(cache.to_path_buf()))).unwrap()
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

/// Two handles over one store (two servers over one bucket): a write whose commit lost the
/// race to the other handle's lands on the newest version; what it checked or selected is
/// decided again there (ids the other stored meanwhile are refused, a delete takes the rows
/// the other upserted), so nothing is lost or applied twice.
#[test]
fn two_handles_committing_on_one_version_retry_on_the_newest() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let cache = tempfile::tempdir().unwrap();
    let open = |name: &str, refresh: u64| {
        let cache = cache.path().join(name);
        omendb_object::open_store(store.clone(), "db", "memory:///db", &Cache::at(Some(cache)))
            .unwrap()
            .with_refresh(std::time::Duration::from_secs(refresh))
    };
    // A never looks for newer versions again; B before every use.
    let a = open("a", 3600);
    let docs_a = a
        .create_collection("docs", &schema(DIM), options())
        .unwrap();
    docs_a.append(&[batch(0..10, DIM)]).unwrap();
    let b = open("b", 0);
    b.collection("docs")
        .unwrap()
        .append(&[batch(10..20, DIM)])
        .unwrap();
    docs_a.append(&[batch(20..30, DIM)]).unwrap();
    assert_eq!(docs_a.count(), 30);
    assert_eq!(open("c", 0).collection("docs").unwrap().count(), 30);

    // Ids B stored after A last looked: A's append is refused on the newest version.
    b.collection("docs")
        .unwrap()
        .append(&[batch(30..40, DIM)])
        .unwrap();
    let err = docs_a.append(&[batch(35..45, DIM)]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("35"), "{err}");
    assert_eq!(open("d", 0).collection("docs").unwrap().count(), 40);

    // B replaces rows 0..5 and adds 40..45; A, behind again, deletes ids 0..5 and 40..45:
    // its delete is decided on B's version, so B's new rows go too.
    let docs_b = b.collection("docs").unwrap();
    docs_b.upsert(&[batch(0..5, DIM)]).unwrap();
    docs_b.append(&[batch(40..45, DIM)]).unwrap();
    let gone: Vec<i64> = (0..5).chain(40..45).collect();
    assert_eq!(docs_a.delete(&Int64Array::from(gone)).unwrap(), 10);
    assert_eq!(open("e", 0).collection("docs").unwrap().count(), 35);

    // Creating a collection that another handle created meanwhile is AlreadyExists.
    let err = b
        .create_collection("docs", &schema(DIM), options())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
}

/// Writers on two handles over one store, appending at once: every acknowledged row is
/// stored exactly once.
#[test]
fn concurrent_writers_on_two_handles_lose_no_row() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let cache = tempfile::tempdir().unwrap();
    let open = |name: &str| {
        let cache = cache.path().join(name);
        omendb_object::open_store(store.clone(), "db", "memory:///db", &Cache::at(Some(cache)))
            .unwrap()
            .with_refresh(std::time::Duration::from_secs(3600))
    };
    let handles = [open("a"), open("b")];
    handles[0]
        .create_collection("docs", &schema(DIM), options())
        .unwrap();
    let (writers, puts, rows) = (4_i64, 12_i64, 10_i64);
    std::thread::scope(|s| {
        for w in 0..writers {
            let c = handles[w as usize % 2].collection("docs").unwrap();
            s.spawn(move || {
                for p in 0..puts {
                    let first = (w * puts + p) * rows;
                    c.append(&[batch(first..first + rows, DIM)]).unwrap();
                }
            });
        }
    });
    let total = writers * puts * rows;
    let c = open("check").collection("docs").unwrap();
    assert_eq!(c.count() as i64, total);
    let all = c.get(&Int64Array::from_iter_values(0..total)).unwrap();
    assert_eq!(all.num_rows() as i64, total);
    c.verify().unwrap();
}

#[test]
fn bad_urls_are_refused_naming_them() {
    for (url, needle) in [("nope://bucket/x", "nope://bucket/x"), ("s3://", "s3://")] {
        let err = omendb_object::open(url, &[], &Cache::default()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    }
    let opt = |k: &str, v: &str| (k.to_string(), v.to_string());
    // A misspelt option is refused, not ignored.
    let err = omendb_object::open(
        "s3://bucket/db",
        &[opt("endpoitn", "http://x")],
        &Cache::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(
        err.to_string()
            .contains("unknown storage option 'endpoitn'"),
        "{err}"
    );
    let err =
        omendb_object::open("memory:///db", &[opt("region", "x")], &Cache::default()).unwrap_err();
    assert!(err.to_string().contains("'region' does not apply"), "{err}");
    // An endpoint that does not answer: Unavailable, naming the URL, after a few retries.
    let nobody = [
        opt("endpoint", "http://127.0.0.1:9"),
        opt("allow_http", "true"),
        opt("access_key_id", "k"),
        opt("secret_access_key", "s"),
        opt("region", "us-east-1"),
    ];
    let err = omendb_object::open("s3://bucket/db", &nobody, &Cache::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("s3://bucket/db"), "{err}");
}

/// Over shared storage a file no manifest names may be another server's write in progress:
/// opening the collection leaves it alone (a local directory would remove it).
#[test]
fn opening_over_shared_storage_leaves_files_it_does_not_know() {
    use object_store::{path::Path, ObjectStoreExt, PutPayload};
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let cache = tempfile::tempdir().unwrap();
    let open = || {
        omendb_object::open_store(
            store.clone(),
            "db",
            "memory:///db",
            &Cache::at(Some(cache.path().into())),
        )
        .unwrap()
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

/// A store that takes a create-only put as a plain put (as some S3-compatible services do):
/// commits over it could overwrite another writer's manifest.
#[derive(Debug)]
struct IgnoresCreateOnly(InMemory);

impl std::fmt::Display for IgnoresCreateOnly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IgnoresCreateOnly")
    }
}

#[async_trait::async_trait]
impl ObjectStore for IgnoresCreateOnly {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        mut opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        opts.mode = object_store::PutMode::Overwrite;
        self.0.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.0.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.0.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.0.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.0.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.0.copy_opts(from, to, options).await
    }
}

/// Storage whose create-only puts overwrite is refused at open, saying why, and nothing is
/// written to it.
#[test]
fn a_store_that_ignores_create_only_puts_is_refused() {
    let store: Arc<dyn ObjectStore> = Arc::new(IgnoresCreateOnly(InMemory::new()));
    let cache = tempfile::tempdir().unwrap();
    let err = omendb_object::open_store(
        store.clone(),
        "db",
        "s3://lax/db",
        &Cache::at(Some(cache.path().into())),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("s3://lax/db"), "{msg}");
    assert!(msg.contains("does not honour create-only puts"), "{msg}");
    let left = futures::executor::block_on(async move {
        use futures::TryStreamExt;
        store.list(None).try_collect::<Vec<_>>().await
    })
    .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

/// Over shared storage nothing is removed at commit or open; `collect_garbage` removes the
/// manifests of versions replaced more than `retain` ago and the files no kept version names,
/// and what stays opens and verifies.
#[test]
fn garbage_is_collected_only_past_the_retention() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let cache = tempfile::tempdir().unwrap();
    let open = |name: &str| {
        omendb_object::open_store(
            store.clone(),
            "db",
            "memory:///db",
            &Cache::at(Some(cache.path().join(name))),
        )
        .unwrap()
    };
    let db = open("a");
    let c = db
        .create_collection("docs", &schema(DIM), options())
        .unwrap();
    for i in 0..4 {
        c.append(&[batch(i * 50..(i + 1) * 50, DIM)]).unwrap();
    }
    c.delete(&Int64Array::from(vec![3, 4])).unwrap();
    c.compact().unwrap();
    let objects = || {
        let store = store.clone();
        futures::executor::block_on(async move {
            use futures::TryStreamExt;
            store.list(None).try_collect::<Vec<_>>().await
        })
        .unwrap()
        .len()
    };
    let before = objects();
    // Everything is younger than an hour: nothing goes.
    assert_eq!(
        c.collect_garbage(std::time::Duration::from_secs(3600))
            .unwrap(),
        (0, 0)
    );
    assert_eq!(objects(), before);
    // With no retention, only the newest version and its files stay.
    let (files, bytes) = c.collect_garbage(std::time::Duration::ZERO).unwrap();
    assert!(files > 5 && bytes > 0, "{files} files, {bytes} bytes");
    assert_eq!(objects(), before - files);
    let fresh = open("b");
    let docs = fresh.collection("docs").unwrap();
    assert_eq!(docs.count(), 198);
    docs.verify().unwrap();
    assert_eq!(nearest(&fresh, 120)[0], 120);
    // Nothing more to remove.
    assert_eq!(
        docs.collect_garbage(std::time::Duration::ZERO).unwrap(),
        (0, 0)
    );
}

/// The bytes of the files under `dir` (any depth).
fn bytes_under(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(|e| e.ok())
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => bytes_under(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

/// With a size limit the cache keeps the most recently used files within it; evicted files are
/// downloaded again when a collection opens, and every answer stays the same.
#[test]
fn the_cache_stays_within_its_size_and_refetches_what_it_evicted() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let tmp = tempfile::tempdir().unwrap();
    let open = |dir: &str, max_bytes: Option<u64>| {
        let cache = Cache {
            dir: Some(tmp.path().join(dir)),
            max_bytes,
        };
        omendb_object::open_store(store.clone(), "db", "memory:///db", &cache).unwrap()
    };
    let db = open("writer", None);
    for (name, rows) in [("a", 0..2_000), ("b", 2_000..4_000), ("c", 4_000..6_000)] {
        let c = db.create_collection(name, &schema(DIM), options()).unwrap();
        c.append(&[batch(rows, DIM)]).unwrap();
    }
    let answer = |db: &Database, name: &str| {
        let q = vector(4_321, DIM);
        let found = db.collection(name).unwrap().snapshot();
        omendb_testkit::ids_of(
            found
                .search_rows(&SearchRequest::new(&q, 5))
                .unwrap()
                .rows(),
        )
    };
    let want: Vec<_> = ["a", "b", "c"].iter().map(|n| answer(&db, n)).collect();
    let one_collection = bytes_under(&tmp.path().join("writer").join("a"));
    assert!(one_collection > 0);

    // Room for about one collection's files: each open evicts the others'.
    let limit = one_collection + one_collection / 2;
    for round in 0..2 {
        let reader = open("small", Some(limit));
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            assert_eq!(answer(&reader, name), want[i], "{name}, round {round}");
            let cached = bytes_under(&tmp.path().join("small"));
            assert!(cached <= limit, "{cached} bytes cached, limit {limit}");
        }
    }
    // A later process counts what an earlier one left: still within the limit after one more.
    let reader = open("small", Some(limit));
    assert_eq!(answer(&reader, "a"), want[0]);
    assert!(bytes_under(&tmp.path().join("small")) <= limit);
}

/// A backup to another bucket (or prefix) opens as the database, there or copied back to disk.
#[test]
fn a_backup_goes_to_object_storage_and_opens_there() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("local");
    let local = Database::open(&dir).unwrap();
    let c = local
        .create_collection("docs", &schema(DIM), options())
        .unwrap();
    c.append(&[batch(0..300, DIM)]).unwrap();
    c.delete(&Int64Array::from(vec![5])).unwrap();
    let cache = Cache::at(Some(tmp.path().join("cache")));
    let dest = omendb_object::ObjectRoot::new(
        store.clone(),
        object_store::path::Path::from("backup"),
        "memory:///backup",
        &cache,
    )
    .unwrap();
    let copied = local.backup_to(&dest, None).unwrap();
    assert_eq!(copied.len(), 1);
    assert_eq!(copied[0].linked, 0, "nothing links across backends");
    // Not into a database that holds collections.
    let err = local.backup_to(&dest, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");

    let restored =
        omendb_object::open_store(store.clone(), "backup", "memory:///backup", &cache).unwrap();
    let docs = restored.collection("docs").unwrap();
    assert_eq!(docs.count(), 299);
    docs.verify().unwrap();
    assert_eq!(nearest(&restored, 42), nearest(&local, 42));
    // And back from the bucket to a directory.
    let back = tmp.path().join("back");
    restored.backup(&back, None).unwrap();
    drop(restored);
    assert_eq!(
        Database::open(&back)
            .unwrap()
            .collection("docs")
            .unwrap()
            .count(),
        299
    );
}
