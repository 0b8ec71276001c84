//! 4-bit scalar quantization: each dimension is mapped linearly onto 0..=15 over its own range
//! in the segment (for cosine, of the normalized vectors), as sq8 does onto 0..=255. An eighth
//! of the bytes of the floats, half of sq8's: a graph traverses twice as many codes per cache
//! line, and re-ranks the beam's nearest `max(4k, 32)` exactly (`Codes::rerank_depth`) to
//! make up for the coarser order.
//!
//! A row is `padded / 2` bytes (the dimension rounded up to 32; the padding codes are 0): per
//! block of 32 dimensions, byte `j` holds dimension `j` in its low nibble and `j + 16` in its
//! high one. The query's weights `q·step` are rounded to signed 8-bit integers and put in the
//! `dot_u4_i8` kernel's nibble order, so a row scores with one integer kernel call.
//!
//! File section: `lo` and `step` (dim f32 each), the decoded squared norms (rows f32), zero
//! padding to a multiple of 64 bytes of the file (so no row straddles more cache lines than
//! it fills), then the rows' codes.

use arrow_buffer::{Buffer, ScalarBuffer};
use rayon::prelude::*;

use super::sq8::{ranges, rank, write_floats};
use super::{round_half_away, Quantizer};
use crate::distance::scalar::nibble_order;
use crate::distance::{kernels, prefetch_rows, Metric};
use crate::vector::{Scorer, VectorView};

/// The largest code.
const LEVELS: f32 = 15.0;
/// The largest |weight| of a rounded query.
const MOST: f32 = 127.0;
/// Where the codes start in the file: a cache line boundary.
const ALIGN: usize = 64;

/// 4-bit codes of a segment's vectors.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sq4 {
    dim: usize,
    /// Per dimension: the value of code 0 and the step between codes.
    lo: ScalarBuffer<f32>,
    step: ScalarBuffer<f32>,
    /// Per row: the squared norm of the decoded vector (for l2).
    sq: ScalarBuffer<f32>,
    /// `rows × row_bytes(dim)` codes.
    codes: ScalarBuffer<u8>,
}

/// Bytes per row: half the dimension rounded up to 32.
fn row_bytes(dim: usize) -> usize {
    dim.next_multiple_of(32) / 2
}

/// The byte and shift of dimension `d` in a row (see the module's layout).
fn place(d: usize) -> (usize, u32) {
    let (block, j) = (d / 32, d % 32);
    (block * 16 + j % 16, if j < 16 { 0 } else { 4 })
}

impl Sq4 {
    #[inline]
    fn row(&self, i: u32) -> &[u8] {
        let b = row_bytes(self.dim);
        &self.codes[i as usize * b..(i as usize + 1) * b]
    }

    /// Learns each dimension's range from the rows `rows` names (code i is of row `rows[i]`),
    /// or every row of `view`, and encodes them.
    pub(crate) fn train_rows(view: &VectorView<'_>, rows: Option<&[u32]>) -> Sq4 {
        let dim = view.dim();
        let n = rows.map_or(view.len(), <[u32]>::len);
        let row = |i: usize| rows.map_or(i, |r| r[i] as usize);
        let (lo, step) = ranges(view, rows, LEVELS);
        let mut codes = vec![0u8; n * row_bytes(dim)];
        let sq: Vec<f32> = codes
            .par_chunks_mut(row_bytes(dim).max(1))
            .enumerate()
            .map(|(i, out)| {
                let mut sq = 0.0;
                for (d, &v) in view.normalized_row(row(i)).iter().enumerate() {
                    let c = ((v - lo[d]) / step[d]).round().clamp(0.0, LEVELS);
                    let (byte, shift) = place(d);
                    out[byte] |= (c as u8) << shift;
                    let decoded = lo[d] + step[d] * c;
                    sq += decoded * decoded;
                }
                sq
            })
            .collect();
        Sq4 {
            dim,
            lo: lo.into(),
            step: step.into(),
            sq: sq.into(),
            codes: codes.into(),
        }
    }

    /// The code of dimension `d` of row `i`.
    #[cfg(test)]
    fn code(&self, i: u32, d: usize) -> u8 {
        let (byte, shift) = place(d);
        (self.row(i)[byte] >> shift) & 15
    }

    /// Bytes from file offset `at` to the codes: the header floats, then the alignment.
    fn header_len(at: usize, rows: usize, dim: usize) -> usize {
        let floats = (2 * dim + rows) * 4;
        (at + floats).next_multiple_of(ALIGN) - at
    }

    fn section_len(at: usize, rows: usize, dim: usize) -> usize {
        (Sq4::header_len(at, rows, dim) + rows * row_bytes(dim)).next_multiple_of(4)
    }

    /// Reads a section written by `write` from `buffer` at byte `at` (in place, no copy);
    /// returns the codes and the bytes read.
    pub(crate) fn read(
        buffer: &Buffer,
        at: usize,
        rows: usize,
        dim: usize,
    ) -> Result<(Sq4, usize), String> {
        let len = Sq4::section_len(at, rows, dim);
        if !at.is_multiple_of(4) || at + len > buffer.len() {
            return Err("code section runs past the end of the file".into());
        }
        let floats =
            |word: usize, len: usize| ScalarBuffer::<f32>::new(buffer.clone(), at / 4 + word, len);
        let start = at + Sq4::header_len(at, rows, dim);
        let codes = Sq4 {
            dim,
            lo: floats(0, dim),
            step: floats(dim, dim),
            sq: floats(2 * dim, rows),
            codes: ScalarBuffer::<u8>::new(buffer.clone(), start, rows * row_bytes(dim)),
        };
        Ok((codes, len))
    }
}

impl Quantizer for Sq4 {
    type Scorer<'a> = Sq4Scorer<'a>;

    fn scorer<'a>(&'a self, metric: Metric, q: &[f32]) -> Sq4Scorer<'a> {
        let mut weights = vec![0f32; 2 * row_bytes(self.dim)];
        for (d, (q, s)) in q.iter().zip(self.step.iter()).enumerate() {
            weights[d] = q * s;
        }
        let largest = weights.iter().fold(0f32, |m, w| m.max(w.abs()));
        let scale = if largest > 0.0 && largest.is_finite() {
            largest / MOST
        } else {
            1.0
        };
        let dot = kernels().dot;
        let mut rounded: Vec<i8> = weights
            .iter()
            .map(|w| round_half_away((w / scale).clamp(-MOST, MOST)) as i8)
            .collect();
        nibble_order(&mut rounded);
        Sq4Scorer {
            codes: self,
            metric,
            weights: rounded,
            scale,
            bias: dot(q, &self.lo),
            qn2: dot(q, q),
            // About 24 cache lines in flight: eight codes of 384 dimensions (three lines
            // each) measured 4-14% faster than four on minilm-words and 2-9% on
            // minilm-phrases 1M (prefetching every neighbour at once was slower there);
            // longer codes go fewer ahead.
            ahead: (24 * 64 / row_bytes(self.dim)).clamp(2, 8),
        }
    }

    fn rows(&self) -> usize {
        self.sq.len()
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn section_bytes(&self, at: usize) -> usize {
        Sq4::section_len(at, self.rows(), self.dim)
    }

    fn write(&self, out: &mut Vec<u8>) {
        let at = out.len();
        write_floats([&self.lo, &self.step, &self.sq], out);
        out.resize(at + Sq4::header_len(at, self.rows(), self.dim), 0);
        out.extend_from_slice(&self.codes);
        out.resize(at + Sq4::section_len(at, self.rows(), self.dim), 0);
    }
}

/// Approximate distances from a prepared query to coded rows.
pub(crate) struct Sq4Scorer<'a> {
    codes: &'a Sq4,
    metric: Metric,
    /// `q·step` per dimension (zero past the dimension), rounded to `scale` units, in the
    /// kernel's nibble order.
    weights: Vec<i8>,
    scale: f32,
    /// `q · lo`.
    bias: f32,
    /// `|q|²` (l2).
    qn2: f32,
    /// How many codes ahead a search prefetches.
    ahead: usize,
}

impl Scorer for Sq4Scorer<'_> {
    #[inline]
    fn dist(&self, i: u32) -> f32 {
        let int = (kernels().dot_u4_i8)(self.codes.row(i), &self.weights);
        let ip = self.bias + self.scale * int as f32;
        rank(self.metric, ip, self.qn2, &self.codes.sq, i)
    }
    #[inline]
    fn dist4(&self, ids: [u32; 4]) -> [f32; 4] {
        let ints = (kernels().dot4_u4_i8)(ids.map(|i| self.codes.row(i)), &self.weights);
        std::array::from_fn(|k| {
            let ip = self.bias + self.scale * ints[k] as f32;
            rank(self.metric, ip, self.qn2, &self.codes.sq, ids[k])
        })
    }
    #[inline]
    fn lookahead(&self) -> usize {
        self.ahead
    }
    #[inline]
    fn prefetch(&self, i: u32) {
        let b = row_bytes(self.codes.dim);
        prefetch_rows(&self.codes.codes, i as usize * b, b);
    }
    fn len(&self) -> usize {
        self.codes.sq.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, dim: usize) -> Vec<f32> {
        (0..n * dim)
            .map(|i| ((i * 37 + i / 7) % 101) as f32 / 50.0 - 1.0)
            .collect()
    }

    /// Calls `check` with each metric, `n` rows of `dim` test data under it and their codes.
    fn for_each_metric(n: usize, dim: usize, check: impl Fn(Metric, &VectorView<'_>, &Sq4)) {
        let rows = data(n, dim);
        for metric in [Metric::Cosine, Metric::L2, Metric::Dot] {
            let view = VectorView::new(&rows, dim, metric);
            check(metric, &view, &Sq4::train_rows(&view, None));
        }
    }

    #[test]
    fn scores_equal_the_decoded_rows_dot_product() {
        // 40 dimensions: one whole block of 32 and a padded one.
        let dim = 40;
        for_each_metric(64, dim, |metric, view, codes| {
            let q = view.prepare(&view.row(5));
            let scorer = codes.scorer(metric, &q);
            for i in 0..64u32 {
                let decoded: Vec<f32> = (0..dim)
                    .map(|d| codes.lo[d] + codes.step[d] * f32::from(codes.code(i, d)))
                    .collect();
                let norm2: f32 = decoded.iter().map(|v| v * v).sum();
                let x = if metric == Metric::L2 { norm2 } else { 1.0 };
                let ip: f32 = q.iter().zip(&decoded).map(|(a, b)| a * b).sum();
                let want = metric.rank(ip, scorer.qn2, x);
                // Only the query's 8-bit weights separate the two: at most half a unit of
                // `scale` per dimension, times a code of at most 15.
                let bound = 0.5 * scorer.scale * LEVELS * dim as f32 * 2.0 + 1e-4;
                let got = scorer.dist(i);
                assert!(
                    (got - want).abs() <= bound,
                    "{metric} row {i}: {got} vs {want}"
                );
                assert!((codes.sq[i as usize] - norm2).abs() < 1e-3);
            }
            // Four rows at once score exactly as one at a time.
            for ids in [[0u32, 1, 2, 3], [63, 5, 17, 5], [40, 12, 0, 33]] {
                assert_eq!(scorer.dist4(ids), ids.map(|i| scorer.dist(i)), "{metric}");
            }
        });
    }

    #[test]
    fn codes_round_trip_at_any_offset_and_rank_close_to_exact() {
        let dim = 64;
        for_each_metric(50, dim, |metric, view, codes| {
            for at in [0, 4, 60, 100] {
                let mut bytes = vec![7u8; at];
                codes.write(&mut bytes);
                assert_eq!(bytes.len(), at + codes.section_bytes(at));
                let image = Buffer::from(bytes);
                let (read, used) = Sq4::read(&image, at, 50, dim).unwrap();
                assert_eq!((&read, used), (codes, codes.section_bytes(at)));
                assert!(
                    Sq4::read(&image, at, 51, dim).is_err(),
                    "a short section is refused"
                );
            }
            let q = view.prepare(&view.row(3));
            let scorer = codes.scorer(metric, &q);
            let exact: Vec<f32> = (0..50).map(|i| view.dist(&q, i)).collect();
            let spread = exact.iter().fold(f32::NEG_INFINITY, |m, &d| m.max(d))
                - exact.iter().fold(f32::INFINITY, |m, &d| m.min(d));
            for (i, &want) in exact.iter().enumerate() {
                let got = scorer.dist(i as u32);
                assert!(
                    (got - want).abs() < 0.1 * spread,
                    "{metric} row {i}: {got} vs {want} (spread {spread})"
                );
            }
        });
    }
}
