//! Every write step of every write, failed on purpose: after the failure the collection is
//! exactly at its previous version (in memory and after a reopen), the error names the file and
//! the operation, and the next open leaves no file the manifest does not name.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use arrow_array::Int64Array;
use omendb::{Collection, CollectionOptions, CompactionPolicy, Database, Faults, IndexSettings};
use omendb_testkit::*;

const DIM: usize = 8;

/// The live ids, sorted.
fn ids(c: &Collection) -> Vec<i64> {
    let mut v: Vec<i64> = c
        .snapshot()
        .batches()
        .unwrap()
        .iter()
        .flat_map(ids_of)
        .collect();
    v.sort();
    v
}

/// A collection of three segments (300 rows, two deleted), no background work.
fn setup(path: &Path, faults: &Arc<Faults>) -> (Database, Arc<Collection>) {
    let db = Database::open_with_faults(path, faults.clone()).unwrap();
    let opts = CollectionOptions {
        index: IndexSettings {
            threshold: 0,
            compaction: CompactionPolicy {
                enabled: false,
                ..Default::default()
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let c = db.create_collection("docs", &schema(DIM), opts).unwrap();
    for lo in [0, 100, 200] {
        c.append(&[batch(lo..lo + 100, DIM)]).unwrap();
    }
    c.delete(&Int64Array::from(vec![5, 150])).unwrap();
    (db, c)
}

type Write = fn(&Collection) -> omendb::Result<usize>;

#[test]
fn a_failure_at_any_write_step_leaves_the_previous_version() {
    let writes: [(&str, Write); 5] = [
        ("append", |c| c.append(&[batch(300..350, DIM)])),
        ("delete", |c| c.delete(&Int64Array::from(vec![1, 2, 250]))),
        ("upsert", |c| c.upsert(&[batch(290..320, DIM)])),
        ("index build", |c| c.build_index(1)),
        ("compaction", |c| c.compact()),
    ];
    for (what, write) in writes {
        let mut failed_steps = 0;
        for step in 1.. {
            let tmp = tempfile::tempdir().unwrap();
            let faults = Faults::new();
            let (db, c) = setup(tmp.path(), &faults);
            let before = ids(&c);
            faults.fail_nth(step);
            let result = write(&c);
            faults.clear();
            if !faults.fired() {
                // Past the last step: the write went through whole.
                assert!(result.is_ok(), "{what}: {result:?}");
                assert!(step > 1, "{what} wrote nothing");
                break;
            }
            let after = match &result {
                Err(e) => {
                    failed_steps += 1;
                    let msg = e.to_string();
                    assert!(
                        msg.contains("injected failure")
                            && msg.contains(tmp.path().to_str().unwrap()),
                        "{what}, step {step}: {msg}"
                    );
                    assert_eq!(ids(&c), before, "{what}, step {step}: changed in memory");
                    before.clone()
                }
                // A step after the commit (removing replaced files) may fail harmlessly.
                Ok(_) => ids(&c),
            };
            // The collection still takes writes, then reopens at the same version.
            drop(c);
            drop(db);
            let db = Database::open(tmp.path()).unwrap();
            let c = db.collection("docs").unwrap();
            assert_eq!(ids(&c), after, "{what}, step {step}: changed on disk");
            assert_eq!(
                unnamed_files(&tmp.path().join("docs")),
                BTreeSet::new(),
                "{what}, step {step}: files left"
            );
            c.append(&[batch(1000..1010, DIM)]).unwrap();
            assert_eq!(c.count(), after.len() + 10);
        }
        assert!(failed_steps >= 2, "{what}: {failed_steps} steps failed");
    }
}
