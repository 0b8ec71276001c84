//! AVX2 + FMA kernels (x86-64). Reached only through the AVX2 kernel table, which is handed
//! out after the CPU is detected to have avx2 and fma.

use std::arch::x86_64::*;

use half::f16;

use crate::distance::tiles::{check_block, drive_panels, drive_tiles, Panels, Tiles};

#[target_feature(enable = "avx2,fma")]
unsafe fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// The unrolled reduction `dot` and `l2sq` share: four accumulators of eight lanes; `$step`
/// folds the registers `$x`, `$y` into the accumulator `$acc`, `$tail` one pair of scalars
/// `$sx`, `$sy` past the last full register.
macro_rules! reduce_avx2 {
    ($a:ident, $b:ident, |$x:ident, $y:ident, $acc:ident| $step:expr,
     |$sx:ident, $sy:ident| $tail:expr) => {
        reduce_avx2!($a, $b, _mm256_loadu_ps, |$x, $y, $acc| $step, |$sx, $sy| {
            $tail
        })
    };
    ($a:ident, $b:ident, $load_b:ident, |$x:ident, $y:ident, $acc:ident| $step:expr,
     |$sx:ident, $sy:ident| $tail:expr) => {{
        let n = $a.len();
        let (pa, pb) = ($a.as_ptr(), $b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut k = 0;
        while k + 32 <= n {
            for (j, s) in acc.iter_mut().enumerate() {
                let off = k + 8 * j;
                let ($x, $y, $acc) = (_mm256_loadu_ps(pa.add(off)), $load_b(pb.add(off)), *s);
                *s = $step;
            }
            k += 32;
        }
        while k + 8 <= n {
            let ($x, $y, $acc) = (_mm256_loadu_ps(pa.add(k)), $load_b(pb.add(k)), acc[0]);
            acc[0] = $step;
            k += 8;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut r = hsum256(sum);
        while k < n {
            let ($sx, $sy) = ($a[k], $b[k]);
            r += $tail;
            k += 1;
        }
        r
    }};
}

#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2_impl(a: &[f32], b: &[f32]) -> f32 {
    reduce_avx2!(a, b, |x, y, acc| _mm256_fmadd_ps(x, y, acc), |x, y| x * y)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn l2sq_avx2_impl(a: &[f32], b: &[f32]) -> f32 {
    reduce_avx2!(
        a,
        b,
        |x, y, acc| {
            let t = _mm256_sub_ps(x, y);
            _mm256_fmadd_ps(t, t, acc)
        },
        |x, y| (x - y) * (x - y)
    )
}

/// Eight half-precision values at `p`, widened to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8_f16(p: *const f16) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_h_impl(a: &[f32], b: &[f16]) -> f32 {
    reduce_avx2!(
        a,
        b,
        load8_f16,
        |x, y, acc| _mm256_fmadd_ps(x, y, acc),
        |x, y| x * y.to_f32_const()
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn l2sq_h_impl(a: &[f32], b: &[f16]) -> f32 {
    reduce_avx2!(
        a,
        b,
        load8_f16,
        |x, y, acc| {
            let t = _mm256_sub_ps(x, y);
            _mm256_fmadd_ps(t, t, acc)
        },
        |x, y| (x - y.to_f32_const()) * (x - y.to_f32_const())
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn widen_impl(src: &[f16], dst: &mut [f32]) {
    let n = src.len();
    let (ps, pd) = (src.as_ptr(), dst.as_mut_ptr());
    let mut k = 0;
    while k + 8 <= n {
        _mm256_storeu_ps(pd.add(k), load8_f16(ps.add(k)));
        k += 8;
    }
    while k < n {
        dst[k] = src[k].to_f32_const();
        k += 1;
    }
}

/// `scalar::dot_h` with F16C conversions.
pub(crate) fn dot_h_avx2(a: &[f32], b: &[f16]) -> f32 {
    assert_eq!(a.len(), b.len());
    // SAFETY: only reachable through the AVX2 and AVX-512 kernel tables, handed out after
    // avx2, fma and f16c are detected; the loops read 8 values at k only while k + 8 <= len
    // of both slices.
    unsafe { dot_h_impl(a, b) }
}

/// `scalar::l2sq_h` with F16C conversions.
pub(crate) fn l2sq_h_avx2(a: &[f32], b: &[f16]) -> f32 {
    assert_eq!(a.len(), b.len());
    // SAFETY: as in dot_h_avx2.
    unsafe { l2sq_h_impl(a, b) }
}

/// `scalar::widen` with F16C conversions.
pub(crate) fn widen_avx2(src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    // SAFETY: as in dot_h_avx2: 8 values are read and written at k only while k + 8 <= len.
    unsafe { widen_impl(src, dst) }
}

/// A `Q × R` tile of dot products with AVX2 + FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<const Q: usize, const R: usize>(
    q: *const f32,
    x: *const f32,
    d: usize,
    out: *mut f32,
    stride: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); R]; Q];
    let mut k = 0;
    while k + 8 <= d {
        let mut xv = [_mm256_setzero_ps(); R];
        for (r, v) in xv.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(x.add(r * d + k));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let qv = _mm256_loadu_ps(q.add(i * d + k));
            for (a, v) in row.iter_mut().zip(xv.iter()) {
                *a = _mm256_fmadd_ps(qv, *v, *a);
            }
        }
        k += 8;
    }
    for (i, row) in acc.iter().enumerate() {
        for (r, a) in row.iter().enumerate() {
            let mut s = hsum256(*a);
            for t in k..d {
                s += *q.add(i * d + t) * *x.add(r * d + t);
            }
            *out.add(i * stride + r) = s;
        }
    }
}

static TILES_AVX2: Tiles = Tiles {
    qt: 4,
    rt: 3,
    full: tile_avx2::<4, 3>,
    one_query: tile_avx2::<1, 3>,
    one_row: tile_avx2::<4, 1>,
    single: tile_avx2::<1, 1>,
};

#[target_feature(enable = "avx2,fma")]
unsafe fn dot_u8_avx2_impl(a: &[f32], c: &[u8]) -> f32 {
    let n = a.len();
    let (pa, pc) = (a.as_ptr(), c.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut k = 0;
    while k + 16 <= n {
        let bytes = _mm_loadu_si128(pc.add(k) as *const __m128i);
        let lo = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
        let hi = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128::<8>(bytes)));
        acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(k)), lo, acc[0]);
        acc[1] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(k + 8)), hi, acc[1]);
        k += 16;
    }
    let mut r = hsum256(_mm256_add_ps(acc[0], acc[1]));
    while k < n {
        r += a[k] * c[k] as f32;
        k += 1;
    }
    r
}

pub(crate) fn dot_u8_avx2(a: &[f32], c: &[u8]) -> f32 {
    assert_eq!(a.len(), c.len());
    // SAFETY: only reachable through the AVX2 kernel table (avx2 and fma detected); the
    // loop reads 16 floats and 16 bytes at k only while k + 16 <= len of both.
    unsafe { dot_u8_avx2_impl(a, c) }
}

#[target_feature(enable = "popcnt")]
unsafe fn bits_dot_popcnt_impl(code: &[u64], query: &[u64], words: usize) -> u64 {
    crate::distance::scalar::bits_dot_body(code, query, words)
}

/// `scalar::bits_dot` with the popcnt instruction (every CPU with AVX2 has it).
pub(crate) fn bits_dot_popcnt(code: &[u64], query: &[u64], words: usize) -> u64 {
    // SAFETY: only reachable through the AVX2 and AVX-512 kernel tables, handed out after
    // avx2 (or avx512f) is detected; every such CPU has popcnt. The body is safe code.
    unsafe { bits_dot_popcnt_impl(code, query, words) }
}

/// The two 128-bit lanes of `v` added as u16 words.
#[target_feature(enable = "avx2")]
unsafe fn fold(v: __m256i) -> __m128i {
    _mm_add_epi16(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v))
}

#[target_feature(enable = "avx2")]
unsafe fn fastscan_avx2_impl(codes: &[u8], lut: &[u8], out: &mut [u16; 32]) {
    let groups = codes.len() / 16;
    let (pc, pt) = (codes.as_ptr(), lut.as_ptr());
    let mask = _mm256_set1_epi8(0x0F);
    // Looked-up bytes are summed as u16 words, two rows to a word: `whole` adds the word
    // (even row plus 256 × odd row, wrapping), `odd` adds the odd row alone, so the even
    // rows' sums are `whole − 256 · odd` (mod 2^16, as the scalar sums are) at the end. Each
    // 128-bit lane holds one group (rows 0..15 in `lo`, 16..31 in `hi`); the lanes are added
    // at the end, so nothing crosses lanes inside the loop.
    let (mut lo_whole, mut lo_odd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    let (mut hi_whole, mut hi_odd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    let mut g = 0;
    while g + 2 <= groups {
        let c = _mm256_loadu_si256(pc.add(g * 16) as *const __m256i);
        let t = _mm256_loadu_si256(pt.add(g * 16) as *const __m256i);
        let lo = _mm256_shuffle_epi8(t, _mm256_and_si256(c, mask));
        let hi = _mm256_shuffle_epi8(t, _mm256_and_si256(_mm256_srli_epi16::<4>(c), mask));
        lo_whole = _mm256_add_epi16(lo_whole, lo);
        lo_odd = _mm256_add_epi16(lo_odd, _mm256_srli_epi16::<8>(lo));
        hi_whole = _mm256_add_epi16(hi_whole, hi);
        hi_odd = _mm256_add_epi16(hi_odd, _mm256_srli_epi16::<8>(hi));
        g += 2;
    }
    let (mut lo_whole, mut lo_odd) = (fold(lo_whole), fold(lo_odd));
    let (mut hi_whole, mut hi_odd) = (fold(hi_whole), fold(hi_odd));
    if g < groups {
        let mask = _mm_set1_epi8(0x0F);
        let c = _mm_loadu_si128(pc.add(g * 16) as *const __m128i);
        let t = _mm_loadu_si128(pt.add(g * 16) as *const __m128i);
        let lo = _mm_shuffle_epi8(t, _mm_and_si128(c, mask));
        let hi = _mm_shuffle_epi8(t, _mm_and_si128(_mm_srli_epi16::<4>(c), mask));
        lo_whole = _mm_add_epi16(lo_whole, lo);
        lo_odd = _mm_add_epi16(lo_odd, _mm_srli_epi16::<8>(lo));
        hi_whole = _mm_add_epi16(hi_whole, hi);
        hi_odd = _mm_add_epi16(hi_odd, _mm_srli_epi16::<8>(hi));
    }
    let lo_even = _mm_sub_epi16(lo_whole, _mm_slli_epi16::<8>(lo_odd));
    let hi_even = _mm_sub_epi16(hi_whole, _mm_slli_epi16::<8>(hi_odd));
    // Words j of `even` and `odd` are rows 2j and 2j + 1: interleaved back into row order.
    let po = out.as_mut_ptr() as *mut __m128i;
    _mm_storeu_si128(po, _mm_unpacklo_epi16(lo_even, lo_odd));
    _mm_storeu_si128(po.add(1), _mm_unpackhi_epi16(lo_even, lo_odd));
    _mm_storeu_si128(po.add(2), _mm_unpacklo_epi16(hi_even, hi_odd));
    _mm_storeu_si128(po.add(3), _mm_unpackhi_epi16(hi_even, hi_odd));
}

/// `scalar::fastscan` with 32-byte table lookups.
pub(crate) fn fastscan_avx2(codes: &[u8], lut: &[u8], out: &mut [u16; 32]) {
    assert!(codes.len() == lut.len() && codes.len().is_multiple_of(16));
    // SAFETY: only reachable through the AVX2 and AVX-512 kernel tables (avx2 detected);
    // loads stay within the equal-length `codes` and `lut` (16 bytes per group, 32 only while
    // two groups remain), and the two 32-byte stores fill `out`'s 32 u16 exactly.
    unsafe { fastscan_avx2_impl(codes, lut, out) }
}

#[target_feature(enable = "avx2")]
pub(super) unsafe fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// The i32 lane sums of a final 16 bytes of 4-bit codes at `pc` (their low nibbles in the low
/// lane, the high ones in the high lane) times the 32 weights at `pw`; the caller guarantees
/// both are readable.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn u4_tail(pc: *const u8, pw: *const i8) -> __m256i {
    let m = _mm_set1_epi8(0x0F);
    let packed = _mm_loadu_si128(pc as *const __m128i);
    let lo = _mm_and_si128(packed, m);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(packed), m);
    let v = _mm256_loadu_si256(pw as *const __m256i);
    let pairs = _mm256_maddubs_epi16(_mm256_set_m128i(hi, lo), v);
    _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
}

#[target_feature(enable = "avx2")]
unsafe fn dot4_u4_i8_impl(codes: [&[u8]; 4], w: &[i8]) -> [i32; 4] {
    let len = codes[0].len();
    let pw = w.as_ptr();
    let pc = codes.map(<[u8]>::as_ptr);
    let mask = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_si256(); 4];
    let chunks = len / 32;
    let mut c = 0;
    while c < chunks {
        // Both nibbles' products of one chunk add up to at most 2 · 2 · 15 · 128 = 7,680 per
        // i16 lane: four chunks per accumulator stay below 32,767, then widen to i32.
        let stop = (c + 4).min(chunks);
        let mut part = [_mm256_setzero_si256(); 4];
        while c < stop {
            // One load of the chunk's weights serves all four rows.
            let wl = _mm256_loadu_si256(pw.add(c * 64) as *const __m256i);
            let wh = _mm256_loadu_si256(pw.add(c * 64 + 32) as *const __m256i);
            for r in 0..4 {
                let packed = _mm256_loadu_si256(pc[r].add(c * 32) as *const __m256i);
                let lo = _mm256_and_si256(packed, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(packed), mask);
                let both =
                    _mm256_add_epi16(_mm256_maddubs_epi16(lo, wl), _mm256_maddubs_epi16(hi, wh));
                part[r] = _mm256_add_epi16(part[r], both);
            }
            c += 1;
        }
        for r in 0..4 {
            acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(part[r], ones));
        }
    }
    if len % 32 == 16 {
        for r in 0..4 {
            let tail = u4_tail(pc[r].add(chunks * 32), pw.add(chunks * 64));
            acc[r] = _mm256_add_epi32(acc[r], tail);
        }
    }
    // Pairwise sums leave each row's eight lanes as one lane per 128-bit half, rows in order.
    let h = _mm256_hadd_epi32(
        _mm256_hadd_epi32(acc[0], acc[1]),
        _mm256_hadd_epi32(acc[2], acc[3]),
    );
    let s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
    [
        _mm_cvtsi128_si32(s),
        _mm_extract_epi32::<1>(s),
        _mm_extract_epi32::<2>(s),
        _mm_extract_epi32::<3>(s),
    ]
}

/// `scalar::dot4_u4_i8`: four rows per pass over the weights.
pub(crate) fn dot4_u4_i8_avx2(codes: [&[u8]; 4], w: &[i8]) -> [i32; 4] {
    let len = codes[0].len();
    assert!(len.is_multiple_of(16) && len * 2 == w.len() && codes.iter().all(|c| c.len() == len));
    // SAFETY: only reachable through the AVX2 and AVX-512 kernel tables (avx2 detected);
    // every row has the asserted length, so chunk c reads bytes 32c..32c+32 of each row and
    // 64c..64c+64 of `w` for c below `len / 32`, and a final 16 bytes of each row at 32c with
    // the 32 weights at 64c, all in bounds.
    unsafe { dot4_u4_i8_impl(codes, w) }
}

#[target_feature(enable = "avx2")]
unsafe fn dot_u4_i8_impl(codes: &[u8], w: &[i8]) -> i32 {
    let (pc, pw) = (codes.as_ptr(), w.as_ptr());
    let mask = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_si256();
    let chunks = codes.len() / 32;
    let mut c = 0;
    while c < chunks {
        // u8 × i8 pairs summed into i16 lanes, at most 2 · 15 · 128 = 3,840 each: eight
        // chunks per accumulator stay below 32,767, then widen to i32.
        let stop = (c + 8).min(chunks);
        let (mut lo_acc, mut hi_acc) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        while c < stop {
            let packed = _mm256_loadu_si256(pc.add(c * 32) as *const __m256i);
            let lo = _mm256_and_si256(packed, mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(packed), mask);
            let wl = _mm256_loadu_si256(pw.add(c * 64) as *const __m256i);
            let wh = _mm256_loadu_si256(pw.add(c * 64 + 32) as *const __m256i);
            lo_acc = _mm256_add_epi16(lo_acc, _mm256_maddubs_epi16(lo, wl));
            hi_acc = _mm256_add_epi16(hi_acc, _mm256_maddubs_epi16(hi, wh));
            c += 1;
        }
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(lo_acc, ones));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(hi_acc, ones));
    }
    if codes.len() % 32 == 16 {
        acc = _mm256_add_epi32(acc, u4_tail(pc.add(chunks * 32), pw.add(chunks * 64)));
    }
    hsum_epi32(acc)
}

/// `scalar::dot_u4_i8` with 64 weights per step.
pub(crate) fn dot_u4_i8_avx2(codes: &[u8], w: &[i8]) -> i32 {
    assert!(codes.len().is_multiple_of(16) && codes.len() * 2 == w.len());
    // SAFETY: only reachable through the AVX2 and AVX-512 kernel tables (avx2 detected);
    // chunk c reads bytes 32c..32c+32 of `codes` and 64c..64c+64 of `w` for c below
    // `codes.len() / 32`, and a final 16 bytes of `codes` at 32c with the 32 weights at 64c,
    // all in bounds by the lengths asserted above.
    unsafe { dot_u4_i8_impl(codes, w) }
}

#[target_feature(enable = "avx2")]
unsafe fn dot_u8_i8_impl(codes: &[u8], q: &[i8]) -> i32 {
    let (pc, pq) = (codes.as_ptr(), q.as_ptr());
    let mask = _mm256_set1_epi8(0x0F);
    let (ones, sixteen) = (_mm256_set1_epi16(1), _mm256_set1_epi16(16));
    let mut acc = _mm256_setzero_si256();
    for b in 0..q.len() / 32 {
        let c = _mm256_loadu_si256(pc.add(b * 32) as *const __m256i);
        let v = _mm256_loadu_si256(pq.add(b * 32) as *const __m256i);
        // Each code as 16·high + low nibble, so the u8 × i8 pairs summed in i16 stay within
        // 2 · 15 · 128 and never saturate.
        let lo = _mm256_maddubs_epi16(_mm256_and_si256(c, mask), v);
        let hi = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16::<4>(c), mask), v);
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(lo, ones));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(hi, sixteen));
    }
    hsum_epi32(acc)
}

/// `scalar::dot_u8_i8` with 32 dimensions per step.
pub(crate) fn dot_u8_i8_avx2(codes: &[u8], q: &[i8]) -> i32 {
    assert!(q.len().is_multiple_of(32) && codes.len() == q.len());
    // SAFETY: only reachable through the AVX2 and AVX-512 kernel tables (avx2 detected);
    // block b reads bytes 32b..32b+32 of both slices, in bounds by the lengths asserted.
    unsafe { dot_u8_i8_impl(codes, q) }
}

#[target_feature(enable = "avx2")]
unsafe fn dot_u8_i16_impl(codes: &[u8], q: &[i16]) -> i32 {
    let n = codes.len();
    let (pc, pq) = (codes.as_ptr(), q.as_ptr());
    let mut acc = [_mm256_setzero_si256(); 2];
    let mut k = 0;
    // Codes widened to i16 (0..=255), so each pair summed by madd is at most
    // 2 · 255 · 32767 and never overflows its i32 lane.
    while k + 32 <= n {
        let c0 = _mm256_cvtepu8_epi16(_mm_loadu_si128(pc.add(k) as *const __m128i));
        let c1 = _mm256_cvtepu8_epi16(_mm_loadu_si128(pc.add(k + 16) as *const __m128i));
        let q0 = _mm256_loadu_si256(pq.add(k) as *const __m256i);
        let q1 = _mm256_loadu_si256(pq.add(k + 16) as *const __m256i);
        acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(c0, q0));
        acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(c1, q1));
        k += 32;
    }
    if k + 16 <= n {
        let c0 = _mm256_cvtepu8_epi16(_mm_loadu_si128(pc.add(k) as *const __m128i));
        let q0 = _mm256_loadu_si256(pq.add(k) as *const __m256i);
        acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(c0, q0));
        k += 16;
    }
    let mut r = hsum_epi32(_mm256_add_epi32(acc[0], acc[1]));
    while k < n {
        r = r.wrapping_add(i32::from(codes[k]) * i32::from(q[k]));
        k += 1;
    }
    r
}

/// `scalar::dot_u8_i16` with 32 dimensions per step.
pub(crate) fn dot_u8_i16_avx2(codes: &[u8], q: &[i16]) -> i32 {
    assert_eq!(codes.len(), q.len());
    // SAFETY: only reachable through the AVX2 and AVX-512 kernel tables (avx2 detected); the
    // loops read 32 (or 16) bytes of `codes` and as many i16 of `q` at k only while k + 32
    // (or k + 16) <= len of both, equal by the assert.
    unsafe { dot_u8_i16_impl(codes, q) }
}

pub(crate) fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    // SAFETY: this function is only reachable through the AVX2 kernel table, which
    // Kernels::for_level hands out after detecting avx2 and fma; lengths are equal.
    unsafe { dot_avx2_impl(a, b) }
}

pub(crate) fn l2sq_avx2(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    // SAFETY: as in dot_avx2.
    unsafe { l2sq_avx2_impl(a, b) }
}

/// Rows per packed panel in the many-query kernel: two 8-lane registers.
const PANEL: usize = 16;
/// Queries per register tile of the many-query kernel (6 × 2 accumulators).
const QTILE: usize = 6;

/// `Q` queries × one packed panel of 16 rows (see `tiles::PanelFn`): broadcast one query
/// element, multiply by 16 rows' elements at once.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn panel_tile_avx2<const Q: usize>(
    q: *const f32,
    d: usize,
    depth: usize,
    panel: *const f32,
    out: *mut f32,
    stride: usize,
    cols: usize,
    add: bool,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; Q];
    if add {
        for (i, a) in acc.iter_mut().enumerate() {
            let mut tmp = [0f32; PANEL];
            std::ptr::copy_nonoverlapping(out.add(i * stride), tmp.as_mut_ptr(), cols);
            a[0] = _mm256_loadu_ps(tmp.as_ptr());
            a[1] = _mm256_loadu_ps(tmp.as_ptr().add(8));
        }
    }
    for k in 0..depth {
        let b0 = _mm256_loadu_ps(panel.add(k * PANEL));
        let b1 = _mm256_loadu_ps(panel.add(k * PANEL + 8));
        for (i, a) in acc.iter_mut().enumerate() {
            let qv = _mm256_broadcast_ss(&*q.add(i * d + k));
            a[0] = _mm256_fmadd_ps(qv, b0, a[0]);
            a[1] = _mm256_fmadd_ps(qv, b1, a[1]);
        }
    }
    for (i, a) in acc.iter().enumerate() {
        let dst = out.add(i * stride);
        if cols == PANEL {
            _mm256_storeu_ps(dst, a[0]);
            _mm256_storeu_ps(dst.add(8), a[1]);
        } else {
            let mut tmp = [0f32; PANEL];
            _mm256_storeu_ps(tmp.as_mut_ptr(), a[0]);
            _mm256_storeu_ps(tmp.as_mut_ptr().add(8), a[1]);
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, cols);
        }
    }
}

static PANELS_AVX2: Panels = Panels {
    width: PANEL,
    tiles: &[
        panel_tile_avx2::<1>,
        panel_tile_avx2::<2>,
        panel_tile_avx2::<3>,
        panel_tile_avx2::<4>,
        panel_tile_avx2::<5>,
        panel_tile_avx2::<6>,
    ],
};

/// One query: rows one at a time, in address order, so the scan is a single sequential
/// stream for the hardware prefetcher (wider row tiles measured slower: they interleave
/// several streams within the same pages).
static TILES_AVX2_ONE: Tiles = Tiles {
    qt: 1,
    rt: 1,
    full: tile_avx2::<1, 1>,
    one_query: tile_avx2::<1, 1>,
    one_row: tile_avx2::<1, 1>,
    single: tile_avx2::<1, 1>,
};

pub(crate) fn dot_block_avx2(q: &[f32], x: &[f32], d: usize, out: &mut [f32]) {
    check_block(q, x, d, out);
    match q.len() / d {
        1 => drive_tiles(&TILES_AVX2_ONE, q, x, d, out),
        n if n >= QTILE => drive_panels(&PANELS_AVX2, q, x, d, out),
        _ => drive_tiles(&TILES_AVX2, q, x, d, out),
    }
}
