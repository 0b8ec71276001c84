//! Distance kernels: scalar against every SIMD level this CPU runs, at common dimensions.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use omendb::internals::Kernels;

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 - 0.5)
        .collect()
}

/// One benchmark group: `run` with every kernel level this CPU has.
fn per_level(c: &mut Criterion, name: String, elements: usize, mut run: impl FnMut(&Kernels)) {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(elements as u64));
    for k in Kernels::available() {
        g.bench_function(
            BenchmarkId::from_parameter(format!("{:?}", k.level)),
            |bench| bench.iter(|| run(k)),
        );
    }
    g.finish();
}

fn kernels(c: &mut Criterion) {
    use std::hint::black_box;
    for dim in [128, 384, 768, 1536] {
        let (a, b) = (data(dim, 1), data(dim, 2));
        per_level(c, format!("dot/{dim}"), dim, |k| {
            black_box((k.dot)(black_box(&a), black_box(&b)));
        });
        per_level(c, format!("l2sq/{dim}"), dim, |k| {
            black_box((k.l2sq)(black_box(&a), black_box(&b)));
        });
        // f32 query weights against 8-bit codes: the graph traversal's distance.
        let codes: Vec<u8> = (0..dim).map(|i| (i * 37 % 256) as u8).collect();
        per_level(c, format!("dot_u8/{dim}"), dim, |k| {
            black_box((k.dot_u8)(black_box(&a), black_box(&codes)));
        });
        // One fast-scan block of 1-bit codes: 32 rows, a 16-entry table per 4 dimensions.
        let nibbles: Vec<u8> = (0..dim * 4).map(|i| (i * 97 % 256) as u8).collect();
        let lut: Vec<u8> = (0..dim * 4).map(|i| (i * 13 % 61) as u8).collect();
        let mut sums = [0u16; 32];
        per_level(c, format!("fastscan_32rows/{dim}"), 32, |k| {
            (k.fastscan)(black_box(&nibbles), black_box(&lut), &mut sums);
            black_box(&sums);
        });
        // Integer code kernels of graph traversal and IVF: 4-bit codes (two to a byte) and 8-bit
        // codes against signed 8-bit weights, 8-bit codes against a 16-bit query.
        let w8: Vec<i8> = (0..dim).map(|i| (i * 29 % 255) as i8).collect();
        let packed: Vec<u8> = codes[..dim / 2].to_vec();
        per_level(c, format!("dot_u4_i8/{dim}"), dim, |k| {
            black_box((k.dot_u4_i8)(black_box(&packed), black_box(&w8)));
        });
        let rows = [
            &packed[..],
            &codes[dim / 2..],
            &packed[..],
            &codes[dim / 2..],
        ];
        per_level(c, format!("dot4_u4_i8/{dim}"), 4 * dim, |k| {
            black_box((k.dot4_u4_i8)(black_box(rows), black_box(&w8)));
        });
        per_level(c, format!("dot_u8_i8/{dim}"), dim, |k| {
            black_box((k.dot_u8_i8)(black_box(&codes), black_box(&w8)));
        });
        let w16: Vec<i16> = (0..dim).map(|i| (i * 2_377 % 65_521) as i16).collect();
        per_level(c, format!("dot_u8_i16/{dim}"), dim, |k| {
            black_box((k.dot_u8_i16)(black_box(&codes), black_box(&w16)));
        });
        // (queries, rows): the tile shapes flat search runs, and one block of a batched search.
        for (nq, nr) in [
            (64, 256),
            (1024, 64),
            (2, 64),
            (4, 64),
            (8, 64),
            (16, 64),
            (32, 64),
        ] {
            let (q, x) = (data(nq * dim, 3), data(nr * dim, 4));
            let mut out = vec![0f32; nq * nr];
            per_level(
                c,
                format!("dot_block_{nq}x{nr}/{dim}"),
                nq * nr * dim,
                |k| (k.dot_block)(&q, &x, dim, &mut out),
            );
        }
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
