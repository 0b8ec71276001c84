//! AVX-512F kernels (x86-64). Reached only through the AVX-512 kernel table, which is handed
//! out after the CPU is detected to have avx512f.

use std::arch::x86_64::*;

use crate::distance::tiles::{check_block, drive_panels, drive_tiles, Panels, Tiles};

#[target_feature(enable = "avx512f")]
unsafe fn tail_mask(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

/// The unrolled reduction `dot` and `l2sq` share: four accumulators of sixteen lanes, and a
/// masked load for the tail; `$step` folds the registers `$x`, `$y` into the accumulator `$acc`.
macro_rules! reduce_avx512 {
    ($a:ident, $b:ident, |$x:ident, $y:ident, $acc:ident| $step:expr) => {{
        let n = $a.len();
        let (pa, pb) = ($a.as_ptr(), $b.as_ptr());
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut k = 0;
        while k + 64 <= n {
            for (j, s) in acc.iter_mut().enumerate() {
                let off = k + 16 * j;
                let ($x, $y, $acc) = (
                    _mm512_loadu_ps(pa.add(off)),
                    _mm512_loadu_ps(pb.add(off)),
                    *s,
                );
                *s = $step;
            }
            k += 64;
        }
        while k + 16 <= n {
            let ($x, $y, $acc) = (
                _mm512_loadu_ps(pa.add(k)),
                _mm512_loadu_ps(pb.add(k)),
                acc[0],
            );
            acc[0] = $step;
            k += 16;
        }
        if k < n {
            let m = tail_mask(n - k);
            let ($x, $y, $acc) = (
                _mm512_maskz_loadu_ps(m, pa.add(k)),
                _mm512_maskz_loadu_ps(m, pb.add(k)),
                acc[1],
            );
            acc[1] = $step;
        }
        let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        _mm512_reduce_add_ps(sum)
    }};
}

#[target_feature(enable = "avx512f")]
unsafe fn dot_avx512_impl(a: &[f32], b: &[f32]) -> f32 {
    reduce_avx512!(a, b, |x, y, acc| _mm512_fmadd_ps(x, y, acc))
}

#[target_feature(enable = "avx512f")]
unsafe fn l2sq_avx512_impl(a: &[f32], b: &[f32]) -> f32 {
    reduce_avx512!(a, b, |x, y, acc| {
        let t = _mm512_sub_ps(x, y);
        _mm512_fmadd_ps(t, t, acc)
    })
}

/// A `Q × R` tile of dot products with AVX-512 (masked tail, no scalar loop).
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512<const Q: usize, const R: usize>(
    q: *const f32,
    x: *const f32,
    d: usize,
    out: *mut f32,
    stride: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); R]; Q];
    let mut k = 0;
    while k < d {
        let m = if k + 16 <= d {
            0xFFFF
        } else {
            tail_mask(d - k)
        };
        let mut xv = [_mm512_setzero_ps(); R];
        for (r, v) in xv.iter_mut().enumerate() {
            *v = _mm512_maskz_loadu_ps(m, x.add(r * d + k));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let qv = _mm512_maskz_loadu_ps(m, q.add(i * d + k));
            for (a, v) in row.iter_mut().zip(xv.iter()) {
                *a = _mm512_fmadd_ps(qv, *v, *a);
            }
        }
        k += 16;
    }
    for (i, row) in acc.iter().enumerate() {
        for (r, a) in row.iter().enumerate() {
            *out.add(i * stride + r) = _mm512_reduce_add_ps(*a);
        }
    }
}

static TILES_AVX512: Tiles = Tiles {
    qt: 4,
    rt: 4,
    full: tile_avx512::<4, 4>,
    one_query: tile_avx512::<1, 4>,
    one_row: tile_avx512::<4, 1>,
    single: tile_avx512::<1, 1>,
};

/// One query: rows one at a time, in address order, so the scan is a single sequential stream
/// for the hardware prefetcher (as the AVX2 level does).
static TILES_AVX512_ONE: Tiles = Tiles {
    qt: 1,
    rt: 1,
    full: tile_avx512::<1, 1>,
    one_query: tile_avx512::<1, 1>,
    one_row: tile_avx512::<1, 1>,
    single: tile_avx512::<1, 1>,
};

/// Rows per packed panel of the many-query kernel: two 16-lane registers.
const PANEL: usize = 32;
/// Queries from which the many-query kernel packs panels: below it, packing the rows costs
/// more than the register tiles lose by reading them unpacked.
const PACK_FROM: usize = 4;

/// `Q` queries × one packed panel of 32 rows: broadcast one query element, multiply by 32
/// rows' elements at once (2 × `Q` accumulators: 24 of the 32 registers at `Q` = 12, the
/// rest for the panel and the broadcast). Writes `cols` ≤ 32 scores per query.
#[target_feature(enable = "avx512f")]
unsafe fn panel_tile_avx512<const Q: usize>(
    q: *const f32,
    d: usize,
    panel: *const f32,
    out: *mut f32,
    stride: usize,
    cols: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; Q];
    for k in 0..d {
        let b0 = _mm512_loadu_ps(panel.add(k * PANEL));
        let b1 = _mm512_loadu_ps(panel.add(k * PANEL + 16));
        for (i, a) in acc.iter_mut().enumerate() {
            let qv = _mm512_set1_ps(*q.add(i * d + k));
            a[0] = _mm512_fmadd_ps(qv, b0, a[0]);
            a[1] = _mm512_fmadd_ps(qv, b1, a[1]);
        }
    }
    let (m0, m1) = if cols == PANEL {
        (0xFFFF, 0xFFFF)
    } else {
        (tail_mask(cols.min(16)), tail_mask(cols.saturating_sub(16)))
    };
    for (i, a) in acc.iter().enumerate() {
        let dst = out.add(i * stride);
        _mm512_mask_storeu_ps(dst, m0, a[0]);
        _mm512_mask_storeu_ps(dst.add(16), m1, a[1]);
    }
}

static PANELS_AVX512: Panels = Panels {
    width: PANEL,
    tiles: &[
        panel_tile_avx512::<1>,
        panel_tile_avx512::<2>,
        panel_tile_avx512::<3>,
        panel_tile_avx512::<4>,
        panel_tile_avx512::<5>,
        panel_tile_avx512::<6>,
        panel_tile_avx512::<7>,
        panel_tile_avx512::<8>,
        panel_tile_avx512::<9>,
        panel_tile_avx512::<10>,
        panel_tile_avx512::<11>,
        panel_tile_avx512::<12>,
    ],
};

#[target_feature(enable = "avx512f")]
unsafe fn dot_u8_avx512_impl(a: &[f32], c: &[u8]) -> f32 {
    let n = a.len();
    let (pa, pc) = (a.as_ptr(), c.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 2];
    let mut k = 0;
    while k + 32 <= n {
        for (j, s) in acc.iter_mut().enumerate() {
            let bytes = _mm_loadu_si128(pc.add(k + 16 * j) as *const __m128i);
            let f = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes));
            *s = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(k + 16 * j)), f, *s);
        }
        k += 32;
    }
    let mut r = _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]));
    while k < n {
        r += a[k] * c[k] as f32;
        k += 1;
    }
    r
}

pub(crate) fn dot_u8_avx512(a: &[f32], c: &[u8]) -> f32 {
    assert_eq!(a.len(), c.len());
    // SAFETY: only reachable through the AVX-512 kernel table (avx512f detected); the
    // loop reads 32 floats and 32 bytes at k only while k + 32 <= len of both.
    unsafe { dot_u8_avx512_impl(a, c) }
}

pub(crate) fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    // SAFETY: only reachable through the AVX-512 kernel table, handed out after
    // detecting avx512f; lengths are equal.
    unsafe { dot_avx512_impl(a, b) }
}

pub(crate) fn l2sq_avx512(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    // SAFETY: as in dot_avx512.
    unsafe { l2sq_avx512_impl(a, b) }
}

pub(crate) fn dot_block_avx512(q: &[f32], x: &[f32], d: usize, out: &mut [f32]) {
    check_block(q, x, d, out);
    match q.len() / d {
        1 => drive_tiles(&TILES_AVX512_ONE, q, x, d, out),
        n if n >= PACK_FROM => drive_panels(&PANELS_AVX512, q, x, d, out),
        _ => drive_tiles(&TILES_AVX512, q, x, d, out),
    }
}
