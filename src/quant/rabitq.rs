//! RaBitQ codes (Gao and Long, SIGMOD 2024, and its extended multi-bit form, SIGMOD 2025):
//! each vector's offset from a centre, turned by a random rotation, is stored as a `B`-bit
//! unsigned integer per dimension (1 to 9 bits) chosen so the code points in nearly the same
//! direction, plus one scale per row that makes the inner-product estimate unbiased:
//!
//! `o = P(x - c)`, `ȳ = code - (2^B - 1)/2`, `⟨o, v⟩ ≈ |o|/⟨ȳ, o/|o|⟩ · ⟨ȳ, v⟩`.
//!
//! Queries are rotated once and quantized, so a row is scored by an integer dot product: 1-
//! and 9-bit codes are stored as bit planes and scored against a few-bit query by popcounts
//! (`Kernels::bits_dot`); 2- to 4-bit codes as nibbles and 5- to 8-bit codes as bytes, scored
//! against a signed 8-bit query (`Kernels::dot_u4_i8`, `dot_u8_i8`). `binary` is the plain
//! 1-bit sign code the seeds plan: no rotation and no centre, the same estimator.
//!
//! One code book may hold several centres (an IVF's lists, see `index::ivf`); rows name
//! theirs through the caller, which scores them with that centre's term (`centre_term`).
//! 1-bit codes may also be laid out in blocks for fast scan (`fastscan`).
//!
//! File section (words little-endian; the section starts 4-byte aligned): the rotation
//! (`dim × dim` f32, only when rotated), the centres (`centres × dim` f32), four f32 per row
//! (scale, |o|², ⟨o, c⟩, Σ code) as four arrays, zero padding to an 8-byte file offset, then
//! the codes: per row `bits` planes of `words` u64, or `64 · words` nibbles (two per byte, see
//! `Kernels::dot_u4_i8`) or bytes, whichever `Layout::of(bits)` says.

pub(crate) mod fastscan;

use arrow_buffer::{Buffer, ScalarBuffer};
use rayon::prelude::*;

use super::{splitmix, Quantizer};
use crate::distance::scalar::nibble_order;
use crate::distance::{kernels, prefetch_rows, Kernels, Metric};
use crate::vector::{Scorer, VectorView};

/// Most bits per dimension a code may have.
pub(crate) const MAX_BITS: usize = 9;

/// Bits per dimension of the quantized query for `bits`-bit codes: enough that its rounding
/// stays well under the code's own error.
fn query_bits(bits: usize) -> usize {
    (bits + 3).clamp(4, 8)
}

/// RaBitQ (or plain binary) codes of a segment's vectors.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RaBitQ {
    dim: usize,
    bits: usize,
    /// u64 words per bit plane.
    words: usize,
    /// Whether offsets are rotated (`false`: the plain binary code).
    rotated: bool,
    /// `dim × dim`, row-major (empty when not rotated).
    rotation: ScalarBuffer<f32>,
    /// `centres × dim`, in the vectors' own space.
    centres: ScalarBuffer<f32>,
    /// Per row: `|o| / ⟨ȳ, u⟩`.
    scale: ScalarBuffer<f32>,
    /// Per row: `|o|²`.
    norm2: ScalarBuffer<f32>,
    /// Per row: `⟨o, c⟩` with its centre (l2 needs it).
    cdot: ScalarBuffer<f32>,
    /// Per row: `Σ code`.
    sum: ScalarBuffer<f32>,
    /// Per row: `bits × words` u64.
    codes: ScalarBuffer<u64>,
}

/// A Gaussian sample from two uniform 64-bit draws (Box–Muller).
fn gaussian(a: u64, b: u64) -> f32 {
    let u = ((a >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let v = (b >> 11) as f64 / (1u64 << 53) as f64;
    ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
}

/// A random orthogonal `dim × dim` matrix (row-major), the same for the same seed: Gaussian
/// rows made orthonormal by modified Gram–Schmidt.
fn rotation(dim: usize, seed: u64) -> Vec<f32> {
    let dot = kernels().dot;
    let mut m: Vec<f32> = (0..dim * dim)
        .map(|i| {
            let i = i as u64;
            gaussian(splitmix(seed ^ (2 * i)), splitmix(seed ^ (2 * i + 1)))
        })
        .collect();
    for r in 0..dim {
        let (done, rest) = m.split_at_mut(r * dim);
        let row = &mut rest[..dim];
        for _ in 0..2 {
            // Twice, so rounding leaves the rows orthogonal to working precision.
            for prev in done.chunks_exact(dim) {
                let p = dot(row, prev);
                row.iter_mut().zip(prev).for_each(|(x, y)| *x -= p * y);
            }
        }
        let n = dot(row, row).sqrt();
        if n > 1e-6 {
            row.iter_mut().for_each(|x| *x /= n);
        } else {
            // A degenerate draw (never in practice): fall back to a unit vector.
            row.iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x = f32::from(i == r));
        }
    }
    m
}

/// The `bits`-bit code of unit vector `u` (length `dim`): the grid point nearest in
/// direction among those a scale of `u` rounds to. Returns the codes and `⟨ȳ, u⟩`.
fn encode_unit(u: &[f32], bits: usize, out: &mut [u16]) -> f32 {
    let top = ((1u32 << bits) - 1) as f32;
    let h = top / 2.0;
    if bits == 1 {
        let mut ip = 0.0;
        for (c, &v) in out.iter_mut().zip(u) {
            *c = u16::from(v > 0.0);
            ip += 0.5 * v.abs();
        }
        return ip;
    }
    let max = u.iter().fold(0f32, |m, v| m.max(v.abs()));
    if max == 0.0 {
        out.iter_mut().for_each(|c| *c = h.round() as u16);
        return 0.0;
    }
    // Scales from well inside the grid to slightly past its edge (clipping the largest
    // coordinates can point the code closer to u); the best cosine wins.
    let edge = (h + 0.5) / max;
    let (mut best, mut best_t) = (f32::NEG_INFINITY, edge);
    const STEPS: usize = 40;
    for s in 0..STEPS {
        let t = edge * (0.2 + 1.0 * s as f32 / (STEPS - 1) as f32);
        let (mut ip, mut n2) = (0.0f32, 0.0f32);
        for &v in u {
            let y = (t * v + h).round().clamp(0.0, top) - h;
            ip += y * v;
            n2 += y * y;
        }
        if n2 > 0.0 {
            let cos = ip / n2.sqrt();
            if cos > best {
                best = cos;
                best_t = t;
            }
        }
    }
    let mut ip = 0.0;
    for (c, &v) in out.iter_mut().zip(u) {
        let code = (best_t * v + h).round().clamp(0.0, top);
        *c = code as u16;
        ip += (code - h) * v;
    }
    ip
}

/// How a row's codes are stored, decided by their bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `bits` planes of `words` u64 (1 and 9 bits).
    Planes,
    /// Two 4-bit codes per byte, in blocks of 32 dimensions (2 to 4 bits).
    Nibbles,
    /// One byte per dimension (5 to 8 bits).
    Bytes,
}

impl Layout {
    fn of(bits: usize) -> Layout {
        match bits {
            2..=4 => Layout::Nibbles,
            5..=8 => Layout::Bytes,
            _ => Layout::Planes,
        }
    }

    /// u64 words per row.
    fn row_words(self, bits: usize, words: usize) -> usize {
        match self {
            Layout::Planes => bits * words,
            Layout::Nibbles => 4 * words,
            Layout::Bytes => 8 * words,
        }
    }

    /// Stores integer codes (`64 · words` of them at most) into `out` (one row's words).
    fn store(self, codes: &[u16], bits: usize, words: usize, out: &mut [u64]) {
        match self {
            Layout::Planes => pack(codes, bits, words, out),
            Layout::Nibbles | Layout::Bytes => {
                // Byte `at` of the row is byte `at % 8` of word `at / 8` (little-endian).
                out.iter_mut().for_each(|w| *w = 0);
                for (i, &c) in codes.iter().enumerate() {
                    let (at, value) = if self == Layout::Bytes {
                        (i, u64::from(c as u8))
                    } else {
                        let (block, j) = (i / 32, i % 32);
                        let shift = if j < 16 { 0 } else { 4 };
                        (block * 16 + j % 16, u64::from(c as u8 & 15) << shift)
                    };
                    out[at / 8] |= value << (8 * (at % 8));
                }
            }
        }
    }
}

/// Packs integer codes into `bits` planes of `words` u64 (least significant plane first).
fn pack(codes: &[u16], bits: usize, words: usize, out: &mut [u64]) {
    out.iter_mut().for_each(|w| *w = 0);
    for (i, &c) in codes.iter().enumerate() {
        for b in 0..bits {
            out[b * words + i / 64] |= u64::from((c >> b) & 1) << (i % 64);
        }
    }
}

/// Rows encoded together (their rotation is one blocked product).
const ENCODE_BLOCK: usize = 64;

impl RaBitQ {
    /// Codes of every row of `view` around `centres` (`centres × dim`); `centre_of(i)` is
    /// row i's. `bits` is 1 to 9; `rotated == false` gives the plain binary code (1 bit, no
    /// rotation: pass one zero centre).
    pub(crate) fn encode(
        view: &VectorView<'_>,
        rows: &[u32],
        centres: Vec<f32>,
        centre_of: &(dyn Fn(usize) -> usize + Sync),
        bits: usize,
        rotated: bool,
    ) -> RaBitQ {
        assert!((1..=MAX_BITS).contains(&bits));
        let dim = view.dim();
        let words = dim.div_ceil(64).max(1);
        let rotation = if rotated {
            rotation(dim, 0x0BAD_5EED ^ dim as u64)
        } else {
            Vec::new()
        };
        let n = rows.len();
        let layout = Layout::of(bits);
        let plane = layout.row_words(bits, words);
        let mut codes = vec![0u64; n * plane];
        let k = kernels();
        // Rows a block at a time, so the rotation is one blocked product (the flat-scan
        // kernel) rather than `dim` dot products per row.
        let factors: Vec<[f32; 4]> = codes
            .par_chunks_mut(plane * ENCODE_BLOCK)
            .enumerate()
            .map_init(
                || (Vec::new(), Vec::new(), vec![0u16; dim]),
                |(offs, turned, ints), (b, out)| {
                    let first = b * ENCODE_BLOCK;
                    let nr = out.len() / plane;
                    offs.resize(nr * dim, 0f32);
                    let mut factors: Vec<[f32; 4]> = Vec::with_capacity(nr);
                    for (j, off) in offs.chunks_exact_mut(dim).enumerate() {
                        let x = view.normalized_row(rows[first + j] as usize);
                        let c = &centres[centre_of(first + j) * dim..][..dim];
                        off.iter_mut()
                            .zip(x.iter().zip(c))
                            .for_each(|(o, (x, c))| *o = x - c);
                        factors.push([0.0, (k.dot)(off, off), (k.dot)(off, c), 0.0]);
                    }
                    // `turned`: the (rotated) offsets, each scaled to unit length in place.
                    let turned: &mut [f32] = if rotated {
                        turned.resize(nr * dim, 0f32);
                        (k.dot_block)(offs, &rotation, dim, turned);
                        turned
                    } else {
                        offs
                    };
                    for ((unit, out), f) in turned
                        .chunks_exact_mut(dim)
                        .zip(out.chunks_exact_mut(plane))
                        .zip(&mut factors)
                    {
                        let norm = f[1].sqrt();
                        if norm == 0.0 {
                            ints.iter_mut().for_each(|c| *c = 0);
                            layout.store(ints, bits, words, out);
                            continue;
                        }
                        unit.iter_mut().for_each(|v| *v /= norm);
                        let ip = encode_unit(unit, bits, ints);
                        layout.store(ints, bits, words, out);
                        f[3] = ints.iter().map(|&c| f32::from(c)).sum();
                        f[0] = if ip > 0.0 { norm / ip } else { 0.0 };
                    }
                    factors
                },
            )
            .flatten_iter()
            .collect();
        let column = |j: usize| -> ScalarBuffer<f32> { factors.iter().map(|f| f[j]).collect() };
        RaBitQ {
            dim,
            bits,
            words,
            rotated,
            rotation: rotation.into(),
            centres: centres.into(),
            scale: column(0),
            norm2: column(1),
            cdot: column(2),
            sum: column(3),
            codes: codes.into(),
        }
    }

    /// Bits per dimension.
    pub(crate) fn bits(&self) -> usize {
        self.bits
    }

    /// Whether this is the rotated RaBitQ code (`false`: plain binary).
    pub(crate) fn rotated(&self) -> bool {
        self.rotated
    }

    /// The centres, `centres × dim`.
    pub(crate) fn centres(&self) -> &[f32] {
        &self.centres
    }

    /// Reads a section written by `write` at file offset `at` of `buffer` (in place when
    /// aligned), for `rows` rows of `dim` dimensions around `centres` centres. Returns the
    /// codes and the bytes read, or why the section does not fit.
    pub(crate) fn read(
        buffer: &Buffer,
        at: usize,
        rows: usize,
        dim: usize,
        centres: usize,
        bits: usize,
        rotated: bool,
    ) -> Result<(RaBitQ, usize), String> {
        if !(1..=MAX_BITS).contains(&bits) || dim == 0 || (!rotated && bits != 1) {
            return Err(format!("bad code parameters ({bits} bits)"));
        }
        let words = dim.div_ceil(64);
        let rot = if rotated { dim * dim } else { 0 };
        let floats = rot + centres * dim + 4 * rows;
        let codes_at = (at + floats * 4).next_multiple_of(8);
        let n_codes = rows * Layout::of(bits).row_words(bits, words);
        let end = codes_at + n_codes * 8;
        if !at.is_multiple_of(4) || end > buffer.len() {
            return Err("code section runs past the end of the file".into());
        }
        let mut word = at / 4;
        let mut take = |len: usize| {
            let s = ScalarBuffer::<f32>::new(buffer.clone(), word, len);
            word += len;
            s
        };
        let (rotation, centres) = (take(rot), take(centres * dim));
        let (scale, norm2, cdot, sum) = (take(rows), take(rows), take(rows), take(rows));
        let aligned = (buffer.as_ptr() as usize + codes_at).is_multiple_of(8);
        let codes = if aligned {
            ScalarBuffer::<u64>::new(buffer.clone(), codes_at / 8, n_codes)
        } else {
            // A file image in memory that is not 8-byte aligned (never a mapping): copied.
            buffer[codes_at..end]
                .chunks_exact(8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect()
        };
        let codes = RaBitQ {
            dim,
            bits,
            words,
            rotated,
            rotation,
            centres,
            scale,
            norm2,
            cdot,
            sum,
            codes,
        };
        if codes.scale.iter().any(|v| !v.is_finite()) {
            return Err("code scales are not finite".into());
        }
        Ok((codes, end - at))
    }

    /// Groups of four dimensions per row (the unit of a fast-scan table).
    pub(crate) fn groups(&self) -> usize {
        self.words * 16
    }

    /// The four code bits of group `g` of row `i` (1-bit codes, bit planes).
    #[inline]
    fn nibble(&self, i: u32, g: usize) -> u8 {
        debug_assert_eq!(self.bits, 1);
        ((self.codes[i as usize * self.words + g / 16] >> (4 * (g % 16))) & 15) as u8
    }

    /// u64 words per row.
    fn row_words(&self) -> usize {
        Layout::of(self.bits).row_words(self.bits, self.words)
    }

    #[inline]
    fn row(&self, i: u32) -> &[u64] {
        let w = self.row_words();
        &self.codes[i as usize * w..(i as usize + 1) * w]
    }

    /// Row `i`'s codes as bytes (nibble and byte layouts).
    #[inline]
    fn row_bytes(&self, i: u32) -> &[u8] {
        let w = self.row_words() * 8;
        &self.codes.inner()[i as usize * w..(i as usize + 1) * w]
    }
}

impl Quantizer for RaBitQ {
    type Scorer<'a> = RaBitQScorer<'a>;

    fn rows(&self) -> usize {
        self.scale.len()
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn scorer<'a>(&'a self, metric: Metric, q: &[f32]) -> RaBitQScorer<'a> {
        let dim = self.dim;
        let dot = kernels().dot;
        let turned: Vec<f32> = if self.rotated {
            self.rotation.chunks_exact(dim).map(|r| dot(r, q)).collect()
        } else {
            q.to_vec()
        };
        let h = ((1u32 << self.bits) - 1) as f32 / 2.0;
        let layout = Layout::of(self.bits);
        let mut s = RaBitQScorer {
            codes: self,
            metric,
            layout,
            kernels: kernels(),
            ints: Vec::new(),
            planes: Vec::new(),
            int8: Vec::new(),
            lo: 0.0,
            delta: 1.0,
            offset: 0.0,
            q: q.to_vec(),
            qn2: dot(q, q),
            term: 0.0,
        };
        if layout == Layout::Planes {
            let qb = query_bits(self.bits);
            let (lo, hi) = turned
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                    (l.min(v), h.max(v))
                });
            let levels = ((1u32 << qb) - 1) as f32;
            let delta = if hi > lo { (hi - lo) / levels } else { 1.0 };
            let lo = if lo.is_finite() { lo } else { 0.0 };
            s.ints = turned
                .iter()
                .map(|&v| ((v - lo) / delta).round().clamp(0.0, levels) as u16)
                .collect();
            s.planes = vec![0u64; qb * self.words];
            pack(&s.ints, qb, self.words, &mut s.planes);
            let sum_q: f32 = s.ints.iter().map(|&c| f32::from(c)).sum();
            // ⟨ȳ, q'⟩ = lo·Σcode + Δ·⟨code, q_int⟩ − h·(lo·dim + Δ·Σq_int).
            (s.lo, s.delta, s.offset) = (lo, delta, h * (lo * dim as f32 + delta * sum_q));
        } else {
            // Symmetric signed 8-bit query: ⟨ȳ, q'⟩ = Δ·⟨code, q_int⟩ − h·Σq'.
            let most = 127.0f32;
            let max = turned.iter().fold(0f32, |m, v| m.max(v.abs()));
            let delta = if max > 0.0 { max / most } else { 1.0 };
            s.int8 = vec![0i8; self.words * 64];
            for (o, &v) in s.int8.iter_mut().zip(&turned) {
                *o = (v / delta).round().clamp(-most, most) as i8;
            }
            if layout == Layout::Nibbles {
                nibble_order(&mut s.int8);
            }
            let sum: f32 = turned.iter().sum();
            (s.delta, s.offset) = (delta, h * sum);
        }
        s.term = s.centre_term(0);
        s
    }

    fn section_bytes(&self, at: usize) -> usize {
        let floats = self.rotation.len() + self.centres.len() + 4 * self.rows();
        let codes_at = (at + floats * 4).next_multiple_of(8);
        codes_at + self.codes.len() * 8 - at
    }

    fn write(&self, out: &mut Vec<u8>) {
        for part in [
            &self.rotation,
            &self.centres,
            &self.scale,
            &self.norm2,
            &self.cdot,
            &self.sum,
        ] {
            for v in part.iter() {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out.resize(out.len().next_multiple_of(8), 0);
        for w in self.codes.iter() {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
}

/// Approximate distances from a prepared query to RaBitQ-coded rows.
pub(crate) struct RaBitQScorer<'a> {
    codes: &'a RaBitQ,
    metric: Metric,
    /// The codes' layout and the kernels that score it, looked up once per query.
    layout: Layout,
    kernels: &'static Kernels,
    /// The rotated query quantized to integers, per dimension.
    ints: Vec<u16>,
    /// The rotated query's integer bit planes (bit-plane codes).
    planes: Vec<u64>,
    /// The rotated query as signed 8-bit integers (nibble codes: in the kernel's nibble order;
    /// byte codes).
    int8: Vec<i8>,
    lo: f32,
    delta: f32,
    offset: f32,
    /// The prepared query, in the vectors' own space.
    q: Vec<f32>,
    qn2: f32,
    /// `centre_term(0)`, what `Scorer::dist` uses.
    term: f32,
}

impl RaBitQScorer<'_> {
    /// The part of every estimate that depends only on centre `c`: `⟨c, q⟩` (dot, cosine)
    /// or `|c − q|²` (l2).
    pub(crate) fn centre_term(&self, c: usize) -> f32 {
        let dim = self.codes.dim;
        let centre = &self.codes.centres[c * dim..(c + 1) * dim];
        let k = self.kernels;
        match self.metric {
            Metric::L2 => (k.l2sq)(centre, &self.q),
            _ => (k.dot)(centre, &self.q),
        }
    }

    /// The estimated ranking distance of coded row `i`, whose centre's term is `term`.
    #[inline]
    pub(crate) fn estimate(&self, i: u32, term: f32) -> f32 {
        let (c, k) = (self.codes, self.kernels);
        let int = match self.layout {
            Layout::Planes => (k.bits_dot)(c.row(i), &self.planes, c.words) as f32,
            Layout::Nibbles => (k.dot_u4_i8)(c.row_bytes(i), &self.int8) as f32,
            Layout::Bytes => (k.dot_u8_i8)(c.row_bytes(i), &self.int8) as f32,
        };
        self.estimate_int(i, int, term)
    }

    /// The fast-scan tables of 1-bit codes: per group of four dimensions, the query's partial
    /// dot product for each of the 16 nibbles (at most 60 each: 4-bit query integers), or
    /// `None` for codes of more bits.
    pub(crate) fn tables(&self) -> Option<Vec<u8>> {
        let groups = self.codes.groups();
        // Sums of up to 60 per group must stay under 2^16.
        if self.codes.bits != 1 || query_bits(1) != 4 || groups * 60 > usize::from(u16::MAX) {
            return None;
        }
        let mut lut = vec![0u8; groups * 16];
        for (g, table) in lut.chunks_exact_mut(16).enumerate() {
            let q = |b: usize| self.ints.get(4 * g + b).map_or(0, |&v| v as u8);
            for (v, t) in table.iter_mut().enumerate() {
                *t = (0..4).filter(|b| v >> b & 1 == 1).map(q).sum();
            }
        }
        Some(lut)
    }

    /// Groups of four dimensions per row (see `RaBitQ::groups`).
    pub(crate) fn groups(&self) -> usize {
        self.codes.groups()
    }

    /// `estimate` from the integer dot product `int` of row `i`'s code with the query's
    /// integers (what `bits_dot` or a fast scan computes).
    #[inline]
    pub(crate) fn estimate_int(&self, i: u32, int: f32, term: f32) -> f32 {
        let c = self.codes;
        let r = i as usize;
        // `lo` is 0 for the signed 8-bit query (its offset is folded into `offset`).
        let ip_o = c.scale[r] * (self.lo * c.sum[r] + self.delta * int - self.offset);
        match self.metric {
            Metric::L2 => c.norm2[r] + term + 2.0 * c.cdot[r] - 2.0 * ip_o,
            // Cosine codes are of unit vectors: |x| = 1.
            m => m.rank(term + ip_o, self.qn2, 1.0),
        }
    }

    /// `estimate_int` of the consecutive rows from `first`, one per integer in `ints`, into
    /// `out` (as long as `ints`): one pass the compiler vectorizes, for a fast-scan block.
    #[inline]
    pub(crate) fn estimate_block(&self, first: usize, ints: &[u16], term: f32, out: &mut [f32]) {
        let c = self.codes;
        let n = ints.len();
        let (scale, sum) = (&c.scale[first..first + n], &c.sum[first..first + n]);
        let (lo, delta, offset) = (self.lo, self.delta, self.offset);
        let out = &mut out[..n];
        for (((o, &s), &m), &int) in out.iter_mut().zip(scale).zip(sum).zip(ints) {
            *o = s * (lo * m + delta * f32::from(int) - offset);
        }
        match self.metric {
            Metric::L2 => {
                let (norm2, cdot) = (&c.norm2[first..first + n], &c.cdot[first..first + n]);
                for ((o, &n2), &cd) in out.iter_mut().zip(norm2).zip(cdot) {
                    *o = n2 + term + 2.0 * cd - 2.0 * *o;
                }
            }
            m => {
                // The ranking is affine in the inner product for unit codes: α + β·s.
                let alpha = m.rank(0.0, self.qn2, 1.0);
                let beta = m.rank(1.0, self.qn2, 1.0) - alpha;
                for o in out.iter_mut() {
                    *o = alpha + beta * (term + *o);
                }
            }
        }
    }

    pub(crate) fn prefetch_row(&self, i: u32) {
        let w = self.codes.row_words();
        prefetch_rows(&self.codes.codes, i as usize * w, w);
    }
}

impl Scorer for RaBitQScorer<'_> {
    #[inline]
    fn dist(&self, i: u32) -> f32 {
        self.estimate(i, self.term)
    }
    #[inline]
    fn prefetch(&self, i: u32) {
        self.prefetch_row(i);
    }
    fn len(&self) -> usize {
        self.codes.rows()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, dim: usize) -> Vec<f32> {
        (0..n * dim)
            .map(|i| gaussian(splitmix(i as u64), splitmix(!(i as u64))))
            .collect()
    }

    #[test]
    fn the_rotation_is_orthogonal() {
        let dim = 37;
        let m = rotation(dim, 7);
        for i in 0..dim {
            for j in 0..dim {
                let d = crate::distance::scalar::dot(&m[i * dim..][..dim], &m[j * dim..][..dim]);
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((d - want).abs() < 1e-4, "{i},{j}: {d}");
            }
        }
    }

    /// Estimates track exact distances closer as bits grow, and round-trip through the file
    /// section.
    #[test]
    fn estimates_approach_exact_distances_as_bits_grow() {
        let (n, dim) = (400, 70);
        let data = data(n, dim);
        let rows: Vec<u32> = (0..n as u32).collect();
        for metric in [Metric::Cosine, Metric::L2, Metric::Dot] {
            let view = VectorView::new(&data, dim, metric);
            let mut mean = vec![0f32; dim];
            for i in 0..n {
                for (m, v) in mean.iter_mut().zip(view.normalized_row(i).iter()) {
                    *m += v / n as f32;
                }
            }
            let mut last = f32::INFINITY;
            for (bits, rotated) in [
                (1, false),
                (1, true),
                (2, true),
                (4, true),
                (6, true),
                (8, true),
                (9, true),
            ] {
                let centres = if rotated {
                    mean.clone()
                } else {
                    vec![0.0; dim]
                };
                let codes = RaBitQ::encode(&view, &rows, centres, &|_| 0, bits, rotated);
                let mut bytes = vec![0u8; 4]; // an offset that is not 8-aligned
                codes.write(&mut bytes);
                assert_eq!(bytes.len() - 4, codes.section_bytes(4));
                let (read, used) =
                    RaBitQ::read(&Buffer::from(bytes), 4, n, dim, 1, bits, rotated).unwrap();
                assert_eq!(used, codes.section_bytes(4));
                assert_eq!(read, codes);
                let mut err = 0.0;
                for qi in 0..20u32 {
                    let q = view.prepare(&view.row(qi * 7 + 3));
                    let s = codes.scorer(metric, &q);
                    for i in 0..n as u32 {
                        err += (s.dist(i) - view.dist(&q, i)).abs();
                    }
                }
                let err = err / (20 * n) as f32;
                // Binary (unrotated) is not part of the sequence: on isotropic data it is
                // about as good as 1-bit RaBitQ.
                assert!(
                    !rotated || err < last || err < 1e-3,
                    "{metric} {bits} bits: mean error {err} not below {last}"
                );
                if bits == 8 {
                    let scale = if metric == Metric::Cosine { 0.02 } else { 0.5 };
                    assert!(err < scale, "{metric} 8 bits: mean error {err}");
                }
                if rotated {
                    last = err;
                }
            }
        }
    }

    /// A block of estimates from integer dot products equals the row-by-row ones.
    #[test]
    fn block_estimates_equal_row_estimates() {
        let (n, dim) = (45, 64);
        let data = data(n, dim);
        let rows: Vec<u32> = (0..n as u32).collect();
        let ints: Vec<u16> = (0..n as u16).map(|i| i * 37 % 240).collect();
        for metric in [Metric::Cosine, Metric::L2, Metric::Dot] {
            let view = VectorView::new(&data, dim, metric);
            let centre = view.normalized_row(5).to_vec();
            let codes = RaBitQ::encode(&view, &rows, centre, &|_| 0, 1, true);
            let q = view.prepare(&view.row(9));
            let s = codes.scorer(metric, &q);
            let mut out = [f32::NAN; 32];
            for (first, len) in [(0, 32), (32, 13)] {
                s.estimate_block(first, &ints[first..first + len], 0.25, &mut out);
                for j in 0..len {
                    let want = s.estimate_int((first + j) as u32, f32::from(ints[first + j]), 0.25);
                    assert!(
                        (out[j] - want).abs() <= 1e-5 * want.abs().max(1.0),
                        "{metric} row {}: {} vs {want}",
                        first + j,
                        out[j]
                    );
                }
            }
        }
    }

    #[test]
    fn damaged_sections_are_refused() {
        let (n, dim) = (10, 8);
        let data = data(n, dim);
        let view = VectorView::new(&data, dim, Metric::L2);
        let rows: Vec<u32> = (0..n as u32).collect();
        let codes = RaBitQ::encode(&view, &rows, vec![0.0; dim], &|_| 0, 3, true);
        let mut bytes = Vec::new();
        codes.write(&mut bytes);
        let buffer = Buffer::from(bytes);
        assert!(RaBitQ::read(&buffer, 0, n + 1, dim, 1, 3, true).is_err());
        assert!(RaBitQ::read(&buffer, 0, n, dim, 1, 10, true).is_err());
        assert!(RaBitQ::read(&buffer, 0, n, dim, 1, 2, false).is_err());
    }
}
