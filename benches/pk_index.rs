//! Primary-key index layouts at 10 million ids (issue 11): a hash map (what the engine built on
//! first lookup before), a sorted array searched by bisection, and the sorted array with a
//! PGM-style piecewise-linear model (`omendb::pk::PkIndex`, what the engine keeps). For each:
//! build time, bytes per id, lookup ns (random present ids), and open time (the hash map is
//! rebuilt from the id column; the sorted layouts are mapped from a file and checksummed).
//!
//! `cargo bench --bench pk_index` (`PK_ROWS` sets the number of ids, default 10,000,000).
//! Lookup times are the best of three passes over 1,000,000 random stored ids.

use std::collections::HashMap;
use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

use arrow_array::{Array, Int64Array, StringArray};
use arrow_buffer::Buffer;
use omendb::map_path;
use omendb::pk::{hash_str, int_key, PkIndex};

const LOOKUPS: usize = 1_000_000;

struct Row {
    layout: &'static str,
    build_ms: f64,
    bytes_per_id: f64,
    lookup_ns: f64,
    open_ms: f64,
}

fn rng(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let x = *seed;
    (x ^ (x >> 29)).wrapping_mul(0xbf58476d1ce4e5b9) ^ (x >> 32)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Writes `bytes` to a file, then maps and checksums it as the engine opens a committed file.
fn map_file(path: &std::path::Path, bytes: &[u8]) -> (Buffer, f64) {
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(bytes))
        .expect("write");
    let expected = crc32fast::hash(bytes);
    let t = Instant::now();
    let buffer = map_path(path, expected).expect("map");
    (buffer, ms(t))
}

fn time_lookups(probes: &[usize], mut find: impl FnMut(usize) -> u32) -> f64 {
    // The best of three passes: the machine is shared and single passes vary widely.
    (0..3)
        .map(|_| {
            let t = Instant::now();
            let mut sum = 0u64;
            for &p in probes {
                sum += u64::from(find(p));
            }
            black_box(sum);
            t.elapsed().as_secs_f64() * 1e9 / probes.len() as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn hash_bytes<K>(map: &HashMap<K, u32>, heap_per_key: f64) -> f64 {
    let buckets = (map.capacity() * 8 / 7).next_power_of_two() as f64;
    (buckets * (std::mem::size_of::<(K, u32)>() as f64 + 1.0)) / map.len() as f64 + heap_per_key
}

fn run(case: &str, column: &dyn Array, probes: &[usize], dir: &std::path::Path) {
    let n = column.len();
    let strings = column.as_any().downcast_ref::<StringArray>();
    let ints = column.as_any().downcast_ref::<Int64Array>();
    let key = |row: usize| match (ints, strings) {
        (Some(a), _) => int_key(a.value(row)),
        (_, Some(s)) => hash_str(s.value(row)),
        _ => unreachable!(),
    };
    let mut out = Vec::new();

    // Hash map, as the engine built it before: id → row.
    let t = Instant::now();
    let (lookup_ns, bytes_per_id, build_ms) = match (ints, strings) {
        (Some(a), _) => {
            let map: HashMap<i64, u32> = a
                .values()
                .iter()
                .enumerate()
                .map(|(i, &v)| (v, i as u32))
                .collect();
            let build = ms(t);
            let ns = time_lookups(probes, |p| map[&a.value(p)]);
            (ns, hash_bytes(&map, 0.0), build)
        }
        (_, Some(s)) => {
            let map: HashMap<Box<str>, u32> = s
                .iter()
                .enumerate()
                .map(|(i, v)| (Box::from(v.unwrap_or_default()), i as u32))
                .collect();
            let build = ms(t);
            let heap = 16.0 + s.value_data().len() as f64 / n as f64;
            let ns = time_lookups(probes, |p| map[s.value(p)]);
            (ns, hash_bytes(&map, heap), build)
        }
        _ => unreachable!(),
    };
    out.push(Row {
        layout: "hash map (rebuilt on open)",
        build_ms,
        bytes_per_id,
        lookup_ns,
        open_ms: build_ms,
    });

    // Sorted keys and rows, searched by bisection.
    let t = Instant::now();
    let mut pairs: Vec<(u64, u32)> = (0..n).map(|r| (key(r), r as u32)).collect();
    pairs.sort_unstable();
    let keys: Vec<u64> = pairs.iter().map(|p| p.0).collect();
    let rows: Vec<u32> = pairs.iter().map(|p| p.1).collect();
    drop(pairs);
    let build_ms = ms(t);
    let mut file = Vec::with_capacity(12 * n);
    keys.iter()
        .for_each(|k| file.extend_from_slice(&k.to_le_bytes()));
    rows.iter()
        .for_each(|r| file.extend_from_slice(&r.to_le_bytes()));
    let (buffer, open_ms) = map_file(&dir.join("sorted.bin"), &file);
    let mapped_keys = arrow_buffer::ScalarBuffer::<u64>::new(buffer.clone(), 0, n);
    let mapped_rows = arrow_buffer::ScalarBuffer::<u32>::new(buffer, 2 * n, n);
    let lookup_ns = time_lookups(probes, |p| {
        let k = key(p);
        let at = mapped_keys.partition_point(|&x| x < k);
        let r = mapped_rows[at];
        if let Some(s) = strings {
            assert_eq!(s.value(r as usize), s.value(p));
        }
        r
    });
    out.push(Row {
        layout: "sorted array, bisection (mapped)",
        build_ms,
        bytes_per_id: file.len() as f64 / n as f64,
        lookup_ns,
        open_ms,
    });
    drop(file);

    // Sorted keys with the piecewise-linear model.
    let t = Instant::now();
    let index = PkIndex::build(column);
    let build_ms = ms(t);
    let mut file = Vec::with_capacity(index.file_bytes());
    index.write(&mut file).expect("write");
    let pieces = index.pieces();
    drop(index);
    let (buffer, map_ms) = map_file(&dir.join("learned.bin"), &file);
    let t = Instant::now();
    let index = PkIndex::open(buffer, n).expect("open");
    let open_ms = map_ms + ms(t);
    let lookup_ns = time_lookups(probes, |p| {
        let at = index.positions(key(p)).start;
        index.row(at)
    });
    out.push(Row {
        layout: "learned (PGM-style, mapped)",
        build_ms,
        bytes_per_id: file.len() as f64 / n as f64,
        lookup_ns,
        open_ms,
    });

    // The model's error bound: pieces against the window searched.
    if ints.is_some() {
        let mut pairs: Vec<(u64, u32)> = (0..n).map(|r| (key(r), r as u32)).collect();
        pairs.sort_unstable();
        let (keys, rows): (Vec<u64>, Vec<u32>) = pairs.into_iter().unzip();
        for eps in [4.0, 8.0, 16.0, 32.0, 64.0] {
            let index = PkIndex::with_epsilon(false, keys.clone(), rows.clone(), eps);
            let ns = time_lookups(probes, |p| index.row(index.positions(key(p)).start));
            println!(
                "  epsilon {eps}: {} pieces, {:.1} bytes/id, lookup {ns:.0} ns",
                index.pieces(),
                index.file_bytes() as f64 / n as f64
            );
        }
    }
    println!(
        "\n{case}: {n} ids, {} lookups, {pieces} model pieces",
        probes.len()
    );
    println!(
        "| layout | build ms | bytes/id | lookup ns | open ms |\n| --- | ---: | ---: | ---: | ---: |"
    );
    for r in out {
        println!(
            "| {} | {:.0} | {:.1} | {:.0} | {:.1} |",
            r.layout, r.build_ms, r.bytes_per_id, r.lookup_ns, r.open_ms
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("PK_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut seed = 42;
    let probes: Vec<usize> = (0..LOOKUPS).map(|_| rng(&mut seed) as usize % n).collect();
    let random = Int64Array::from((0..n).map(|_| rng(&mut seed) as i64).collect::<Vec<_>>());
    run("Int64, random", &random, &probes, dir.path());
    drop(random);
    let sequential = Int64Array::from((0..n as i64).collect::<Vec<_>>());
    run("Int64, sequential", &sequential, &probes, dir.path());
    drop(sequential);
    let strings = StringArray::from(
        (0..n)
            .map(|_| format!("doc-{:016x}", rng(&mut seed)))
            .collect::<Vec<_>>(),
    );
    run("Utf8 (hashed)", &strings, &probes, dir.path());
}
