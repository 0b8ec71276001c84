//! Distance kernels, chosen once at run time for the CPU we run on.
//!
//! Every metric is computed from two primitives, the dot product and the squared euclidean
//! distance, plus a blocked "many queries × many rows" dot product used by flat search. Each
//! SIMD level implements the same three functions and is property-tested against the scalar
//! reference (`tests/kernels.rs`).

use std::sync::OnceLock;

/// The metric a collection is searched with. Distances are "smaller is nearer":
/// cosine → `1 - cos(a, b)`, l2 → euclidean distance, dot → `-(a · b)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// `1 - cos(a, b)`.
    Cosine,
    /// Euclidean distance.
    L2,
    /// `-(a · b)`: larger inner products rank first.
    Dot,
}

impl Metric {
    /// The metric's name, as options spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::L2 => "l2",
            Metric::Dot => "dot",
        }
    }

    /// The distance between two vectors under this metric, computed directly.
    pub fn distance(self, a: &[f32], b: &[f32]) -> f32 {
        let k = kernels();
        match self {
            Metric::Dot => -(k.dot)(a, b),
            Metric::L2 => (k.l2sq)(a, b).sqrt(),
            Metric::Cosine => {
                let denom = ((k.dot)(a, a) * (k.dot)(b, b)).sqrt();
                if denom > 0.0 {
                    1.0 - (k.dot)(a, b) / denom
                } else {
                    1.0
                }
            }
        }
    }
}

impl Metric {
    /// Prepares a query for ranking: a cosine query is scaled to unit length (so cosine ranks
    /// by `1 - q·x/|x|`); others are left as they are. Returns `|q|²` before scaling (l2 needs
    /// it). Every search prepares its queries here, once.
    pub fn prepare_query(self, q: &mut [f32]) -> f32 {
        let n2 = (kernels().dot)(q, q);
        if self == Metric::Cosine && n2 > 0.0 {
            let inv = 1.0 / n2.sqrt();
            q.iter_mut().for_each(|v| *v *= inv);
        }
        n2
    }

    /// The ranking distance of a row from `s`, its dot product with a prepared query:
    /// dot → `-s`; cosine → `1 - s·x`, with `x` the row's 1/|v|; l2 → `q + x - 2s`, with `q`
    /// the query's |q|² and `x` the row's |v|² (the squared distance: ranking skips the root).
    #[inline(always)]
    pub fn rank(self, s: f32, q: f32, x: f32) -> f32 {
        match self {
            Metric::Dot => -s,
            Metric::Cosine => 1.0 - s * x,
            Metric::L2 => q + x - 2.0 * s,
        }
    }

    /// The distance reported for a ranking distance (l2 ranks squared distances).
    #[inline]
    pub fn finish(self, d: f32) -> f32 {
        match self {
            Metric::L2 => d.sqrt(),
            _ => d,
        }
    }
}

impl std::str::FromStr for Metric {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cosine" => Ok(Metric::Cosine),
            "l2" | "euclidean" => Ok(Metric::L2),
            "dot" | "ip" | "inner_product" => Ok(Metric::Dot),
            other => Err(crate::Error::invalid(format!(
                "unknown metric '{other}' (expected cosine, l2 or dot)"
            ))),
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A SIMD level a kernel set is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Portable Rust, the reference.
    Scalar,
    /// x86-64 AVX2 + FMA.
    Avx2,
    /// x86-64 AVX-512F.
    Avx512,
    /// AArch64 NEON.
    Neon,
}

type DotFn = fn(&[f32], &[f32]) -> f32;
type BlockFn = fn(&[f32], &[f32], usize, &mut [f32]);
type DotU8Fn = fn(&[f32], &[u8]) -> f32;

/// One level's kernels.
pub struct Kernels {
    /// The level the kernels are written for.
    pub level: Level,
    /// `a · b`; the slices have equal length.
    pub dot: DotFn,
    /// `|a - b|²`; the slices have equal length.
    pub l2sq: DotFn,
    /// `dot_block(q, x, d, out)`: `q` holds `nq` vectors and `x` holds `nr` vectors of
    /// dimension `d`, row-major; writes `out[i * nr + j] = q_i · x_j`.
    pub dot_block: BlockFn,
    /// `Σ a[i] · c[i]` for 8-bit codes `c` (the quantized vectors graph search traverses);
    /// the slices have equal length.
    pub dot_u8: DotU8Fn,
}

static SCALAR: Kernels = Kernels {
    level: Level::Scalar,
    dot: scalar::dot,
    l2sq: scalar::l2sq,
    dot_block: scalar::dot_block,
    dot_u8: scalar::dot_u8,
};

#[cfg(target_arch = "x86_64")]
static AVX2: Kernels = Kernels {
    level: Level::Avx2,
    dot: x86::dot_avx2,
    l2sq: x86::l2sq_avx2,
    dot_block: x86::dot_block_avx2,
    dot_u8: x86::dot_u8_avx2,
};

#[cfg(target_arch = "x86_64")]
static AVX512: Kernels = Kernels {
    level: Level::Avx512,
    dot: x86::dot_avx512,
    l2sq: x86::l2sq_avx512,
    dot_block: x86::dot_block_avx512,
    dot_u8: x86::dot_u8_avx512,
};

#[cfg(target_arch = "aarch64")]
static NEON: Kernels = Kernels {
    level: Level::Neon,
    dot: arm::dot_neon,
    l2sq: arm::l2sq_neon,
    dot_block: arm::dot_block_neon,
    dot_u8: arm::dot_u8_neon,
};

impl Kernels {
    /// The kernels for `level`, or `None` when this CPU cannot run them.
    pub fn for_level(level: Level) -> Option<&'static Kernels> {
        match level {
            Level::Scalar => Some(&SCALAR),
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => (std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma"))
            .then_some(&AVX2),
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => std::is_x86_feature_detected!("avx512f").then_some(&AVX512),
            #[cfg(target_arch = "aarch64")]
            Level::Neon => std::arch::is_aarch64_feature_detected!("neon").then_some(&NEON),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// Every level this CPU can run, best last.
    pub fn available() -> Vec<&'static Kernels> {
        [Level::Scalar, Level::Neon, Level::Avx2, Level::Avx512]
            .into_iter()
            .filter_map(Kernels::for_level)
            .collect()
    }
}

/// The best kernels for this CPU, detected on first use. `OMENDB_KERNEL=scalar|avx2|avx512|neon`
/// forces a level (for benchmarks), falling back to detection if this CPU cannot run it.
pub fn kernels() -> &'static Kernels {
    static CHOSEN: OnceLock<&'static Kernels> = OnceLock::new();
    CHOSEN.get_or_init(|| {
        let forced = std::env::var("OMENDB_KERNEL").ok().and_then(|v| {
            let level = match v.to_ascii_lowercase().as_str() {
                "scalar" => Level::Scalar,
                "avx2" => Level::Avx2,
                "avx512" => Level::Avx512,
                "neon" => Level::Neon,
                _ => return None,
            };
            Kernels::for_level(level)
        });
        forced.unwrap_or_else(|| *Kernels::available().last().expect("scalar is always there"))
    })
}

/// The plain scalar kernels: the reference every SIMD level is tested against.
pub mod scalar {
    /// `Σ a[i]·c[i]` over f32 weights and u8 codes.
    pub fn dot_u8(a: &[f32], c: &[u8]) -> f32 {
        assert_eq!(a.len(), c.len());
        let mut acc = [0f32; 8];
        let ca = a.chunks_exact(8);
        let cc = c.chunks_exact(8);
        let tail: f32 = ca
            .remainder()
            .iter()
            .zip(cc.remainder())
            .map(|(x, &y)| x * y as f32)
            .sum();
        for (x, y) in ca.zip(cc) {
            for i in 0..8 {
                acc[i] += x[i] * y[i] as f32;
            }
        }
        acc.iter().sum::<f32>() + tail
    }

    /// The dot product.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        let mut acc = [0f32; 8];
        let ca = a.chunks_exact(8);
        let cb = b.chunks_exact(8);
        let tail: f32 = ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(x, y)| x * y)
            .sum();
        for (x, y) in ca.zip(cb) {
            for i in 0..8 {
                acc[i] += x[i] * y[i];
            }
        }
        acc.iter().sum::<f32>() + tail
    }

    /// The squared euclidean distance.
    pub fn l2sq(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        let mut acc = [0f32; 8];
        let ca = a.chunks_exact(8);
        let cb = b.chunks_exact(8);
        let tail: f32 = ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(x, y)| (x - y) * (x - y))
            .sum();
        for (x, y) in ca.zip(cb) {
            for i in 0..8 {
                let t = x[i] - y[i];
                acc[i] += t * t;
            }
        }
        acc.iter().sum::<f32>() + tail
    }

    /// Dot products of every query in `q` with every row of `x` (`d` values each), into
    /// `out` query-major.
    pub fn dot_block(q: &[f32], x: &[f32], d: usize, out: &mut [f32]) {
        let nr = super::check_block(q, x, d, out);
        if nr == 0 {
            return;
        }
        for (qi, row) in q.chunks_exact(d).zip(out.chunks_exact_mut(nr)) {
            for (xj, o) in x.chunks_exact(d).zip(row.iter_mut()) {
                *o = dot(qi, xj);
            }
        }
    }
}

/// Checks the shapes of a `dot_block` call and returns the number of rows.
fn check_block(q: &[f32], x: &[f32], d: usize, out: &[f32]) -> usize {
    assert!(d > 0, "dimension must be positive");
    assert!(
        q.len().is_multiple_of(d) && x.len().is_multiple_of(d),
        "ragged block"
    );
    let (nq, nr) = (q.len() / d, x.len() / d);
    assert_eq!(out.len(), nq * nr, "output has the wrong size");
    nr
}

/// A register tile: `QT` queries × `RT` rows. `tile(q, x, d, out, stride)` writes
/// `out[i * stride + j]` for `i < QT`, `j < RT`. Unsafe: the pointers must cover `QT` (`RT`)
/// vectors of `d` floats, `out` must cover the tile, and the CPU must run the tile's level.
type TileFn = unsafe fn(*const f32, *const f32, usize, *mut f32, usize);

/// The tiles of one level: a full `QT × RT` tile and its three edge variants.
struct Tiles {
    qt: usize,
    rt: usize,
    full: TileFn,
    one_query: TileFn,
    one_row: TileFn,
    single: TileFn,
}

/// How many row tiles ahead `drive_tiles` prefetches. Segments are memory-mapped files in
/// 4 KiB pages, where the hardware prefetcher stops at every page boundary; explicit
/// prefetches keep a single-query scan streaming.
const PREFETCH_TILES: usize = 8;

/// Prefetches `len` elements of `x` from `start` (clamped to `x`) into L1, a cache line at a
/// time.
#[inline]
pub fn prefetch_rows<T>(x: &[T], start: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let end = (start + len).min(x.len());
        let mut i = start;
        while i < end {
            // SAFETY: i < x.len(), so the address lies inside x; prefetch has no other effect
            // (SSE is part of the x86_64 baseline).
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    x.as_ptr().add(i) as *const i8,
                )
            };
            i += 64 / std::mem::size_of::<T>().max(1);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (x, start, len);
}

/// Drives a level's register tiles over a whole block. Row tiles are the outer loop so a
/// handful of rows stays in L1 while the queries stream from L2.
#[allow(dead_code)] // unused on targets with no SIMD level
fn drive_tiles(t: &Tiles, q: &[f32], x: &[f32], d: usize, out: &mut [f32]) {
    let nr = check_block(q, x, d, out);
    let nq = q.len() / d;
    let (qp, xp, op) = (q.as_ptr(), x.as_ptr(), out.as_mut_ptr());
    let mut r = 0;
    while r < nr {
        prefetch_rows(x, (r + t.rt * PREFETCH_TILES) * d, t.rt * d);
        let full_rows = r + t.rt <= nr;
        let mut i = 0;
        while i < nq {
            let full_queries = i + t.qt <= nq;
            let tile = match (full_queries, full_rows) {
                (true, true) => t.full,
                (false, true) => t.one_query,
                (true, false) => t.one_row,
                (false, false) => t.single,
            };
            // SAFETY: check_block proved q holds nq and x holds nr vectors of d floats and out
            // holds nq × nr floats; the tile chosen touches queries i..i+qt (or i) and rows
            // r..r+rt (or r), all in range, and writes out[(i..) * nr + (r..)] in range. The
            // Tiles value was built for a level that Kernels::for_level verified on this CPU.
            unsafe { tile(qp.add(i * d), xp.add(r * d), d, op.add(i * nr + r), nr) };
            i += if full_queries { t.qt } else { 1 };
        }
        r += if full_rows { t.rt } else { 1 };
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{drive_tiles, Tiles};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum256(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_avx2_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut k = 0;
        while k + 32 <= n {
            for (j, s) in acc.iter_mut().enumerate() {
                let off = k + 8 * j;
                *s = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(off)),
                    _mm256_loadu_ps(pb.add(off)),
                    *s,
                );
            }
            k += 32;
        }
        while k + 8 <= n {
            acc[0] = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(k)),
                _mm256_loadu_ps(pb.add(k)),
                acc[0],
            );
            k += 8;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut r = hsum256(sum);
        while k < n {
            r += a[k] * b[k];
            k += 1;
        }
        r
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn l2sq_avx2_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut k = 0;
        while k + 32 <= n {
            for (j, s) in acc.iter_mut().enumerate() {
                let off = k + 8 * j;
                let t = _mm256_sub_ps(_mm256_loadu_ps(pa.add(off)), _mm256_loadu_ps(pb.add(off)));
                *s = _mm256_fmadd_ps(t, t, *s);
            }
            k += 32;
        }
        while k + 8 <= n {
            let t = _mm256_sub_ps(_mm256_loadu_ps(pa.add(k)), _mm256_loadu_ps(pb.add(k)));
            acc[0] = _mm256_fmadd_ps(t, t, acc[0]);
            k += 8;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut r = hsum256(sum);
        while k < n {
            let t = a[k] - b[k];
            r += t * t;
            k += 1;
        }
        r
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

    pub fn dot_u8_avx2(a: &[f32], c: &[u8]) -> f32 {
        assert_eq!(a.len(), c.len());
        // SAFETY: only reachable through the AVX2 kernel table (avx2 and fma detected); the
        // loop reads 16 floats and 16 bytes at k only while k + 16 <= len of both.
        unsafe { dot_u8_avx2_impl(a, c) }
    }

    pub fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        // SAFETY: this function is only reachable through the AVX2 kernel table, which
        // Kernels::for_level hands out after detecting avx2 and fma; lengths are equal.
        unsafe { dot_avx2_impl(a, b) }
    }

    pub fn l2sq_avx2(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        // SAFETY: as in dot_avx2.
        unsafe { l2sq_avx2_impl(a, b) }
    }

    /// Rows per packed panel in the many-query kernel: two 8-lane registers.
    const PANEL: usize = 16;
    /// Queries per register tile of the many-query kernel (6 × 2 accumulators).
    const QTILE: usize = 6;

    /// `Q` queries × one packed panel of 16 rows: broadcast one query element, multiply by 16
    /// rows' elements at once. `panel[k * 16 + j]` is element k of row j. Writes `cols` ≤ 16
    /// scores per query to `out[i * stride ..]`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn panel_tile_avx2<const Q: usize>(
        q: *const f32,
        d: usize,
        panel: *const f32,
        out: *mut f32,
        stride: usize,
        cols: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; Q];
        for k in 0..d {
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

    /// Many queries: a small GEMM. All rows are first transposed into 16-row panels (for a
    /// 64-row block at d = 384, 96 KiB: they stay in L2); then each 6-query tile, loaded into
    /// L1 once, runs over every panel. Streaming the panels past resident query tiles keeps
    /// the large operand (all the queries) from being re-read from L3 for every panel.
    fn dot_block_packed_avx2(q: &[f32], x: &[f32], d: usize, out: &mut [f32]) {
        let nr = x.len() / d;
        let nq = q.len() / d;
        let panels = nr.div_ceil(PANEL);
        let mut packed = vec![0f32; panels * PANEL * d];
        for (p, panel) in packed.chunks_exact_mut(PANEL * d).enumerate() {
            let j0 = p * PANEL;
            let cols = PANEL.min(nr - j0);
            for (j, row) in x[j0 * d..(j0 + cols) * d].chunks_exact(d).enumerate() {
                for (k, v) in row.iter().enumerate() {
                    panel[k * PANEL + j] = *v;
                }
            }
        }
        let mut i = 0;
        while i < nq {
            let n = QTILE.min(nq - i);
            let tile = match n {
                6 => panel_tile_avx2::<6>,
                5 => panel_tile_avx2::<5>,
                4 => panel_tile_avx2::<4>,
                3 => panel_tile_avx2::<3>,
                2 => panel_tile_avx2::<2>,
                _ => panel_tile_avx2::<1>,
            };
            for (p, panel) in packed.chunks_exact(PANEL * d).enumerate() {
                let j0 = p * PANEL;
                let cols = PANEL.min(nr - j0);
                // SAFETY: queries i..i+n lie in q (n ≤ nq - i), each panel holds PANEL × d
                // floats, and out rows i..i+n hold nr floats from column j0, of which
                // cols ≤ nr - j0 are written. Reached only through the AVX2 kernel table,
                // which is handed out after detecting avx2 and fma.
                unsafe {
                    tile(
                        q.as_ptr().add(i * d),
                        d,
                        panel.as_ptr(),
                        out.as_mut_ptr().add(i * nr + j0),
                        nr,
                        cols,
                    )
                };
            }
            i += n;
        }
    }

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

    pub fn dot_block_avx2(q: &[f32], x: &[f32], d: usize, out: &mut [f32]) {
        super::check_block(q, x, d, out);
        match q.len() / d {
            1 => drive_tiles(&TILES_AVX2_ONE, q, x, d, out),
            n if n >= QTILE => dot_block_packed_avx2(q, x, d, out),
            _ => drive_tiles(&TILES_AVX2, q, x, d, out),
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn tail_mask(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn dot_avx512_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut k = 0;
        while k + 64 <= n {
            for (j, s) in acc.iter_mut().enumerate() {
                let off = k + 16 * j;
                *s = _mm512_fmadd_ps(
                    _mm512_loadu_ps(pa.add(off)),
                    _mm512_loadu_ps(pb.add(off)),
                    *s,
                );
            }
            k += 64;
        }
        while k + 16 <= n {
            acc[0] = _mm512_fmadd_ps(
                _mm512_loadu_ps(pa.add(k)),
                _mm512_loadu_ps(pb.add(k)),
                acc[0],
            );
            k += 16;
        }
        if k < n {
            let m = tail_mask(n - k);
            acc[1] = _mm512_fmadd_ps(
                _mm512_maskz_loadu_ps(m, pa.add(k)),
                _mm512_maskz_loadu_ps(m, pb.add(k)),
                acc[1],
            );
        }
        let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        _mm512_reduce_add_ps(sum)
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn l2sq_avx512_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut k = 0;
        while k + 64 <= n {
            for (j, s) in acc.iter_mut().enumerate() {
                let off = k + 16 * j;
                let t = _mm512_sub_ps(_mm512_loadu_ps(pa.add(off)), _mm512_loadu_ps(pb.add(off)));
                *s = _mm512_fmadd_ps(t, t, *s);
            }
            k += 64;
        }
        while k + 16 <= n {
            let t = _mm512_sub_ps(_mm512_loadu_ps(pa.add(k)), _mm512_loadu_ps(pb.add(k)));
            acc[0] = _mm512_fmadd_ps(t, t, acc[0]);
            k += 16;
        }
        if k < n {
            let m = tail_mask(n - k);
            let t = _mm512_sub_ps(
                _mm512_maskz_loadu_ps(m, pa.add(k)),
                _mm512_maskz_loadu_ps(m, pb.add(k)),
            );
            acc[1] = _mm512_fmadd_ps(t, t, acc[1]);
        }
        let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        _mm512_reduce_add_ps(sum)
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

    pub fn dot_u8_avx512(a: &[f32], c: &[u8]) -> f32 {
        assert_eq!(a.len(), c.len());
        // SAFETY: only reachable through the AVX-512 kernel table (avx512f detected); the
        // loop reads 32 floats and 32 bytes at k only while k + 32 <= len of both.
        unsafe { dot_u8_avx512_impl(a, c) }
    }

    pub fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        // SAFETY: only reachable through the AVX-512 kernel table, handed out after
        // detecting avx512f; lengths are equal.
        unsafe { dot_avx512_impl(a, b) }
    }

    pub fn l2sq_avx512(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        // SAFETY: as in dot_avx512.
        unsafe { l2sq_avx512_impl(a, b) }
    }

    pub fn dot_block_avx512(q: &[f32], x: &[f32], d: usize, out: &mut [f32]) {
        drive_tiles(&TILES_AVX512, q, x, d, out)
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::{drive_tiles, Tiles};
    use std::arch::aarch64::*;

    #[target_feature(enable = "neon")]
    unsafe fn dot_neon_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut k = 0;
        while k + 16 <= n {
            for (j, s) in acc.iter_mut().enumerate() {
                let off = k + 4 * j;
                *s = vfmaq_f32(*s, vld1q_f32(pa.add(off)), vld1q_f32(pb.add(off)));
            }
            k += 16;
        }
        while k + 4 <= n {
            acc[0] = vfmaq_f32(acc[0], vld1q_f32(pa.add(k)), vld1q_f32(pb.add(k)));
            k += 4;
        }
        let mut r = vaddvq_f32(vaddq_f32(
            vaddq_f32(acc[0], acc[1]),
            vaddq_f32(acc[2], acc[3]),
        ));
        while k < n {
            r += a[k] * b[k];
            k += 1;
        }
        r
    }

    #[target_feature(enable = "neon")]
    unsafe fn l2sq_neon_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut k = 0;
        while k + 16 <= n {
            for (j, s) in acc.iter_mut().enumerate() {
                let off = k + 4 * j;
                let t = vsubq_f32(vld1q_f32(pa.add(off)), vld1q_f32(pb.add(off)));
                *s = vfmaq_f32(*s, t, t);
            }
            k += 16;
        }
        while k + 4 <= n {
            let t = vsubq_f32(vld1q_f32(pa.add(k)), vld1q_f32(pb.add(k)));
            acc[0] = vfmaq_f32(acc[0], t, t);
            k += 4;
        }
        let mut r = vaddvq_f32(vaddq_f32(
            vaddq_f32(acc[0], acc[1]),
            vaddq_f32(acc[2], acc[3]),
        ));
        while k < n {
            let t = a[k] - b[k];
            r += t * t;
            k += 1;
        }
        r
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
}
