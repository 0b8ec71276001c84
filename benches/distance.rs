//! Distance kernels: scalar against every SIMD level this CPU runs, at common dimensions.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use omendb::distance::Kernels;

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 - 0.5)
        .collect()
}

fn kernels(c: &mut Criterion) {
    for dim in [128, 384, 768, 1536] {
        let (a, b) = (data(dim, 1), data(dim, 2));
        let mut g = c.benchmark_group(format!("dot/{dim}"));
        g.throughput(Throughput::Elements(dim as u64));
        for k in Kernels::available() {
            g.bench_function(
                BenchmarkId::from_parameter(format!("{:?}", k.level)),
                |bench| bench.iter(|| (k.dot)(std::hint::black_box(&a), std::hint::black_box(&b))),
            );
        }
        g.finish();
        let mut g = c.benchmark_group(format!("l2sq/{dim}"));
        g.throughput(Throughput::Elements(dim as u64));
        for k in Kernels::available() {
            g.bench_function(
                BenchmarkId::from_parameter(format!("{:?}", k.level)),
                |bench| bench.iter(|| (k.l2sq)(std::hint::black_box(&a), std::hint::black_box(&b))),
            );
        }
        g.finish();
        // f32 query weights against 8-bit codes: the graph traversal's distance.
        let codes: Vec<u8> = (0..dim).map(|i| (i * 37 % 256) as u8).collect();
        let mut g = c.benchmark_group(format!("dot_u8/{dim}"));
        g.throughput(Throughput::Elements(dim as u64));
        for k in Kernels::available() {
            g.bench_function(
                BenchmarkId::from_parameter(format!("{:?}", k.level)),
                |bench| {
                    bench
                        .iter(|| (k.dot_u8)(std::hint::black_box(&a), std::hint::black_box(&codes)))
                },
            );
        }
        g.finish();
        // 64 queries × 256 rows: the tile flat search runs.
        let (q, x) = (data(64 * dim, 3), data(256 * dim, 4));
        let mut out = vec![0f32; 64 * 256];
        let mut g = c.benchmark_group(format!("dot_block_64x256/{dim}"));
        g.throughput(Throughput::Elements((64 * 256 * dim) as u64));
        for k in Kernels::available() {
            g.bench_function(
                BenchmarkId::from_parameter(format!("{:?}", k.level)),
                |bench| bench.iter(|| (k.dot_block)(&q, &x, dim, &mut out)),
            );
        }
        g.finish();
        // 1,024 queries × 64 rows: one block of a batched flat search.
        let (q, x) = (data(1024 * dim, 5), data(64 * dim, 6));
        let mut out = vec![0f32; 1024 * 64];
        let mut g = c.benchmark_group(format!("dot_block_1024x64/{dim}"));
        g.throughput(Throughput::Elements((1024 * 64 * dim) as u64));
        for k in Kernels::available() {
            g.bench_function(
                BenchmarkId::from_parameter(format!("{:?}", k.level)),
                |bench| bench.iter(|| (k.dot_block)(&q, &x, dim, &mut out)),
            );
        }
        g.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
