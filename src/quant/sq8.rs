//! 8-bit scalar quantization: each dimension is mapped linearly onto 0..=255 over its own
//! range in the segment (for cosine, of the normalized vectors). A quarter of the bytes of
//! the floats; `q · x̃` is `Σ q·lo + Σ (q·step)·code`, one f32×u8 kernel call per row.
//!
//! File section: `lo` and `step` (dim f32 each), the decoded squared norms (rows f32), then
//! the rows × dim code bytes, zero-padded to a multiple of four.

use arrow_buffer::{Buffer, ScalarBuffer};
use rayon::prelude::*;

use super::Quantizer;
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
        let step: Vec<f32> = lo
            .iter()
            .zip(&hi)
            .map(|(&l, &h)| {
                let s = (h - l) / 255.0;
                if s > 0.0 && s.is_finite() {
                    s
                } else {
                    1.0
                }
            })
            .collect();
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

impl Quantizer for Sq8 {
    type Scorer<'a> = Sq8Scorer<'a>;

    fn scorer<'a>(&'a self, metric: Metric, q: &[f32]) -> Sq8Scorer<'a> {
        let weights = q.iter().zip(self.step.iter()).map(|(q, s)| q * s).collect();
        let dot = kernels().dot;
        Sq8Scorer {
            codes: self,
            metric,
            weights,
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
        for part in [&self.lo, &self.step, &self.sq] {
            for v in part.iter() {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out.extend_from_slice(&self.codes);
        out.resize(out.len().next_multiple_of(4), 0);
    }
}

/// Approximate distances from a prepared query to coded rows.
pub(crate) struct Sq8Scorer<'a> {
    codes: &'a Sq8,
    metric: Metric,
    weights: Vec<f32>,
    bias: f32,
    /// `|q|²` (l2).
    qn2: f32,
}

impl Scorer for Sq8Scorer<'_> {
    #[inline]
    fn dist(&self, i: u32) -> f32 {
        let ip = self.bias + (kernels().dot_u8)(&self.weights, self.codes.row(i));
        // Cosine codes are of unit vectors: |x| = 1.
        let x = match self.metric {
            Metric::L2 => self.codes.sq[i as usize],
            _ => 1.0,
        };
        self.metric.rank(ip, self.qn2, x)
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
