//! Every refused input: bad batches (nothing written), bad names and definitions, and the
//! conversions that are accepted instead (float64 list vectors).

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{FixedSizeListBuilder, Float32Builder, Float64Builder, ListBuilder};
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use omendb::{Database, Error, Metric};
use omendb_testkit::*;

use super::{create_docs, files, opts, DIM};

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
