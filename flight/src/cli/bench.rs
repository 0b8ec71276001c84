//! `omendb bench ann`: recall and speed of the engine's search over a dataset directory.
//!
//! The dataset is loaded through the engine API into a scratch database (one segment), the
//! index is built with `--build-threads`, then every `--ef` is timed over the whole query set
//! in one batched call on `--threads`. One JSON object per line goes to stdout; a summary
//! (load time, open time, index bytes per vector, peak anonymous and file-backed memory) to
//! stderr. A float16 base.npy makes a float16 collection unless `--vector-type` says otherwise.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, FixedSizeListArray, Float16Array, Float32Array, Int64Array,
};
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Field, Int64Type};
use omendb::npy;
use omendb::{
    CollectionOptions, GraphSettings, IndexKind, IndexSettings, IvfSettings, Metric, QuantKind,
    SearchRequest, Selection, Snapshot, VectorType,
};

#[derive(clap::Args, Debug)]
pub(crate) struct AnnArgs {
    /// Directory with base.npy (float16/float32), queries.npy and gt_cosine.npy.
    #[arg(long)]
    dataset: PathBuf,
    #[arg(long, default_value = "cosine")]
    metric: Metric,
    /// `hnsw`, `ivf`, `auto` (chosen by size), or `flat` for exact search.
    #[arg(long, default_value = "hnsw")]
    index: IndexKind,
    /// IVF lists (0: about 4·√rows).
    #[arg(long, default_value_t = 0)]
    nlist: usize,
    /// IVF lists scanned per query, swept (each with every `--ef`).
    #[arg(long, value_delimiter = ',', default_value = "4,8,16,32,64,128")]
    nprobe: Vec<usize>,
    #[arg(long, default_value_t = 16)]
    m: usize,
    #[arg(long, default_value_t = 200)]
    ef_construction: usize,
    /// The codes the index traverses: `sq4`, `sq8`, `rabitq1` to `rabitq9`, `binary`, or `none`
    /// for the float vectors.
    #[arg(long, default_value = "sq4")]
    quantization: QuantKind,
    /// Beam widths (graphs) or candidates re-ranked (IVF) to sweep; default
    /// 10,16,24,32,48,64,96,128,192,256,400 for graphs and 64 for IVF.
    #[arg(long, value_delimiter = ',')]
    ef: Option<Vec<usize>>,
    /// Search threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Index build threads.
    #[arg(long, default_value_t = 2)]
    build_threads: usize,
    /// Search only rows of a filter that keeps this fraction of the rows (spread evenly).
    #[arg(long)]
    filter_fraction: Option<f64>,
    /// Neighbours per query.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// The precision the collection stores vectors in, `float32` or `float16` (default: as
    /// base.npy holds them).
    #[arg(long)]
    vector_type: Option<VectorType>,
    /// Where the scratch database goes (default: a fresh directory under the system temp dir,
    /// removed afterwards): a new directory, or object storage as a URL (`s3://bucket/prefix`;
    /// left there). One that holds the `bench` collection of an earlier run is reused as it is.
    #[arg(long)]
    data: Option<String>,
    /// An option of the object storage client, `key=value` (repeatable), with a URL `--data`.
    #[arg(long = "storage-option", value_parser = omendb_object::parse_option, requires = "data")]
    storage_options: Vec<(String, String)>,
    /// Where a URL `--data`'s files are cached (default: under the system temp dir).
    #[arg(long, requires = "data")]
    cache_dir: Option<PathBuf>,
}

/// Removes the scratch directory when the bench ends, however it ends.
struct Scratch(PathBuf, bool);
impl Drop for Scratch {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

const BUCKETS: i64 = 10_000;

/// Queries searched untimed before each sweep point (as `bench_peers_strong.py` does).
const WARM_QUERIES: usize = 50;

pub(crate) fn ann(args: AnnArgs) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(f) = args.filter_fraction {
        if !(f > 0.0 && f <= 1.0) {
            return Err(format!("--filter-fraction must be in (0, 1], got {f}").into());
        }
    }
    let memory = MemoryPeaks::start();
    let base_path = args.dataset.join("base.npy");
    let half_file = npy::is_f16(&base_path)?;
    let stored = args.vector_type.unwrap_or(if half_file {
        VectorType::Float16
    } else {
        VectorType::Float32
    });
    let (dir, remove) = match &args.data {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir()
                .join(format!("omendb-bench-{}", std::process::id()))
                .display()
                .to_string(),
            true,
        ),
    };
    let cache = omendb_object::Cache::at(args.cache_dir.clone());
    let open = || omendb_object::open(&dir, &args.storage_options, &cache);
    // A `--data` database from an earlier run is reused as it is (no load, no build).
    // Object storage is opened (and checked) here; a directory once the dataset is read.
    let (opened, reuse) = if omendb_object::is_url(&dir) {
        let db = open()?;
        let names = db.list_collections()?;
        if !names.is_empty() && names != ["bench"] {
            return Err(format!("{dir} holds other collections; name a new prefix").into());
        }
        (Some(db), !names.is_empty())
    } else {
        let reuse = args.data.is_some() && Path::new(&dir).join("bench").exists();
        if Path::new(&dir).exists() && !reuse {
            return Err(format!("{dir} exists; name a new directory").into());
        }
        (None, reuse)
    };
    let t = Instant::now();
    // float16 rows stay float16 on their way to a float16 collection (one copy in memory).
    let (n, dim, base): (usize, usize, Option<ArrayRef>) = if reuse {
        let (n, dim) = npy::shape(&base_path)?;
        (n, dim, None)
    } else if half_file && stored == VectorType::Float16 {
        let b = npy::read_f16(&base_path)?;
        (b.rows, b.cols, Some(Arc::new(Float16Array::from(b.data))))
    } else {
        let b = npy::read_f32(&base_path)?;
        (b.rows, b.cols, Some(Arc::new(Float32Array::from(b.data))))
    };
    let queries = npy::read_f32(args.dataset.join("queries.npy"))?;
    if dim != queries.cols {
        return Err(format!("base.npy has dimension {dim}, queries.npy {}", queries.cols).into());
    }

    let _scratch = Scratch(PathBuf::from(&dir), remove);
    let db = match opened {
        Some(db) => db,
        None => open()?,
    };
    let c = if let Some(base) = base {
        let batch = dataset_batch(base, dim)?;
        let c = db.create_collection(
            "bench",
            &batch.schema(),
            CollectionOptions {
                metric: args.metric,
                index: IndexSettings {
                    kind: args.index,
                    ivf: IvfSettings {
                        nlist: args.nlist,
                        ..Default::default()
                    },
                    graph: GraphSettings {
                        m: args.m,
                        ef_construction: args.ef_construction,
                        ..Default::default()
                    },
                    quant: args.quantization,
                    threshold: 0, // built (and timed) below
                    ..Default::default()
                },
                vector_type: Some(stored),
                ..Default::default()
            },
        )?;
        c.append(&[batch])?;
        c
    } else {
        let c = db.collection("bench")?;
        if c.count() != n || c.dim() != dim {
            return Err(format!("{dir} holds another dataset").into());
        }
        c
    };
    let load_s = t.elapsed().as_secs_f64();

    let snap = c.snapshot();
    let keep_below = args
        .filter_fraction
        .map(|f| ((f * BUCKETS as f64).round() as i64).max(1));
    let filter = |snap: &Snapshot| -> omendb::Result<Option<Selection>> {
        keep_below
            .map(|below| {
                Selection::from_masks(snap, |b| {
                    let bucket = b.column(2).as_primitive::<Int64Type>();
                    Ok(bucket
                        .iter()
                        .map(|v| v.map(|v| v < below))
                        .collect::<BooleanArray>())
                })
            })
            .transpose()
    };

    // Ground truth: the dataset's own (cosine, unfiltered) or an exact search here.
    let truth: Vec<Vec<u32>> = if args.metric == Metric::Cosine && keep_below.is_none() {
        let gt = npy::read_i64(args.dataset.join("gt_cosine.npy"))?;
        if gt.rows != queries.rows || gt.cols < args.k {
            return Err("gt_cosine.npy does not match queries.npy and k".into());
        }
        gt.data
            .chunks(gt.cols)
            .map(|r| r[..args.k].iter().map(|&i| i as u32).collect())
            .collect()
    } else {
        let sel = filter(&snap)?;
        let req = SearchRequest::new(&queries.data, args.k)
            .filter(sel.as_ref())
            .exact(true);
        snap.search(&req)?
            .iter()
            .map(|hits| hits.iter().map(|h| h.row).collect())
            .collect()
    };

    let build_s = if reuse {
        f64::NAN // built by an earlier run
    } else if args.index != IndexKind::Flat {
        let t = Instant::now();
        pool(args.build_threads)?.install(|| c.build_index(1))?;
        t.elapsed().as_secs_f64()
    } else {
        0.0
    };
    let snap = c.snapshot();
    let sel = filter(&snap)?;
    let search = pool(args.threads)?;
    // The collection's own setting (a reused `--data` directory keeps the one it was built with).
    let stats_quant = c.stats()?.quantization;
    let built = c.stats()?.index_kinds;
    let kind = match built.first() {
        Some(k) if args.index != IndexKind::Flat => k.clone(),
        _ => args.index.as_str().to_string(),
    };
    let ivf = kind == "ivf";
    let system = format!("omendb-{kind}");
    let efs = match (&args.ef, args.index) {
        (_, IndexKind::Flat) => vec![0],
        (Some(efs), _) => efs.clone(),
        (None, _) if ivf => vec![64],
        (None, _) => vec![10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 400],
    };
    let nprobes = if ivf { args.nprobe.clone() } else { vec![0] };
    let sweep: Vec<(usize, usize)> = nprobes
        .iter()
        .flat_map(|&p| efs.iter().map(move |&e| (p, e)))
        .collect();
    eprintln!(
        "{}",
        serde_json::json!({ "kernel": format!("{:?}", omendb::internals::kernels().level) })
    );
    // Each sweep point first searches the first `WARM_QUERIES` queries untimed (the peers'
    // protocol), which also warms the page cache and the segment's cached norms.
    let warm = &queries.data[..WARM_QUERIES.min(queries.rows) * dim];
    for (nprobe, ef) in sweep {
        let run = |data: &[f32]| {
            search.install(|| {
                let req = SearchRequest::new(data, args.k)
                    .ef(Some(ef.max(1)))
                    .nprobe(Some(nprobe.max(1)))
                    .filter(sel.as_ref());
                snap.search(&req)
            })
        };
        run(warm)?;
        let t = Instant::now();
        let hits = run(&queries.data)?;
        let secs = t.elapsed().as_secs_f64();
        let mut found = 0;
        let mut wanted = 0;
        for (h, want) in hits.iter().zip(&truth) {
            found += h.iter().filter(|h| want.contains(&h.row)).count();
            wanted += want.len();
        }
        let mut line = serde_json::json!({
            "system": system,
            "ef": ef,
            "recall": (found as f64 / wanted.max(1) as f64 * 1e4).round() / 1e4,
            "qps": (queries.rows as f64 / secs).round(),
            "build_s": (!build_s.is_nan()).then_some((build_s * 10.0).round() / 10.0),
            "n": n,
            "dim": dim,
            "vector_type": c.stats()?.vector_type,
        });
        if let Some(f) = args.filter_fraction {
            line["filter_fraction"] = f.into();
        }
        if args.index == IndexKind::Flat {
            line.as_object_mut().expect("object").remove("ef");
        } else {
            line["quantization"] = stats_quant.as_str().into();
        }
        if ivf {
            line["nprobe"] = nprobe.into();
        }
        println!("{line}");
    }
    let stats = c.stats()?;
    drop((snap, c, db));
    let t = Instant::now();
    let db = open()?;
    let c = db.collection("bench")?;
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let index_bytes = c.stats()?.index_bytes;
    eprintln!(
        "{}",
        serde_json::json!({
            "load_s": (!reuse).then_some((load_s * 10.0).round() / 10.0),
            "open_ms": (open_ms * 10.0).round() / 10.0,
            "rows": c.count(),
            "index_kinds": stats.index_kinds,
            "index_bytes_per_vector": (index_bytes as f64 / n as f64 * 10.0).round() / 10.0,
            "bytes_on_disk": stats.bytes_on_disk,
            "peak_rss_anon_mib": memory.peaks().map(|(anon, _)| anon >> 20),
            "peak_rss_file_mib": memory.peaks().map(|(_, file)| file >> 20),
        })
    );
    Ok(())
}

/// Peaks of the process's resident memory while the bench runs, anonymous (heap: graphs,
/// codes, buffers) and file-backed (mapped segments and index files, which the kernel can
/// drop and read again) apart, sampled every 10 ms from `/proc/self/status` (Linux; `None`
/// elsewhere).
struct MemoryPeaks {
    peaks: Arc<[AtomicU64; 2]>,
    stop: Arc<AtomicBool>,
}

impl MemoryPeaks {
    fn start() -> MemoryPeaks {
        let peaks = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let stop = Arc::new(AtomicBool::new(false));
        if resident().is_some() {
            let (peaks, stop) = (peaks.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some((anon, file)) = resident() {
                        peaks[0].fetch_max(anon, Ordering::Relaxed);
                        peaks[1].fetch_max(file, Ordering::Relaxed);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            });
        }
        MemoryPeaks { peaks, stop }
    }

    /// Peak anonymous and file-backed resident bytes so far.
    fn peaks(&self) -> Option<(u64, u64)> {
        let (anon, file) = resident()?;
        self.peaks[0].fetch_max(anon, Ordering::Relaxed);
        self.peaks[1].fetch_max(file, Ordering::Relaxed);
        Some((
            self.peaks[0].load(Ordering::Relaxed),
            self.peaks[1].load(Ordering::Relaxed),
        ))
    }
}

impl Drop for MemoryPeaks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Resident anonymous and file-backed bytes of this process now (`RssAnon`, `RssFile`).
fn resident() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line[key.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
    };
    Some((kib("RssAnon:")? << 10, kib("RssFile:")? << 10))
}

fn pool(threads: usize) -> Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
}

/// The dataset as one batch: `id` (row number), `vector` (`values`, float32 or float16, `dim`
/// per row), and `bucket` (row mod 10,000) for filters.
fn dataset_batch(values: ArrayRef, dim: usize) -> Result<RecordBatch, Box<dyn std::error::Error>> {
    let n = values.len() / dim;
    let item = Arc::new(Field::new("item", values.data_type().clone(), true));
    let vectors = FixedSizeListArray::try_new(item, dim as i32, values, None)?;
    Ok(RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(Int64Array::from_iter_values(0..n as i64)) as ArrayRef,
        ),
        ("vector", Arc::new(vectors) as ArrayRef),
        (
            "bucket",
            Arc::new(Int64Array::from_iter_values(
                (0..n as i64).map(|i| i % BUCKETS),
            )) as ArrayRef,
        ),
    ])?)
}
