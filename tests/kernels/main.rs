//! Every SIMD kernel level this CPU runs, against the scalar reference.

use half::f16;
use omendb::internals::{scalar, Kernels, Level};
use proptest::prelude::*;

fn close(a: f32, b: f32, scale: f32) -> bool {
    (a - b).abs() <= 1e-4 * scale.max(1.0)
}

fn vecs(max_dim: usize) -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    (1..max_dim).prop_flat_map(|d| {
        (
            prop::collection::vec(-10.0f32..10.0, d),
            prop::collection::vec(-10.0f32..10.0, d),
        )
    })
}

/// A xorshift64 stream from `seed`: the values property tests build their inputs from.
fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

fn reference_dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

#[test]
fn levels_are_detected() {
    let levels: Vec<Level> = Kernels::available().iter().map(|k| k.level).collect();
    assert_eq!(levels[0], Level::Scalar);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        assert!(levels.contains(&Level::Avx2));
    }
    eprintln!("kernel levels on this CPU: {levels:?}");
}

#[test]
fn widen_is_exact_for_every_half_value() {
    // All 65,536 bit patterns (subnormals, infinities and NaNs included) against the
    // software conversion, bit for bit; 65,536 is a multiple of 8, so the tail is checked
    // with an odd-length slice too.
    let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
    let want: Vec<u32> = all.iter().map(|v| v.to_f32_const().to_bits()).collect();
    for k in Kernels::available() {
        for n in [all.len(), all.len() - 3] {
            let mut out = vec![0f32; n];
            (k.widen)(&all[..n], &mut out);
            let got: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
            assert!(got == want[..n], "{:?} widen differs", k.level);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn scalar_matches_f64_reference((a, b) in vecs(300)) {
        let scale = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum::<f32>();
        prop_assert!(close(scalar::dot(&a, &b), reference_dot(&a, &b) as f32, scale));
        let l2: f64 = a.iter().zip(&b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
        prop_assert!(close(scalar::l2sq(&a, &b), l2 as f32, l2 as f32));
    }

    #[test]
    fn simd_dot_and_l2_match_scalar((a, b) in vecs(1600)) {
        let scale = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum::<f32>();
        let l2 = scalar::l2sq(&a, &b);
        for k in Kernels::available() {
            let d = (k.dot)(&a, &b);
            prop_assert!(close(d, scalar::dot(&a, &b), scale), "{:?} dot {} vs {}", k.level, d, scalar::dot(&a, &b));
            let e = (k.l2sq)(&a, &b);
            prop_assert!(close(e, l2, l2), "{:?} l2sq {} vs {}", k.level, e, l2);
        }
    }

    #[test]
    fn half_kernels_match_the_widened_f32_kernels((a, b) in vecs(1600)) {
        // Rows stored in half precision: every kernel level widens them exactly and then
        // computes in f32, as the f32 kernels do on the widened values.
        let h: Vec<f16> = b.iter().map(|&v| f16::from_f32(v)).collect();
        let wide: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
        let mut out = vec![0f32; h.len()];
        scalar::widen(&h, &mut out);
        prop_assert_eq!(&out, &wide);
        let scale = a.iter().zip(&wide).map(|(x, y)| (x * y).abs()).sum::<f32>();
        let dot = reference_dot(&a, &wide) as f32;
        let l2: f64 = a.iter().zip(&wide).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
        prop_assert!(close(scalar::dot_h(&a, &h), dot, scale));
        prop_assert!(close(scalar::l2sq_h(&a, &h), l2 as f32, l2 as f32));
        for k in Kernels::available() {
            let mut out = vec![f32::NAN; h.len()];
            (k.widen)(&h, &mut out);
            prop_assert_eq!(&out, &wide, "{:?} widen", k.level);
            let d = (k.dot_h)(&a, &h);
            prop_assert!(close(d, dot, scale), "{:?} dot_h {} vs {}", k.level, d, dot);
            let e = (k.l2sq_h)(&a, &h);
            prop_assert!(close(e, l2 as f32, l2 as f32), "{:?} l2sq_h {} vs {}", k.level, e, l2);
        }
    }

    #[test]
    fn simd_dot_u8_matches_scalar(
        (a, c) in (1usize..1600).prop_flat_map(|d| (
            prop::collection::vec(-10.0f32..10.0, d),
            prop::collection::vec(any::<u8>(), d),
        ))
    ) {
        let exact: f64 = a.iter().zip(&c).map(|(x, &y)| *x as f64 * y as f64).sum();
        let scale = a.iter().zip(&c).map(|(x, &y)| (x * y as f32).abs()).sum::<f32>();
        prop_assert!(close(scalar::dot_u8(&a, &c), exact as f32, scale));
        for k in Kernels::available() {
            let d = (k.dot_u8)(&a, &c);
            prop_assert!(close(d, scalar::dot_u8(&a, &c), scale), "{:?} dot_u8 {} vs {}", k.level, d, exact);
        }
    }

    #[test]
    fn bits_dot_matches_the_integer_dot_product(
        (words, cb, qb, seed) in (1usize..9, 1usize..10, 1usize..9, any::<u64>())
    ) {
        let mut next = xorshift(seed);
        let code: Vec<u64> = (0..words * cb).map(|_| next()).collect();
        let query: Vec<u64> = (0..words * qb).map(|_| next()).collect();
        // The integer each plane set spells in dimension i, multiplied out directly.
        let value = |planes: &[u64], i: usize| -> u64 {
            planes.chunks_exact(words).enumerate()
                .map(|(b, p)| ((p[i / 64] >> (i % 64)) & 1) << b)
                .sum()
        };
        let want: u64 = (0..words * 64).map(|i| value(&code, i) * value(&query, i)).sum();
        prop_assert_eq!(scalar::bits_dot(&code, &query, words), want);
        for k in Kernels::available() {
            prop_assert_eq!((k.bits_dot)(&code, &query, words), want, "{:?}", k.level);
        }
    }

    #[test]
    fn fastscan_matches_table_sums(
        (groups, seed) in (1usize..300, any::<u64>())
    ) {
        let mut next = xorshift(seed);
        let codes: Vec<u8> = (0..groups * 16).map(|_| next() as u8).collect();
        let lut: Vec<u8> = (0..groups * 16).map(|_| next() as u8).collect();
        let mut want = [0u16; 32];
        for g in 0..groups {
            for r in 0..32 {
                let byte = codes[g * 16 + r % 16];
                let nibble = if r < 16 { byte & 15 } else { byte >> 4 };
                want[r] = want[r].wrapping_add(u16::from(lut[g * 16 + usize::from(nibble)]));
            }
        }
        let mut got = [0u16; 32];
        scalar::fastscan(&codes, &lut, &mut got);
        prop_assert_eq!(got, want);
        for k in Kernels::available() {
            let mut got = [7u16; 32];
            (k.fastscan)(&codes, &lut, &mut got);
            prop_assert_eq!(got, want, "{:?}", k.level);
        }
    }

    #[test]
    fn int_code_dots_match_the_integer_dot_product(
        (blocks, seed) in (1usize..20, any::<u64>())
    ) {
        let mut next = xorshift(seed);
        let n = blocks * 32;
        let q4: Vec<i8> = (0..n).map(|_| next() as i8).collect();
        let q8: Vec<i8> = (0..n).map(|_| next() as i8).collect();
        let codes4: Vec<u8> = (0..n).map(|_| (next() % 16) as u8).collect();
        let codes8: Vec<u8> = (0..n).map(|_| next() as u8).collect();
        // Nibbles packed as the kernel reads them.
        let packed: Vec<u8> = (0..n / 2)
            .map(|i| {
                let (b, j) = (i / 16, i % 16);
                codes4[b * 32 + j] | (codes4[b * 32 + j + 16] << 4)
            })
            .collect();
        let want4: i32 = codes4.iter().zip(&q4).map(|(&c, &v)| i32::from(c) * i32::from(v)).sum();
        let want8: i32 = codes8.iter().zip(&q8).map(|(&c, &v)| i32::from(c) * i32::from(v)).sum();
        let mut w4 = q4.clone();
        scalar::nibble_order(&mut w4);
        prop_assert_eq!(scalar::dot_u4_i8(&packed, &w4), want4);
        prop_assert_eq!(scalar::dot_u8_i8(&codes8, &q8), want8);
        for k in Kernels::available() {
            prop_assert_eq!((k.dot_u4_i8)(&packed, &w4), want4, "{:?}", k.level);
            prop_assert_eq!((k.dot_u8_i8)(&codes8, &q8), want8, "{:?}", k.level);
        }
        // Four rows at once (the first as above, the others its rotations and extremes) give
        // what each gives alone, at every level.
        let high: Vec<u8> = vec![0xFF; packed.len()];
        let mut turned = packed.clone();
        turned.rotate_left(packed.len() / 3);
        let rows: [&[u8]; 4] = [&packed, &high, &turned, &packed[..]];
        let want = rows.map(|r| scalar::dot_u4_i8(r, &w4));
        prop_assert_eq!(scalar::dot4_u4_i8(rows, &w4), want);
        for k in Kernels::available() {
            prop_assert_eq!((k.dot4_u4_i8)(rows, &w4), want, "{:?}", k.level);
        }
        // The largest sums the i16 lanes hold before widening.
        for w in [i8::MIN, i8::MAX] {
            let w = vec![w; w4.len()];
            let want = rows.map(|r| scalar::dot_u4_i8(r, &w));
            for k in Kernels::available() {
                prop_assert_eq!((k.dot4_u4_i8)(rows, &w), want, "{:?}", k.level);
            }
        }
    }

    #[test]
    fn wide_query_code_dots_match_the_integer_dot_product(
        (n, seed) in (0usize..700, any::<u64>())
    ) {
        let mut next = xorshift(seed);
        // Full-range values where 255 · n · 32768 stays below 2^31, a quarter of it beyond.
        let shrink = if n <= 256 { 1 } else { 4 };
        let q: Vec<i16> = (0..n).map(|_| next() as i16 / shrink).collect();
        let codes: Vec<u8> = (0..n).map(|_| next() as u8).collect();
        let want = codes
            .iter()
            .zip(&q)
            .map(|(&c, &v)| i64::from(c) * i64::from(v))
            .sum::<i64>();
        prop_assert_eq!(i64::from(scalar::dot_u8_i16(&codes, &q)), want);
        for k in Kernels::available() {
            prop_assert_eq!(i64::from((k.dot_u8_i16)(&codes, &q)), want, "{:?}", k.level);
        }
    }

    #[test]
    fn simd_dot_block_matches_scalar(
        d in 1usize..70,
        // Past two query tiles and two row panels of every level, with ragged edges.
        nq in 1usize..30,
        nr in 1usize..80,
        seed in any::<u64>(),
    ) {
        let mut bits = xorshift(seed);
        let mut next = || (bits() % 2000) as f32 / 100.0 - 10.0;
        let q: Vec<f32> = (0..nq * d).map(|_| next()).collect();
        let x: Vec<f32> = (0..nr * d).map(|_| next()).collect();
        let mut want = vec![0.0; nq * nr];
        scalar::dot_block(&q, &x, d, &mut want);
        for k in Kernels::available() {
            let mut got = vec![f32::NAN; nq * nr];
            (k.dot_block)(&q, &x, d, &mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                prop_assert!(close(*g, *w, 100.0 * d as f32), "{:?} block[{}] {} vs {}", k.level, i, g, w);
            }
        }
    }
}
