//! HNSW graph search: one query at a time on one thread, for a few beam widths, over the
//! first 20,000 minilm-words vectors (`../shared/datasets/minilm-words`).
//! `cargo bench --bench graph`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use omendb::internals::{Hnsw, HnswParams};
use omendb::Metric;
use omendb::VectorView;
use omendb_testkit::npy;

const N: usize = 20_000;

fn graph_search(c: &mut Criterion) {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/minilm-words");
    let (Ok(base), Ok(queries)) = (
        npy::read_f32(dir.join("base.npy")),
        npy::read_f32(dir.join("queries.npy")),
    ) else {
        eprintln!("graph bench: minilm-words not found at {}", dir.display());
        return;
    };
    let dim = base.cols;
    let data = &base.data[..N.min(base.rows) * dim];
    let space = VectorView::new(data, dim, Metric::Cosine);
    let graph = Hnsw::build(&space, HnswParams::default());
    let queries: Vec<&[f32]> = queries.data.chunks(dim).take(200).collect();
    let mut g = c.benchmark_group(format!("hnsw_search/{}x{dim}", data.len() / dim));
    g.throughput(Throughput::Elements(queries.len() as u64));
    for ef in [16, 32, 64, 128] {
        g.bench_function(BenchmarkId::new("ef", ef), |b| {
            b.iter(|| {
                for q in &queries {
                    std::hint::black_box(graph.search(&space, q, 10, ef, None));
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, graph_search);
criterion_main!(benches);
