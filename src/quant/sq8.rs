//! 8-bit scalar quantization: each dimension is mapped linearly onto 0..=255 over its own
//! range in the segment (for cosine, of the normalized vectors). A quarter of the bytes of
//! the floats; `q · x̃` is `Σ q·lo + Σ (q·step)·code`, one f32×u8 kernel call per row.
//!
//! File section: `lo` and `step` (dim f32 each), the decoded squared norms (rows f32), then
//! the rows × dim code bytes, zero-padded to a multiple of four.

use arrow_buffer::{Buffer, ScalarBuffer};
use rayon::prelude::*;

use super::{round_half_away, Quantizer};
use crate::distance::{kernels, prefetch_rows, Metric};
use crate::vector::{Scorer, VectorView};

/// 8-bit codes of a segment's vectors.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sq8 {
    dim: usize,
    /// Per dimension: the value of code 0 and the step between codes.
    lo: ScalarBuffer<f32>,
    step: ScalarBuffer<f32>,
    /// Per row: the squared norm of the decoded vector (for l2).
    sq: ScalarBuffer<f32>,
    /// `rows × dim` codes, row-major.
    codes: ScalarBuffer<u8>,
}

impl Sq8 {
    #[inline]
    fn row(&self, i: u32) -> &[u8] {
        let i = i as usize;
        &self.codes[i * self.dim..(i + 1) * self.dim]
    }
}

impl Sq8 {
    /// Learns each dimension's range from the rows `rows` names (code i is of row `rows[i]`),
    /// or every row of `view`, and encodes them.
    pub(crate) fn train_rows(view: &VectorView<'_>, rows: Option<&[u32]>) -> Sq8 {
        let dim = view.dim();
        let n = rows.map_or(view.len(), <[u32]>::len);
        let row = |i: usize| rows.map_or(i, |r| r[i] as usize);
        let (lo, step) = ranges(view, rows, 255.0);
        let mut codes = vec![0u8; n * dim];
        let sq: Vec<f32> = codes
            .par_chunks_mut(dim.max(1))
            .enumerate()
            .map(|(i, out)| {
                let mut sq = 0.0;
                for (d, (&v, c)) in view
                    .normalized_row(row(i))
                    .iter()
                    .zip(out.iter_mut())
                    .enumerate()
                {
                    *c = ((v - lo[d]) / step[d]).round().clamp(0.0, 255.0) as u8;
                    let decoded = lo[d] + step[d] * *c as f32;
                    sq += decoded * decoded;
                }
                sq
            })
            .collect();
        Sq8 {
            dim,
            lo: lo.into(),
            step: step.into(),
            sq: sq.into(),
            codes: codes.into(),
        }
    }

    fn section_len(rows: usize, dim: usize) -> usize {
        (2 * dim + rows) * 4 + (rows * dim).next_multiple_of(4)
    }

    /// Reads a section written by `write` from `buffer` at byte `at` (in place, no copy);
    /// returns the codes and the bytes read.
    pub(crate) fn read(
        buffer: &Buffer,
        at: usize,
        rows: usize,
        dim: usize,
    ) -> Result<(Sq8, usize), String> {
        let len = Sq8::section_len(rows, dim);
        if !at.is_multiple_of(4) || at + len > buffer.len() {
            return Err("code section runs past the end of the file".into());
        }
        let floats =
            |word: usize, len: usize| ScalarBuffer::<f32>::new(buffer.clone(), at / 4 + word, len);
        let codes = Sq8 {
            dim,
            lo: floats(0, dim),
            step: floats(dim, dim),
            sq: floats(2 * dim, rows),
            codes: ScalarBuffer::<u8>::new(buffer.clone(), at + (2 * dim + rows) * 4, rows * dim),
        };
        Ok((codes, len))
    }
}

/// Each dimension's lowest value over the rows `rows` names (every row of `view` when `None`,
/// normalized for cosine) and the step that spreads its range over `levels` steps (1 for a
/// constant dimension).
pub(super) fn ranges(
    view: &VectorView<'_>,
    rows: Option<&[u32]>,
    levels: f32,
) -> (Vec<f32>, Vec<f32>) {
    let dim = view.dim();
    let n = rows.map_or(view.len(), <[u32]>::len);
    let row = |i: usize| rows.map_or(i, |r| r[i] as usize);
    let empty = || (vec![f32::INFINITY; dim], vec![f32::NEG_INFINITY; dim]);
    let (lo, hi) = (0..n)
        .into_par_iter()
        .fold(empty, |(mut lo, mut hi), i| {
            for (d, &v) in view.normalized_row(row(i)).iter().enumerate() {
                lo[d] = lo[d].min(v);
                hi[d] = hi[d].max(v);
            }
            (lo, hi)
        })
        .reduce(empty, |(a, b), (c, d)| {
            let lo = a.iter().zip(&c).map(|(x, y)| x.min(*y)).collect();
            let hi = b.iter().zip(&d).map(|(x, y)| x.max(*y)).collect();
            (lo, hi)
        });
    let lo: Vec<f32> = lo
        .iter()
        .map(|&v| if v.is_finite() { v } else { 0.0 })
        .collect();
    let step = lo
        .iter()
        .zip(&hi)
        .map(|(&l, &h)| {
            let s = (h - l) / levels;
            if s > 0.0 && s.is_finite() {
                s
            } else {
                1.0
            }
        })
        .collect();
    (lo, step)
}

/// Appends the f32 parts of a scalar-code section (`lo`, `step`, the decoded squared norms).
pub(super) fn write_floats(parts: [&ScalarBuffer<f32>; 3], out: &mut Vec<u8>) {
    for part in parts {
        for v in part.iter() {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// The ranking distance of coded row `i` from its dot product `ip` with the query (`qn2`:
/// `|q|²`; `sq`: the decoded rows' squared norms, used for l2).
#[inline]
pub(super) fn rank(metric: Metric, ip: f32, qn2: f32, sq: &[f32], i: u32) -> f32 {
    // Cosine codes are of unit vectors: |x| = 1.
    let x = match metric {
        Metric::L2 => sq[i as usize],
        _ => 1.0,
    };
    metric.rank(ip, qn2, x)
}

impl Quantizer for Sq8 {
    type Scorer<'a> = Sq8Scorer<'a>;

    fn scorer<'a>(&'a self, metric: Metric, q: &[f32]) -> Sq8Scorer<'a> {
        let weights: Vec<f32> = q.iter().zip(self.step.iter()).map(|(q, s)| q * s).collect();
        let dot = kernels().dot;
        Sq8Scorer {
            codes: self,
            metric,
            weights: Weights::of(weights),
            bias: dot(q, &self.lo),
            qn2: dot(q, q),
        }
    }

    fn rows(&self) -> usize {
        self.sq.len()
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn section_bytes(&self, _at: usize) -> usize {
        Sq8::section_len(self.rows(), self.dim)
    }

    fn write(&self, out: &mut Vec<u8>) {
        write_floats([&self.lo, &self.step, &self.sq], out);
        out.extend_from_slice(&self.codes);
        out.resize(out.len().next_multiple_of(4), 0);
    }
}

/// The largest |value| of a 16-bit query: its sum over `dim` codes (each at most 255) must
/// fit an i32, and below 2,048 levels the f32 kernel is used instead.
fn int_weight_limit(dim: usize) -> f32 {
    (i32::MAX as f32 / (255.0 * dim.max(1) as f32))
        .min(32_767.0)
        .floor()
}

/// The query's per-dimension weights, what a code is dotted with.
#[derive(Debug, PartialEq)]
enum Weights {
    /// Rounded to i16, with the scale that turns their integer dot product with a code back
    /// into the float one (`Σ w·c ≈ scale · Σ wᵢ·c`).
    Int(Vec<i16>, f32),
    /// As they are: the dimension is too large for 16-bit weights to keep their precision,
    /// or every weight is zero.
    Float(Vec<f32>),
}

impl Weights {
    /// Rounding each weight to one part in at least 2,048 of the largest moves a distance far
    /// less than the 8-bit codes themselves do.
    fn of(weights: Vec<f32>) -> Weights {
        let limit = int_weight_limit(weights.len());
        let largest = weights.iter().fold(0f32, |m, w| m.max(w.abs()));
        if limit < 2_048.0 || !largest.is_finite() || largest == 0.0 {
            return Weights::Float(weights);
        }
        let scale = largest / limit;
        let ints = weights
            .iter()
            .map(|w| round_half_away((w / scale).clamp(-limit, limit)) as i16)
            .collect();
        Weights::Int(ints, scale)
    }
}

/// Approximate distances from a prepared query to coded rows.
pub(crate) struct Sq8Scorer<'a> {
    codes: &'a Sq8,
    metric: Metric,
    weights: Weights,
    bias: f32,
    /// `|q|²` (l2).
    qn2: f32,
}

impl Scorer for Sq8Scorer<'_> {
    #[inline]
    fn dist(&self, i: u32) -> f32 {
        let code = self.codes.row(i);
        let ip = self.bias
            + match &self.weights {
                Weights::Int(w, scale) => scale * (kernels().dot_u8_i16)(code, w) as f32,
                Weights::Float(w) => (kernels().dot_u8)(w, code),
            };
        rank(self.metric, ip, self.qn2, &self.codes.sq, i)
    }
    #[inline]
    fn prefetch(&self, i: u32) {
        let d = self.codes.dim;
        prefetch_rows(&self.codes.codes, i as usize * d, d);
    }
    fn len(&self) -> usize {
        self.codes.sq.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_query_scores_equal_the_float_ones_closely() {
        let dim = 384;
        let mut state = 7u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let data: Vec<f32> = (0..200 * dim).map(|_| next()).collect();
        for metric in [Metric::Cosine, Metric::L2, Metric::Dot] {
            let view = VectorView::new(&data, dim, metric);
            let codes = Sq8::train_rows(&view, None);
            let q = view.prepare(&(0..dim).map(|_| next()).collect::<Vec<_>>());
            let scorer = codes.scorer(metric, &q);
            let weights: Vec<f32> = q
                .iter()
                .zip(codes.step.iter())
                .map(|(q, s)| q * s)
                .collect();
            assert!(
                matches!(scorer.weights, Weights::Int(..)),
                "dimension 384 scores with 16-bit weights"
            );
            for i in 0..200 {
                let ip = scorer.bias + crate::distance::scalar::dot_u8(&weights, codes.row(i));
                let x = if metric == Metric::L2 {
                    codes.sq[i as usize]
                } else {
                    1.0
                };
                let float = metric.rank(ip, scorer.qn2, x);
                let got = scorer.dist(i);
                // The codes' own rounding moves these scores by about 6e-3.
                assert!(
                    (got - float).abs() < 5e-4,
                    "{metric} row {i}: {got} vs {float}"
                );
            }
        }
        // Past the dimension where 16-bit weights would lose precision, f32 weights score.
        assert!(matches!(Weights::of(vec![0.5; 9_000]), Weights::Float(_)));
        assert_eq!(Weights::of(vec![0.0; 8]), Weights::Float(vec![0.0; 8]));
        assert!(
            matches!(Weights::of(vec![1.0, -0.5]), Weights::Int(w, _) if w == [32_767, -16_384])
        );
    }

    #[test]
    fn codes_round_trip_and_score_close_to_exact() {
        let dim = 8;
        let data: Vec<f32> = (0..64 * dim)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        for metric in [Metric::Cosine, Metric::L2, Metric::Dot] {
            let view = VectorView::new(&data, dim, metric);
            let codes = Sq8::train_rows(&view, None);
            let mut bytes = Vec::new();
            codes.write(&mut bytes);
            assert_eq!(bytes.len(), codes.section_bytes(0));
            let (read, used) = Sq8::read(&Buffer::from(bytes), 0, 64, dim).unwrap();
            assert_eq!((&read, used), (&codes, Sq8::section_len(64, dim)));
            let q = view.prepare(&view.row(3));
            let scorer = codes.scorer(metric, &q);
            for i in 0..64 {
                let (approx, exact) = (scorer.dist(i), view.dist(&q, i));
                assert!(
                    (approx - exact).abs() < 0.05,
                    "{metric} row {i}: {approx} vs {exact}"
                );
            }
        }
    }
}
