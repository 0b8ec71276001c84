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
/// more than the register tiles lose by reading them unpacked (measured with `cargo bench
/// --bench distance -- dot_block`: at 64 rows × 384 dimensions the two meet at 32 queries).
const PACK_FROM: usize = 32;

/// `Q` queries × one packed panel of 32 rows (see `tiles::PanelFn`): broadcast one query
/// element, multiply by 32 rows' elements at once (2 × `Q` accumulators: 24 of the 32
/// registers at `Q` = 12, the rest for the panel and the broadcast).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn panel_tile_avx512<const Q: usize>(
    q: *const f32,
    d: usize,
    depth: usize,
    panel: *const f32,
    out: *mut f32,
    stride: usize,
    cols: usize,
    add: bool,
) {
    let (m0, m1) = if cols == PANEL {
        (0xFFFF, 0xFFFF)
    } else {
        (tail_mask(cols.min(16)), tail_mask(cols.saturating_sub(16)))
    };
    let mut acc = [[_mm512_setzero_ps(); 2]; Q];
    if add {
        for (i, a) in acc.iter_mut().enumerate() {
            let src = out.add(i * stride);
            a[0] = _mm512_maskz_loadu_ps(m0, src);
            a[1] = _mm512_maskz_loadu_ps(m1, src.add(16));
        }
    }
    for k in 0..depth {
        let b0 = _mm512_loadu_ps(panel.add(k * PANEL));
        let b1 = _mm512_loadu_ps(panel.add(k * PANEL + 16));
        for (i, a) in acc.iter_mut().enumerate() {
            let qv = _mm512_set1_ps(*q.add(i * d + k));
            a[0] = _mm512_fmadd_ps(qv, b0, a[0]);
            a[1] = _mm512_fmadd_ps(qv, b1, a[1]);
        }
    }
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

/// The u8 × i8 integer kernels of graph traversal with AVX-512 VNNI (`vpdpbusd`: four u8 × i8
/// products added into each i32 lane in one instruction, without the i16 saturation the AVX2
/// kernels work around). Reached only through the AVX-512 table made for CPUs that have
/// avx512bw, avx512vl and avx512vnni. Kept where faster than the AVX2 kernel on the same CPU
/// (`cargo bench --bench distance`, Xeon 5th gen): dot_u8_i8 1.8× at 384 dimensions, dot4_u4_i8
/// 1.2–1.4× (in 256-bit registers: 512-bit integer work runs on two ports of Intel's cores,
/// 256-bit on three, and the 512-bit form was 1.5× slower). The 512-bit u8 × i16 (`vpdpwssd`)
/// and 64-byte fast-scan lookups were measured no faster and are not used.
mod vnni {
    use std::arch::x86_64::*;

    use crate::distance::x86::avx2::hsum_epi32;

    /// A mask of the low `n` ≤ 64 bytes.
    #[inline]
    fn byte_mask(n: usize) -> __mmask64 {
        if n >= 64 {
            !0
        } else {
            (1u64 << n) - 1
        }
    }

    /// The final 16 bytes of 4-bit codes at `pc` times the 32 weights at `pw`, as i32 lanes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn nibbles_tail(pc: *const u8, pw: *const i8) -> __m256i {
        let b = _mm256_broadcastsi128_si256(_mm_loadu_si128(pc as *const __m128i));
        let both = _mm256_blend_epi32::<0xF0>(b, _mm256_srli_epi16::<4>(b));
        let codes = _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
        let w = _mm256_loadu_si256(pw as *const __m256i);
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), codes, w)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn dot_u4_i8_impl(codes: &[u8], w: &[i8]) -> i32 {
        let (pc, pw) = (codes.as_ptr(), w.as_ptr());
        let chunks = codes.len() / 32;
        let mask = _mm256_set1_epi8(0x0F);
        // Two accumulators, so the low and high nibbles' vpdpbusd do not wait on each other.
        let (mut lo_acc, mut hi_acc) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        for c in 0..chunks {
            let packed = _mm256_loadu_si256(pc.add(c * 32) as *const __m256i);
            let lo = _mm256_and_si256(packed, mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(packed), mask);
            let wl = _mm256_loadu_si256(pw.add(c * 64) as *const __m256i);
            let wh = _mm256_loadu_si256(pw.add(c * 64 + 32) as *const __m256i);
            lo_acc = _mm256_dpbusd_epi32(lo_acc, lo, wl);
            hi_acc = _mm256_dpbusd_epi32(hi_acc, hi, wh);
        }
        let mut acc = _mm256_add_epi32(lo_acc, hi_acc);
        if codes.len() % 32 == 16 {
            acc = _mm256_add_epi32(acc, nibbles_tail(pc.add(chunks * 32), pw.add(chunks * 64)));
        }
        hsum_epi32(acc)
    }

    /// `scalar::dot_u4_i8` with `vpdpbusd` (the AVX2 kernel needs two more steps a chunk).
    pub(crate) fn dot_u4_i8_vnni(codes: &[u8], w: &[i8]) -> i32 {
        assert!(codes.len().is_multiple_of(16) && codes.len() * 2 == w.len());
        // SAFETY: reached only through the AVX-512 VNNI table (avx512f, bw, vl and vnni
        // detected); chunk c reads bytes 32c..32c+32 of `codes` and 64c..64c+64 of `w` for c
        // below `codes.len() / 32`, and a final 16 bytes of `codes` at 32c with the 32 weights
        // at 64c, all in bounds by the lengths asserted.
        unsafe { dot_u4_i8_impl(codes, w) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn dot4_u4_i8_impl(codes: [&[u8]; 4], w: &[i8]) -> [i32; 4] {
        let len = codes[0].len();
        let pw = w.as_ptr();
        let pc = codes.map(<[u8]>::as_ptr);
        let chunks = len / 32;
        let mask = _mm256_set1_epi8(0x0F);
        // 256-bit registers: 512-bit integer work runs on two ports of Intel's cores, where
        // 256-bit work has three (measured: the 512-bit form of this loop was 1.5× slower).
        let mut acc = [_mm256_setzero_si256(); 4];
        for c in 0..chunks {
            // One load of the chunk's weights serves all four rows.
            let wl = _mm256_loadu_si256(pw.add(c * 64) as *const __m256i);
            let wh = _mm256_loadu_si256(pw.add(c * 64 + 32) as *const __m256i);
            for (a, p) in acc.iter_mut().zip(pc) {
                let packed = _mm256_loadu_si256(p.add(c * 32) as *const __m256i);
                let lo = _mm256_and_si256(packed, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(packed), mask);
                *a = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(*a, lo, wl), hi, wh);
            }
        }
        if len % 32 == 16 {
            for (a, p) in acc.iter_mut().zip(pc) {
                *a = _mm256_add_epi32(*a, nibbles_tail(p.add(chunks * 32), pw.add(chunks * 64)));
            }
        }
        acc.map(|a| hsum_epi32(a))
    }

    /// `scalar::dot4_u4_i8`: four rows per pass over the weights.
    pub(crate) fn dot4_u4_i8_vnni(codes: [&[u8]; 4], w: &[i8]) -> [i32; 4] {
        let len = codes[0].len();
        assert!(
            len.is_multiple_of(16) && len * 2 == w.len() && codes.iter().all(|c| c.len() == len)
        );
        // SAFETY: as in dot_u4_i8_vnni, for each of the four rows of the asserted length.
        unsafe { dot4_u4_i8_impl(codes, w) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn dot_u8_i8_impl(codes: &[u8], q: &[i8]) -> i32 {
        let n = q.len();
        let (pc, pq) = (codes.as_ptr(), q.as_ptr());
        let mut acc = [_mm512_setzero_si512(); 2];
        let mut k = 0;
        let mut j = 0;
        while k < n {
            // 64 bytes at a time; the last 32 under a mask.
            let m = byte_mask(n - k);
            let c = _mm512_maskz_loadu_epi8(m, pc.add(k) as *const i8);
            let v = _mm512_maskz_loadu_epi8(m, pq.add(k));
            acc[j] = _mm512_dpbusd_epi32(acc[j], c, v);
            j ^= 1;
            k += 64;
        }
        _mm512_reduce_add_epi32(_mm512_add_epi32(acc[0], acc[1]))
    }

    /// `scalar::dot_u8_i8` with 64 dimensions per step: the u8 × i8 products are added by
    /// `vpdpbusd` as they are (the AVX2 kernel splits each code into nibbles so its i16 sums
    /// never saturate).
    pub(crate) fn dot_u8_i8_vnni(codes: &[u8], q: &[i8]) -> i32 {
        assert!(q.len().is_multiple_of(32) && codes.len() == q.len());
        // SAFETY: reached only through the AVX-512 VNNI table (avx512f, bw, vl and vnni
        // detected); each step loads bytes k..k+64 of both slices under a mask of the bytes
        // below their common length (masked-off bytes are not read).
        unsafe { dot_u8_i8_impl(codes, q) }
    }
}

pub(crate) use vnni::{dot4_u4_i8_vnni, dot_u4_i8_vnni, dot_u8_i8_vnni};
