//! Distance kernels, chosen once at run time for the CPU we run on.
//!
//! Every metric is computed from two primitives, the dot product and the squared euclidean
//! distance, plus a blocked "many queries × many rows" dot product used by flat search. Each
//! SIMD level implements the same three functions and is property-tested against the scalar
//! reference (`tests/kernels.rs`).

use std::sync::OnceLock;

use half::f16;

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
                    // Rounding can take a vector's distance to itself just below zero.
                    (1.0 - (k.dot)(a, b) / denom).max(0.0)
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

    /// The distance reported for a ranking distance (l2 ranks squared distances). Cosine and
    /// l2 distances are never negative: rounding that takes a row's distance to itself just
    /// below zero reports zero.
    #[inline]
    pub fn finish(self, d: f32) -> f32 {
        match self {
            Metric::L2 => d.max(0.0).sqrt(),
            Metric::Cosine => d.max(0.0),
            Metric::Dot => d,
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
type BitsFn = fn(&[u64], &[u64], usize) -> u64;
type FastScanFn = fn(&[u8], &[u8], &mut [u16; 32]);
type IntDotFn = fn(&[u8], &[i8]) -> i32;
type IntDot4Fn = fn([&[u8]; 4], &[i8]) -> [i32; 4];
type WideDotFn = fn(&[u8], &[i16]) -> i32;
type DotHFn = fn(&[f32], &[f16]) -> f32;
type WidenFn = fn(&[f16], &mut [f32]);

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
    /// `bits_dot(code, query, words)`: the integer dot product of two codes stored as bit
    /// planes of `words` u64 each (see `scalar::bits_dot`), what 1- to 9-bit codes are
    /// scored with.
    pub bits_dot: BitsFn,
    /// `fastscan(codes, lut, out)`: 32 rows' 1-bit codes scored at once by 4-bit table
    /// lookups (see `scalar::fastscan`), how IVF scans its lists.
    pub fastscan: FastScanFn,
    /// `Σ code · w` for 4-bit codes packed in nibbles and signed 8-bit weights in the order
    /// the nibbles are read (see `scalar::dot_u4_i8` and `scalar::nibble_order`): 2- to 4-bit
    /// codes.
    pub dot_u4_i8: IntDotFn,
    /// `dot_u4_i8` of four rows of equal length at once (each chunk's weights read once).
    pub dot4_u4_i8: IntDot4Fn,
    /// `Σ code · q` for 8-bit codes and a signed 8-bit query (see `scalar::dot_u8_i8`): 5- to
    /// 8-bit codes.
    pub dot_u8_i8: IntDotFn,
    /// `Σ code · q` for 8-bit codes and a signed 16-bit query (see `scalar::dot_u8_i16`):
    /// sq8 codes scored against a query quantized finely enough to leave the order as it is.
    pub dot_u8_i16: WideDotFn,
    /// `a · b` for an f32 query and a half-precision row (float16 collections).
    pub dot_h: DotHFn,
    /// `|a - b|²` for an f32 query and a half-precision row.
    pub l2sq_h: DotHFn,
    /// `widen(src, dst)`: half-precision values to f32 (blocks of float16 rows for the
    /// blocked kernels); the slices have equal length.
    pub widen: WidenFn,
}

/// The portable kernels: the scalar table, and what the NEON table uses where it has none
/// of its own.
const SCALAR_KERNELS: Kernels = Kernels {
    level: Level::Scalar,
    dot: scalar::dot,
    l2sq: scalar::l2sq,
    dot_block: scalar::dot_block,
    dot_u8: scalar::dot_u8,
    bits_dot: scalar::bits_dot,
    fastscan: scalar::fastscan,
    dot_u4_i8: scalar::dot_u4_i8,
    dot4_u4_i8: scalar::dot4_u4_i8,
    dot_u8_i8: scalar::dot_u8_i8,
    dot_u8_i16: scalar::dot_u8_i16,
    dot_h: scalar::dot_h,
    l2sq_h: scalar::l2sq_h,
    widen: scalar::widen,
};

static SCALAR: Kernels = SCALAR_KERNELS;

/// The AVX2 kernels: the AVX2 table, and what the AVX-512 table uses where it has none of
/// its own.
#[cfg(target_arch = "x86_64")]
const AVX2_KERNELS: Kernels = Kernels {
    level: Level::Avx2,
    dot: x86::dot_avx2,
    l2sq: x86::l2sq_avx2,
    dot_block: x86::dot_block_avx2,
    dot_u8: x86::dot_u8_avx2,
    bits_dot: x86::bits_dot_popcnt,
    fastscan: x86::fastscan_avx2,
    dot_u4_i8: x86::dot_u4_i8_avx2,
    dot4_u4_i8: x86::dot4_u4_i8_avx2,
    dot_u8_i8: x86::dot_u8_i8_avx2,
    dot_u8_i16: x86::dot_u8_i16_avx2,
    dot_h: x86::dot_h_avx2,
    l2sq_h: x86::l2sq_h_avx2,
    widen: x86::widen_avx2,
};

#[cfg(target_arch = "x86_64")]
static AVX2: Kernels = AVX2_KERNELS;

/// The AVX-512F kernels: the float kernels of their own, the AVX2 table's elsewhere. A family
/// takes its AVX-512 kernel only where that was measured faster than the AVX2 one on the same
/// CPU (`cargo bench --bench distance`, `cargo bench --bench engine`), so the level the
/// dispatcher picks is never slower than the one it passes over; measured on Intel Xeon (5th
/// gen); AMD Zen 4 runs the same kernels, its 512-bit operations as two 256-bit halves.
#[cfg(target_arch = "x86_64")]
const AVX512_KERNELS: Kernels = Kernels {
    level: Level::Avx512,
    dot: x86::dot_avx512,
    l2sq: x86::l2sq_avx512,
    dot_block: x86::dot_block_avx512,
    dot_u8: x86::dot_u8_avx512,
    ..AVX2_KERNELS
};

#[cfg(target_arch = "x86_64")]
static AVX512: Kernels = AVX512_KERNELS;

/// AVX-512 with BW, VL and VNNI (every AVX-512 CPU since Cascade Lake and Zen 4): the integer
/// code kernels too.
#[cfg(target_arch = "x86_64")]
static AVX512_VNNI: Kernels = Kernels {
    dot_u4_i8: x86::dot_u4_i8_vnni,
    dot4_u4_i8: x86::dot4_u4_i8_vnni,
    dot_u8_i8: x86::dot_u8_i8_vnni,
    ..AVX512_KERNELS
};

#[cfg(target_arch = "aarch64")]
static NEON: Kernels = Kernels {
    level: Level::Neon,
    dot: aarch64::dot_neon,
    l2sq: aarch64::l2sq_neon,
    dot_block: aarch64::dot_block_neon,
    dot_u8: aarch64::dot_u8_neon,
    // The rest are scalar (count_ones compiles to NEON's cnt on every AArch64 target).
    ..SCALAR_KERNELS
};

impl Kernels {
    /// The kernels for `level`, or `None` when this CPU cannot run them.
    pub fn for_level(level: Level) -> Option<&'static Kernels> {
        match level {
            Level::Scalar => Some(&SCALAR),
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => avx2_and_f16c().then_some(&AVX2),
            // The AVX-512 table reuses AVX2 kernels where it has none of its own.
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => {
                if !(std::is_x86_feature_detected!("avx512f") && avx2_and_f16c()) {
                    None
                } else if std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512vnni")
                {
                    Some(&AVX512_VNNI)
                } else {
                    Some(&AVX512)
                }
            }
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

/// Whether this CPU runs the AVX2 table: avx2 and fma, and f16c for its float16 kernels
/// (every CPU with AVX2 has it).
#[cfg(target_arch = "x86_64")]
fn avx2_and_f16c() -> bool {
    std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
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

#[cfg(target_arch = "aarch64")]
mod aarch64;
pub mod scalar;
mod tiles;
#[cfg(target_arch = "x86_64")]
mod x86;

pub(crate) use tiles::prefetch_rows;
