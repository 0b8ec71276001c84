//! Helpers shared by OmenDB's tests, benchmarks and the `omendb bench` CLI (dev only, not
//! published): a `.npy` reader, the shared datasets (failing with a message naming the missing
//! path), deterministic vectors and batches, brute-force nearest neighbours in f64, recall, and
//! ([`words`]) the shipped minilm-words cut as collection rows.
#![allow(missing_docs)]

pub use omendb::npy;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
use arrow_array::{ArrayRef, FixedSizeListArray, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

/// A dataset of `../shared/datasets`: base vectors, queries, and (when present) exact ids.
pub struct Dataset {
    pub dir: PathBuf,
    pub base: npy::Npy<f32>,
    pub queries: npy::Npy<f32>,
}

/// The directory of shared dataset `name` beside the repository.
pub fn dataset_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/datasets")
        .join(name)
}

/// The cut of minilm-words the repository ships for tests (`tests/data/minilm-words`: its first
/// 20,000 rows and 200 queries, float16, with exact ground truth).
pub fn test_dataset() -> Dataset {
    load(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/minilm-words"))
}

/// Loads shared dataset `name` (`base.npy`, `queries.npy`), or panics naming the missing path
/// (the shared datasets are for benchmarks; tests use [`test_dataset`]).
pub fn dataset(name: &str) -> Dataset {
    load(dataset_dir(name))
}

fn load(dir: PathBuf) -> Dataset {
    let load = |file: &str| {
        let path = dir.join(file);
        npy::read_f32(&path).unwrap_or_else(|e| {
            panic!(
                "dataset file {} is needed by this test and could not be read: {e}",
                path.display()
            )
        })
    };
    Dataset {
        base: load("base.npy"),
        queries: load("queries.npy"),
        dir,
    }
}

pub fn schema(dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "vec",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, true)),
                dim as i32,
            ),
            false,
        ),
        Field::new("word", DataType::Utf8, true),
    ]))
}

/// A deterministic pseudo-random vector for `seed`.
pub fn vector(seed: u64, dim: usize) -> Vec<f32> {
    vector_in_steps(seed, dim, 10_000)
}

/// A deterministic pseudo-random vector for `seed` whose values lie in [-1, 1) on a grid of
/// `1 / steps`.
pub fn vector_in_steps(seed: u64, dim: usize, steps: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..dim)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % (2 * steps)) as f32 / steps as f32 - 1.0
        })
        .collect()
}

pub fn fsl(vectors: &[Vec<f32>], dim: usize) -> FixedSizeListArray {
    let mut b = FixedSizeListBuilder::new(Float32Builder::new(), dim as i32);
    for v in vectors {
        b.values().append_slice(v);
        b.append(true);
    }
    b.finish()
}

/// Rows with ids `ids`, `vectors` in column `vector` and `text_of(id)` in column `text` (each
/// column nullable only where it holds nulls, as `RecordBatch::try_from_iter` makes it).
pub fn id_vector_text_batch(
    ids: std::ops::Range<i64>,
    (vector, vectors): (&str, ArrayRef),
    text: &str,
    text_of: impl Fn(i64) -> String,
) -> RecordBatch {
    RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(Int64Array::from_iter_values(ids.clone())) as ArrayRef,
        ),
        (vector, vectors),
        (
            text,
            Arc::new(StringArray::from_iter_values(ids.map(text_of))),
        ),
    ])
    .unwrap()
}

/// Rows with ids `ids`, vectors `vector(id)` and words `w<id>`.
pub fn batch(ids: std::ops::Range<i64>, dim: usize) -> RecordBatch {
    let vectors: Vec<Vec<f32>> = ids.clone().map(|i| vector(i as u64, dim)).collect();
    let words: StringArray = ids.clone().map(|i| Some(format!("w{i}"))).collect();
    RecordBatch::try_new(
        schema(dim),
        vec![
            Arc::new(Int64Array::from_iter_values(ids)) as ArrayRef,
            Arc::new(fsl(&vectors, dim)),
            Arc::new(words),
        ],
    )
    .unwrap()
}

/// Brute-force nearest ids under `metric` in f64 (the reference for search tests).
pub fn brute_force(
    rows: &[(i64, Vec<f32>)],
    q: &[f32],
    k: usize,
    metric: omendb::Metric,
) -> Vec<i64> {
    let mut d: Vec<(f64, i64)> = rows
        .iter()
        .map(|(id, v)| {
            let dot: f64 = v.iter().zip(q).map(|(a, b)| *a as f64 * *b as f64).sum();
            let nv: f64 = v.iter().map(|a| (*a as f64).powi(2)).sum();
            let nq: f64 = q.iter().map(|a| (*a as f64).powi(2)).sum();
            let dist = match metric {
                omendb::Metric::Dot => -dot,
                omendb::Metric::Cosine => 1.0 - dot / (nv.sqrt() * nq.sqrt()),
                omendb::Metric::L2 => nv + nq - 2.0 * dot,
            };
            (dist, *id)
        })
        .collect();
    d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    d.into_iter().take(k).map(|x| x.1).collect()
}

/// The share of each query's exact neighbours (`want`) that `got` found, over all queries.
pub fn recall<T: PartialEq>(got: &[Vec<T>], want: &[Vec<T>]) -> f64 {
    let hits: usize = got
        .iter()
        .zip(want)
        .map(|(g, w)| g.iter().filter(|i| w.contains(i)).count())
        .sum();
    hits as f64 / want.iter().map(Vec::len).sum::<usize>() as f64
}

pub fn ids_of(batch: &RecordBatch) -> Vec<i64> {
    use arrow_array::cast::AsArray;
    batch
        .column_by_name("id")
        .unwrap()
        .as_primitive::<arrow_array::types::Int64Type>()
        .values()
        .to_vec()
}

/// The newest manifest of collection directory `dir`: its highest `manifest-*.json`, else the
/// `MANIFEST` of the older layout.
pub fn manifest_path(dir: &std::path::Path) -> std::path::PathBuf {
    let newest = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("manifest-") && n.ends_with(".json"))
        .max();
    dir.join(newest.unwrap_or_else(|| "MANIFEST".to_string()))
}

/// The files of collection directory `dir` that its newest manifest does not name (crash or
/// failed write leftovers, or files of a write in progress), sorted.
pub fn unnamed_files(dir: &std::path::Path) -> std::collections::BTreeSet<String> {
    let manifest = manifest_path(dir);
    let text = std::fs::read_to_string(&manifest).unwrap();
    let m: serde_json::Value = serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
    let own = manifest.file_name().unwrap().to_string_lossy().into_owned();
    let mut named = std::collections::BTreeSet::from([own]);
    for s in m["segments"].as_array().unwrap() {
        named.insert(s["file"].as_str().unwrap().to_string());
        for k in ["index", "norms", "pk", "deletes"] {
            if let Some(f) = s[k]["file"].as_str() {
                named.insert(f.to_string());
            }
        }
    }
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !named.contains(n))
        .collect()
}

/// The minilm-words cut of [`test_dataset`] as a collection (for tests of indexes on real
/// embeddings): its first [`N`](words::N) rows as batches with an `id` and a `bucket` column
/// (`id % 100`), exact cosine top 10, and the ids of search hits.
pub mod words {
    use std::sync::Arc;

    use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
    use arrow_array::{ArrayRef, Int64Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};
    use omendb::{CollectionOptions, CompactionPolicy, IndexSettings, Metric, Snapshot};

    /// Rows of the dataset these tests use.
    pub const N: usize = 5000;

    /// The first N rows and 200 queries of minilm-words (the cut the repository ships), and
    /// the dimension.
    pub fn dataset() -> (Vec<f32>, Vec<f32>, usize) {
        let d = super::test_dataset();
        (
            d.base.data[..N * d.base.cols].to_vec(),
            d.queries.data[..200 * d.queries.cols].to_vec(),
            d.base.cols,
        )
    }

    /// The dataset with its first `nq` queries only, and their exact top 10 among all N rows.
    pub fn dataset_and_answers(nq: usize) -> (Vec<f32>, Vec<f32>, usize, Vec<Vec<i64>>) {
        let (data, mut queries, dim) = dataset();
        queries.truncate(nq * dim);
        let want = exact_answers(&data, dim, N, &queries, |_| true);
        (data, queries, dim, want)
    }

    /// Rows `ids` of the dataset, with a `bucket` column of `id % 100`.
    pub fn rows(data: &[f32], dim: usize, ids: std::ops::Range<usize>) -> RecordBatch {
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

    /// The schema of [`rows`].
    pub fn schema(dim: usize) -> Schema {
        rows(&vec![0.0; dim], dim, 0..1).schema().as_ref().clone()
    }

    /// Indexing at `threshold`, without merges (these tests look at segments as appended).
    pub fn options(threshold: usize) -> CollectionOptions {
        CollectionOptions {
            metric: Metric::Cosine,
            index: IndexSettings {
                threshold,
                compaction: CompactionPolicy {
                    enabled: false,
                    ..Default::default()
                },
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// The ids of each query's hits (rows are numbered in append order across segments).
    pub fn hit_ids(snap: &Snapshot, hits: Vec<Vec<omendb::Hit>>) -> Vec<Vec<i64>> {
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
    pub fn exact_ids(
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

    /// `exact_ids` of each query in `queries` (`dim` floats each).
    pub fn exact_answers(
        data: &[f32],
        dim: usize,
        n: usize,
        queries: &[f32],
        keep: impl Fn(usize) -> bool + Copy,
    ) -> Vec<Vec<i64>> {
        queries
            .chunks(dim)
            .map(|q| exact_ids(data, dim, n, q, keep))
            .collect()
    }
}
