//! HNSW index files: persisted and searched in place, a damaged one set aside and rebuilt, and
//! unchanged ones opened without re-hashing.

use arrow_array::Int64Array;
use omendb::{Database, Metric, SearchRequest};
use omendb_testkit::*;

use super::{create_docs, files, rows, DIM};

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
