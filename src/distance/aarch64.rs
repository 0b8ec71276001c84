//! NEON kernels (AArch64), reached only through the NEON kernel table.

use std::arch::aarch64::*;

use super::tiles::{drive_tiles, Tiles};

/// The unrolled reduction `dot` and `l2sq` share: four accumulators of four lanes; `$step`
/// folds the registers `$x`, `$y` into the accumulator `$acc`, `$tail` one pair of scalars
/// `$sx`, `$sy` past the last full register.
macro_rules! reduce_neon {
    ($a:ident, $b:ident, |$x:ident, $y:ident, $acc:ident| $step:expr,
     |$sx:ident, $sy:ident| $tail:expr) => {{
        let n = $a.len();
        let (pa, pb) = ($a.as_ptr(), $b.as_ptr());
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut k = 0;
        while k + 16 <= n {
            for (j, s) in acc.iter_mut().enumerate() {
                let off = k + 4 * j;
                let ($x, $y, $acc) = (vld1q_f32(pa.add(off)), vld1q_f32(pb.add(off)), *s);
                *s = $step;
            }
            k += 16;
        }
        while k + 4 <= n {
            let ($x, $y, $acc) = (vld1q_f32(pa.add(k)), vld1q_f32(pb.add(k)), acc[0]);
            acc[0] = $step;
            k += 4;
        }
        let mut r = vaddvq_f32(vaddq_f32(
            vaddq_f32(acc[0], acc[1]),
            vaddq_f32(acc[2], acc[3]),
        ));
        while k < n {
            let ($sx, $sy) = ($a[k], $b[k]);
            r += $tail;
            k += 1;
        }
        r
    }};
}

#[target_feature(enable = "neon")]
unsafe fn dot_neon_impl(a: &[f32], b: &[f32]) -> f32 {
    reduce_neon!(a, b, |x, y, acc| vfmaq_f32(acc, x, y), |x, y| x * y)
}

#[target_feature(enable = "neon")]
unsafe fn l2sq_neon_impl(a: &[f32], b: &[f32]) -> f32 {
    reduce_neon!(
        a,
        b,
        |x, y, acc| {
            let t = vsubq_f32(x, y);
            vfmaq_f32(acc, t, t)
        },
        |x, y| (x - y) * (x - y)
    )
}

#[target_feature(enable = "neon")]
unsafe fn tile_neon<const Q: usize, const R: usize>(
    q: *const f32,
    x: *const f32,
    d: usize,
    out: *mut f32,
    stride: usize,
) {
    let mut acc = [[vdupq_n_f32(0.0); R]; Q];
    let mut k = 0;
    while k + 4 <= d {
        let mut xv = [vdupq_n_f32(0.0); R];
        for (r, v) in xv.iter_mut().enumerate() {
            *v = vld1q_f32(x.add(r * d + k));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let qv = vld1q_f32(q.add(i * d + k));
            for (a, v) in row.iter_mut().zip(xv.iter()) {
                *a = vfmaq_f32(*a, qv, *v);
            }
        }
        k += 4;
    }
    for (i, row) in acc.iter().enumerate() {
        for (r, a) in row.iter().enumerate() {
            let mut s = vaddvq_f32(*a);
            for t in k..d {
                s += *q.add(i * d + t) * *x.add(r * d + t);
            }
            *out.add(i * stride + r) = s;
        }
    }
}

static TILES_NEON: Tiles = Tiles {
    qt: 4,
    rt: 4,
    full: tile_neon::<4, 4>,
    one_query: tile_neon::<1, 4>,
    one_row: tile_neon::<4, 1>,
    single: tile_neon::<1, 1>,
};

#[target_feature(enable = "neon")]
unsafe fn dot_u8_neon_impl(a: &[f32], c: &[u8]) -> f32 {
    let n = a.len();
    let (pa, pc) = (a.as_ptr(), c.as_ptr());
    let mut acc = [vdupq_n_f32(0.0); 2];
    let mut k = 0;
    while k + 8 <= n {
        let wide = vmovl_u8(vld1_u8(pc.add(k)));
        let lo = vcvtq_f32_u32(vmovl_u16(vget_low_u16(wide)));
        let hi = vcvtq_f32_u32(vmovl_u16(vget_high_u16(wide)));
        acc[0] = vfmaq_f32(acc[0], vld1q_f32(pa.add(k)), lo);
        acc[1] = vfmaq_f32(acc[1], vld1q_f32(pa.add(k + 4)), hi);
        k += 8;
    }
    let mut r = vaddvq_f32(vaddq_f32(acc[0], acc[1]));
    while k < n {
        r += a[k] * c[k] as f32;
        k += 1;
    }
    r
}

pub fn dot_u8_neon(a: &[f32], c: &[u8]) -> f32 {
    assert_eq!(a.len(), c.len());
    // SAFETY: only reachable through the NEON kernel table (neon detected); the loop
    // reads 8 floats and 8 bytes at k only while k + 8 <= len of both.
    unsafe { dot_u8_neon_impl(a, c) }
}

pub fn dot_neon(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    // SAFETY: only reachable through the NEON kernel table, handed out after detecting
    // neon; lengths are equal.
    unsafe { dot_neon_impl(a, b) }
}

pub fn l2sq_neon(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    // SAFETY: as in dot_neon.
    unsafe { l2sq_neon_impl(a, b) }
}

pub fn dot_block_neon(q: &[f32], x: &[f32], d: usize, out: &mut [f32]) {
    drive_tiles(&TILES_NEON, q, x, d, out)
}
