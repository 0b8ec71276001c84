//! Quantizers: compact codes of a segment's vectors that graph search traverses instead of
//! the floats, re-ranking its final candidates with exact distances. Each quantizer trains on
//! and encodes a segment (`train`), scores a prepared query against any coded row (`scorer`),
//! and writes its section of an index file. `Codes` dispatches on `QuantKind` once per search,
//! outside the hot loop; a new quantizer is a new file here and a new arm there.

pub(crate) mod rabitq;
pub(crate) mod sq4;
pub(crate) mod sq8;

use arrow_buffer::Buffer;

use crate::distance::Metric;
use crate::options::QuantKind;
use crate::vector::{Scorer, VectorView};

/// What every quantizer provides.
pub(crate) trait Quantizer: Sized {
    /// Distances from one query to coded rows.
    type Scorer<'a>: Scorer
    where
        Self: 'a;
    /// The scorer of `query`, prepared for `metric` (see `Metric::prepare_query`).
    fn scorer<'a>(&'a self, metric: Metric, query: &[f32]) -> Self::Scorer<'a>;
    /// Rows coded.
    fn rows(&self) -> usize;
    /// Dimensions per row.
    fn dim(&self) -> usize;
    /// Bytes of the file section when it starts at file offset `at` (a multiple of four).
    fn section_bytes(&self, at: usize) -> usize;
    /// Appends the file section; `out` holds the file image up to it.
    fn write(&self, out: &mut Vec<u8>);
}

/// The codes an index holds, of whichever kind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Codes {
    Sq8(sq8::Sq8),
    Sq4(sq4::Sq4),
    RaBitQ(rabitq::RaBitQ),
}

/// Applies `$body` to the quantizer inside `$codes`, bound to `$c`.
macro_rules! with_codes {
    ($codes:expr, |$c:ident| $body:expr) => {
        match $codes {
            $crate::quant::Codes::Sq8($c) => $body,
            $crate::quant::Codes::Sq4($c) => $body,
            $crate::quant::Codes::RaBitQ($c) => $body,
        }
    };
}
pub(crate) use with_codes;

impl Codes {
    /// Trains the quantizer `kind` names on `view` (`None` for `QuantKind::None`). RaBitQ
    /// codes are centred on the mean of the rows.
    pub(crate) fn train(kind: QuantKind, view: &VectorView<'_>) -> Option<Codes> {
        let rows: Vec<u32> = (0..view.len() as u32).collect();
        Codes::train_rows(kind, view, &rows)
    }

    /// As `train`, with code i of row `rows[i]` (every row, in any order).
    pub(crate) fn train_rows(
        kind: QuantKind,
        view: &VectorView<'_>,
        rows: &[u32],
    ) -> Option<Codes> {
        let (centre, bits, rotated) = match kind {
            QuantKind::None => return None,
            QuantKind::Sq8 => return Some(Codes::Sq8(sq8::Sq8::train_rows(view, Some(rows)))),
            QuantKind::Sq4 => return Some(Codes::Sq4(sq4::Sq4::train_rows(view, Some(rows)))),
            QuantKind::Binary => (vec![0f32; view.dim()], 1, false),
            QuantKind::RaBitQ(bits) => (mean(view), usize::from(bits), true),
        };
        let codes = rabitq::RaBitQ::encode(view, rows, centre, &|_| 0, bits, rotated);
        Some(Codes::RaBitQ(codes))
    }

    /// Which kind these codes are.
    pub(crate) fn kind(&self) -> QuantKind {
        match self {
            Codes::Sq8(_) => QuantKind::Sq8,
            Codes::Sq4(_) => QuantKind::Sq4,
            Codes::RaBitQ(c) if !c.rotated() => QuantKind::Binary,
            Codes::RaBitQ(c) => QuantKind::RaBitQ(c.bits() as u8),
        }
    }

    /// Rows coded.
    pub(crate) fn rows(&self) -> usize {
        with_codes!(self, |c| c.rows())
    }

    /// Dimensions per row.
    pub(crate) fn dim(&self) -> usize {
        with_codes!(self, |c| Quantizer::dim(c))
    }

    /// Appends the file section.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        with_codes!(self, |c| c.write(out))
    }

    /// Bytes of the file section when it starts at file offset `at`.
    pub(crate) fn section_bytes(&self, at: usize) -> usize {
        with_codes!(self, |c| c.section_bytes(at))
    }

    /// Reads a section of `kind` (with `centres` centres, for RaBitQ) written by `write` at
    /// file offset `at`; returns the codes and the bytes read.
    pub(crate) fn read(
        kind: QuantKind,
        buffer: &Buffer,
        at: usize,
        rows: usize,
        dim: usize,
        centres: usize,
    ) -> Result<(Option<Codes>, usize), String> {
        Ok(match kind {
            QuantKind::None => (None, 0),
            QuantKind::Sq8 => {
                let (c, used) = sq8::Sq8::read(buffer, at, rows, dim)?;
                (Some(Codes::Sq8(c)), used)
            }
            QuantKind::Sq4 => {
                let (c, used) = sq4::Sq4::read(buffer, at, rows, dim)?;
                (Some(Codes::Sq4(c)), used)
            }
            QuantKind::Binary | QuantKind::RaBitQ(_) => {
                let (bits, rotated) = match kind {
                    QuantKind::RaBitQ(b) => (usize::from(b), true),
                    _ => (1, false),
                };
                let (c, used) =
                    rabitq::RaBitQ::read(buffer, at, rows, dim, centres, bits, rotated)?;
                (Some(Codes::RaBitQ(c)), used)
            }
        })
    }

    /// How many times `ef` candidates an index re-ranks exactly over these codes (coarser
    /// codes rank the true neighbours lower, so more are re-ranked).
    pub(crate) fn oversample(&self) -> usize {
        match self.kind() {
            QuantKind::Binary => 8,
            QuantKind::RaBitQ(1) => 4,
            QuantKind::RaBitQ(2) => 2,
            _ => 1,
        }
    }

    /// How many of a traversal's nearest candidates are re-ranked exactly for `k` results:
    /// scalar codes order candidates closely enough that the true k nearest are among their
    /// first 4k (on minilm-words recall is unchanged down to 2k at every ef with 8-bit codes,
    /// and with 4-bit ones it equals re-ranking the whole beam at every ef), so a wide beam
    /// reads only those rows' floats; the other codes re-rank the whole beam.
    pub(crate) fn rerank_depth(&self, k: usize) -> usize {
        match self.kind() {
            QuantKind::Sq8 | QuantKind::Sq4 => (4 * k).max(32),
            _ => usize::MAX,
        }
    }
}

/// The file header's word for a quantization: 0 none, 1 sq8, 2 binary, 16 + bits RaBitQ.
pub(crate) fn quant_tag(kind: QuantKind) -> u32 {
    match kind {
        QuantKind::None => 0,
        QuantKind::Sq8 => 1,
        QuantKind::Binary => 2,
        QuantKind::Sq4 => 3,
        QuantKind::RaBitQ(b) => 16 + u32::from(b),
    }
}

/// The quantization a file header's word names.
pub(crate) fn quant_of_tag(tag: u32) -> Option<QuantKind> {
    match tag {
        0 => Some(QuantKind::None),
        1 => Some(QuantKind::Sq8),
        2 => Some(QuantKind::Binary),
        3 => Some(QuantKind::Sq4),
        t if (17..=16 + rabitq::MAX_BITS as u32).contains(&t) => {
            Some(QuantKind::RaBitQ((t - 16) as u8))
        }
        _ => None,
    }
}

/// `x` rounded to the nearest integer, halves away from zero like `f32::round` (a value just
/// below a half may round up), without its library call: x86-64's baseline has no rounding
/// instruction, and quantizing a query rounds once per dimension.
#[inline]
pub(crate) fn round_half_away(x: f32) -> i32 {
    (x + 0.5f32.copysign(x)) as i32
}

/// The mean of `view`'s rows as its search sees them (normalized for cosine).
pub(crate) fn mean(view: &VectorView<'_>) -> Vec<f32> {
    use rayon::prelude::*;
    let dim = view.dim();
    let n = view.len().max(1) as f64;
    let sums = (0..view.len())
        .into_par_iter()
        .fold(
            || vec![0f64; dim],
            |mut acc, i| {
                for (a, &v) in acc.iter_mut().zip(view.normalized_row(i).iter()) {
                    *a += f64::from(v);
                }
                acc
            },
        )
        .reduce(
            || vec![0f64; dim],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        );
    sums.iter().map(|s| (s / n) as f32).collect()
}

/// A 64-bit mix of `x` (splitmix64's finalizer): seeds levels, rotations and samples.
pub(crate) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// `n` rows of `dim` values spread evenly over [-0.5, 0.5), the same for every call (tests).
#[cfg(test)]
pub(crate) fn uniform_rows(n: usize, dim: usize) -> Vec<f32> {
    (0..n * dim)
        .map(|i| (splitmix(i as u64) % 10_000) as f32 / 10_000.0 - 0.5)
        .collect()
}
