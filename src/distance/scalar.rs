//! The plain scalar kernels: the reference every SIMD level is tested against.

use half::f16;

/// `Σ term(a[i], b[i])` in eight independent lanes (so it vectorizes), then the tail.
#[inline(always)]
fn lanes8<T: Copy>(a: &[f32], b: &[T], term: impl Fn(f32, T) -> f32) -> f32 {
    assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| term(x, y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += term(x[i], y[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ a[i]·c[i]` over f32 weights and u8 codes.
pub fn dot_u8(a: &[f32], c: &[u8]) -> f32 {
    lanes8(a, c, |x, y| x * y as f32)
}

/// `Σ_j Σ_k 2^(j+k) · popcount(code_j & query_k)` over bit planes of `words` u64 each:
/// `code` holds the planes of an unsigned integer code (least significant first), `query`
/// those of an unsigned integer query; the result is their integer dot product.
pub fn bits_dot(code: &[u64], query: &[u64], words: usize) -> u64 {
    bits_dot_body(code, query, words)
}

/// The body of `bits_dot`, inlined into each level's copy so `count_ones` compiles to the
/// level's popcount instruction.
#[inline(always)]
pub(crate) fn bits_dot_body(code: &[u64], query: &[u64], words: usize) -> u64 {
    assert!(words > 0 && code.len().is_multiple_of(words) && query.len().is_multiple_of(words));
    let mut total = 0u64;
    for (j, cp) in code.chunks_exact(words).enumerate() {
        let mut plane = 0u64;
        for (k, qp) in query.chunks_exact(words).enumerate() {
            let ones: u32 = cp.iter().zip(qp).map(|(c, q)| (c & q).count_ones()).sum();
            plane += u64::from(ones) << k;
        }
        total += plane << j;
    }
    total
}

/// Sums of 4-bit table lookups for a block of 32 codes (the "fast scan" of 1-bit codes):
/// `codes` and `lut` hold 16 bytes per group of four dimensions. Byte `i` of a group's codes
/// holds row `i`'s four bits in its low nibble and row `i + 16`'s in its high nibble; the
/// group's table gives, for each nibble value, its partial dot product with the query. Writes
/// `out[r] = Σ_groups lut[nibble of row r]` (wrapping; callers keep it under 2^16).
pub fn fastscan(codes: &[u8], lut: &[u8], out: &mut [u16; 32]) {
    assert!(codes.len() == lut.len() && codes.len().is_multiple_of(16));
    out.fill(0);
    for (c, t) in codes.chunks_exact(16).zip(lut.chunks_exact(16)) {
        for i in 0..16 {
            out[i] = out[i].wrapping_add(u16::from(t[usize::from(c[i] & 15)]));
            out[i + 16] = out[i + 16].wrapping_add(u16::from(t[usize::from(c[i] >> 4)]));
        }
    }
}

/// `Σ code · w` for 4-bit codes packed two to a byte and signed 8-bit weights in the order the
/// kernels read the nibbles: the codes go 32 bytes at a time (a final 16), and the weights of
/// such a chunk of `h` bytes are the `h` of its low nibbles, then the `h` of its high ones.
/// `codes.len()` is a multiple of 16 and `w.len()` twice it. Codes stored in blocks of 32
/// dimensions (byte `j`: dimension `j` low, `j + 16` high) take their weights through
/// `nibble_order`.
pub fn dot_u4_i8(codes: &[u8], w: &[i8]) -> i32 {
    assert!(codes.len().is_multiple_of(16) && codes.len() * 2 == w.len());
    let mut total = 0i32;
    for (c, w) in codes.chunks(32).zip(w.chunks(64)) {
        let h = c.len();
        for j in 0..h {
            total += i32::from(c[j] & 15) * i32::from(w[j]);
            total += i32::from(c[j] >> 4) * i32::from(w[h + j]);
        }
    }
    total
}

/// `dot_u4_i8` of four rows of equal length against the same weights.
pub fn dot4_u4_i8(codes: [&[u8]; 4], w: &[i8]) -> [i32; 4] {
    codes.map(|c| dot_u4_i8(c, w))
}

/// Puts the per-dimension weights `w` of codes stored in blocks of 32 dimensions (byte `j` of
/// a block: dimension `j` in the low nibble, `j + 16` in the high one) into `dot_u4_i8`'s
/// order: in every whole 64 dimensions, the second and third sixteen change places (a 32-byte
/// chunk's low nibbles are dimensions 0..16 and 32..48 of its two blocks).
pub fn nibble_order(w: &mut [i8]) {
    for chunk in w.chunks_exact_mut(64) {
        let (a, b) = chunk[16..48].split_at_mut(16);
        a.swap_with_slice(b);
    }
}

/// `Σ code[i] · q[i]` for 8-bit unsigned codes and signed 8-bit query values; equal lengths,
/// a multiple of 32.
pub fn dot_u8_i8(codes: &[u8], q: &[i8]) -> i32 {
    assert!(q.len().is_multiple_of(32) && codes.len() == q.len());
    codes
        .iter()
        .zip(q)
        .map(|(&c, &v)| i32::from(c) * i32::from(v))
        .sum()
}

/// `Σ code[i] · q[i]` for 8-bit unsigned codes and signed 16-bit query values (equal
/// lengths, any), in wrapping i32 arithmetic: exact while `255 · len · max|q|` stays below
/// 2^31, which the caller keeps (see `sq8`).
pub fn dot_u8_i16(codes: &[u8], q: &[i16]) -> i32 {
    assert_eq!(codes.len(), q.len());
    codes.iter().zip(q).fold(0i32, |acc, (&c, &v)| {
        acc.wrapping_add(i32::from(c) * i32::from(v))
    })
}

/// `a · b` for f32 `a` and half-precision `b`, each half widened exactly to f32.
pub fn dot_h(a: &[f32], b: &[f16]) -> f32 {
    lanes8(a, b, |x, y| x * y.to_f32_const())
}

/// `|a - b|²` for f32 `a` and half-precision `b`, in f32 arithmetic.
pub fn l2sq_h(a: &[f32], b: &[f16]) -> f32 {
    lanes8(a, b, |x, y| {
        let t = x - y.to_f32_const();
        t * t
    })
}

/// Widens half-precision values to f32 (exactly: every f16 is an f32); the slices have
/// equal length.
pub fn widen(src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32_const();
    }
}

/// The dot product.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    lanes8(a, b, |x, y| x * y)
}

/// The squared euclidean distance.
pub fn l2sq(a: &[f32], b: &[f32]) -> f32 {
    lanes8(a, b, |x, y| (x - y) * (x - y))
}

/// Dot products of every query in `q` with every row of `x` (`d` values each), into
/// `out` query-major.
pub fn dot_block(q: &[f32], x: &[f32], d: usize, out: &mut [f32]) {
    let nr = super::tiles::check_block(q, x, d, out);
    if nr == 0 {
        return;
    }
    for (qi, row) in q.chunks_exact(d).zip(out.chunks_exact_mut(nr)) {
        for (xj, o) in x.chunks_exact(d).zip(row.iter_mut()) {
            *o = dot(qi, xj);
        }
    }
}
