//! Engine benchmark on a real dataset: bulk load (fsynced), open, exact search single and
//! batched. Prints one JSON object per measurement.
//!
//! cargo bench --bench engine -- --dataset ../shared/datasets/minilm-words [--dir PATH]
//!     [--hnsw | --hnsw-only]

use std::sync::Arc;
use std::time::Instant;

use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use omendb::{CollectionOptions, Database, IndexSettings, Metric, SearchRequest};
use omendb_testkit::npy;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn recall(hits: &[Vec<i64>], gt: &npy::Npy<i64>, k: usize) -> f64 {
    let mut found = 0;
    for (i, h) in hits.iter().enumerate() {
        let truth = &gt.data[i * gt.cols..i * gt.cols + k];
        found += h.iter().take(k).filter(|id| truth.contains(id)).count();
    }
    found as f64 / (hits.len() * k) as f64
}

fn main() {
    let Some(dataset) = arg("--dataset") else {
        eprintln!("usage: cargo bench --bench engine -- --dataset DIR [--dir PATH]");
        return;
    };
    let dataset = std::path::PathBuf::from(dataset);
    let base = npy::read_f32(dataset.join("base.npy")).expect("base.npy");
    let queries = npy::read_f32(dataset.join("queries.npy")).expect("queries.npy");
    let gt = npy::read_i64(dataset.join("gt_cosine.npy")).expect("gt_cosine.npy");
    let words: Vec<String> = std::fs::read_to_string(dataset.join("base_words.txt"))
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_else(|_| (0..base.rows).map(|i| format!("row{i}")).collect());
    let (n, dim) = (base.rows, base.cols);

    let mut vb =
        FixedSizeListBuilder::with_capacity(Float32Builder::with_capacity(n * dim), dim as i32, n);
    vb.values().append_slice(&base.data);
    for _ in 0..n {
        vb.append(true);
    }
    let batch = RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(Int64Array::from_iter_values(0..n as i64)) as ArrayRef,
        ),
        ("vector", Arc::new(vb.finish()) as ArrayRef),
        (
            "word",
            Arc::new(StringArray::from_iter_values(&words[..n])) as ArrayRef,
        ),
    ])
    .unwrap();

    let dir = arg("--dir")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::current_dir()
                .unwrap()
                .join("target")
                .join("bench-engine-db")
        });
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // The bar for a bulk load: writing its bytes to disk twice (write + fsync, two files).
    let raw: Vec<u8> = base.data.iter().flat_map(|f| f.to_ne_bytes()).collect();
    let write_twice = || {
        let t = Instant::now();
        for name in ["raw-1.bin", "raw-2.bin"] {
            use std::io::Write;
            let mut f = std::fs::File::create(dir.join(name)).unwrap();
            f.write_all(&raw).unwrap();
            f.sync_all().unwrap();
        }
        let s = t.elapsed().as_secs_f64();
        for name in ["raw-1.bin", "raw-2.bin"] {
            std::fs::remove_file(dir.join(name)).unwrap();
        }
        s
    };
    let twice_before = write_twice();
    {
        let db = Database::open(&dir).unwrap();
        let c = db
            .create_collection(
                "words",
                &batch.schema(),
                CollectionOptions {
                    metric: Metric::Cosine,
                    // Indexes are built (and timed) explicitly below.
                    index: IndexSettings {
                        threshold: 0,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .unwrap();
        let t = Instant::now();
        c.append(std::slice::from_ref(&batch)).unwrap();
        let s = t.elapsed().as_secs_f64();
        let bytes = c.stats().unwrap().bytes_on_disk;
        let twice = twice_before.min(write_twice());
        println!(
            "{{\"bench\":\"bulk_load\",\"rows\":{n},\"dim\":{dim},\"seconds\":{s:.3},\"rows_per_s\":{:.0},\"mb_per_s\":{:.0},\"write_bytes_twice_s\":{twice:.3}}}",
            n as f64 / s,
            bytes as f64 / s / 1e6
        );
    }
    let t = Instant::now();
    let db = Database::open(&dir).unwrap();
    let c = db.collection("words").unwrap();
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    println!(
        "{{\"bench\":\"open\",\"rows\":{},\"ms\":{open_ms:.1}}}",
        c.count()
    );
    let snap = c.snapshot();
    snap.search(&SearchRequest::new(&queries.data[..dim], 10))
        .unwrap(); // warm the norms and the page cache

    // The kernel level every figure below ran with (`OMENDB_KERNEL` forces one).
    let level = omendb::internals::kernels().level;
    println!("{{\"bench\":\"kernel\",\"level\":\"{level:?}\"}}");
    // The bar for a single-query scan: the same number of bytes read as a stream (the sum of
    // squares of every value, with the level's dot kernel, 4 MiB at a time), one thread.
    let dot = omendb::internals::kernels().dot;
    let (s, _) = best_of_3(|| {
        let chunks = base.data.chunks(1 << 20);
        std::hint::black_box(chunks.map(|c| dot(c, c)).sum::<f32>())
    });
    let bytes = (base.data.len() * 4) as f64;
    println!(
        "{{\"bench\":\"stream_read\",\"bytes\":{bytes},\"gb_per_s\":{:.1}}}",
        bytes / s / 1e9
    );

    let ids = |hits: &[omendb::Hit]| -> Vec<i64> { hits.iter().map(|h| h.row as i64).collect() };
    // `--hnsw-only`: the graph's figures alone (its code kernels), without the exact searches.
    let flat = !std::env::args().any(|a| a == "--hnsw-only");
    for threads in [1, 2].into_iter().filter(|_| flat) {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            // Each mode: the best of 3 passes over all queries (this machine is shared).
            let (s, hits) = best_of_3(|| {
                queries
                    .data
                    .chunks(dim)
                    .map(|q| ids(&snap.search(&SearchRequest::new(q, 10)).unwrap()[0]))
                    .collect::<Vec<Vec<i64>>>()
            });
            // Each query reads every row once: its bytes per second against `stream_read`.
            println!(
                "{{\"bench\":\"flat_single\",\"threads\":{threads},\"queries\":{},\"qps\":{:.1},\"gb_per_s\":{:.1},\"recall\":{:.4}}}",
                queries.rows,
                queries.rows as f64 / s,
                queries.rows as f64 * bytes / s / 1e9,
                recall(&hits, &gt, 10)
            );
            let (s, hits) = best_of_3(|| snap.search(&SearchRequest::new(&queries.data, 10)).unwrap());
            let hits: Vec<Vec<i64>> = hits.iter().map(|h| ids(h)).collect();
            println!(
                "{{\"bench\":\"flat_batched\",\"threads\":{threads},\"queries\":{},\"qps\":{:.1},\"recall\":{:.4}}}",
                queries.rows,
                queries.rows as f64 / s,
                recall(&hits, &gt, 10)
            );
        });
    }
    if std::env::args().any(|a| a == "--hnsw" || a == "--hnsw-only") {
        // Build on 2 threads, then search on 1 thread over all queries, for a sweep of ef.
        let t = Instant::now();
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
            .install(|| c.build_index(1).unwrap());
        let build_s = t.elapsed().as_secs_f64();
        let snap = c.snapshot();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        for ef in [10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 400] {
            pool.install(|| {
                let t = Instant::now();
                let hits: Vec<Vec<i64>> = queries
                    .data
                    .chunks(dim)
                    .map(|q| ids(&snap.search(&SearchRequest::new(q, 10).ef(Some(ef))).unwrap()[0]))
                    .collect();
                let s = t.elapsed().as_secs_f64();
                println!(
                    "{{\"system\":\"omendb-hnsw\",\"ef\":{ef},\"recall\":{:.4},\"qps\":{:.1},\"build_s\":{build_s:.1},\"n\":{n},\"dim\":{dim}}}",
                    recall(&hits, &gt, 10),
                    queries.rows as f64 / s
                );
            });
        }
        // Reopen: the graph is mapped from its file, not rebuilt.
        let index_bytes = c.stats().unwrap().bytes_on_disk;
        drop((snap, c, db));
        let t = Instant::now();
        let db = Database::open(&dir).unwrap();
        let c = db.collection("words").unwrap();
        let open_ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "{{\"bench\":\"open_indexed\",\"rows\":{},\"ms\":{open_ms:.1},\"index_kinds\":{:?},\"bytes_on_disk\":{index_bytes}}}",
            c.count(),
            c.stats().unwrap().index_kinds
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shortest of three timed runs of `f`, in seconds, and its result.
fn best_of_3<T>(mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..3 {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(r);
    }
    (best, out.expect("three runs"))
}
