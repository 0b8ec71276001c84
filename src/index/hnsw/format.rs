//! The HNSW index file, searched in place from its mapping. All words little-endian:
//!
//! - header, eight u32: magic (`OMENHNS1`, two words), m, entry, max_level, n, upper length,
//!   code dimension (0: no codes);
//! - layer 0: `n × (1 + 2m)` u32 (a count, then the neighbour ids);
//! - upper offsets: n u32; upper lists: `1 + m` u32 each;
//! - with codes, the 8-bit quantizer's section (`quant::sq8`).
//!
//! Opening validates every count and neighbour id, so a damaged file cannot make search
//! panic. A new quantizer kind in the file needs a new magic.

use std::path::Path;

use arrow_buffer::{Buffer, ScalarBuffer};

use super::Hnsw;
use crate::quant::sq8::Sq8;
use crate::quant::{Codes, Quantizer};
use crate::{Error, Result};

const MAGIC: u64 = u64::from_le_bytes(*b"OMENHNS1");
const HEADER_WORDS: usize = 8;

impl Hnsw {
    /// The file image.
    pub fn to_bytes(&self) -> Vec<u8> {
        let code_bytes = self.codes.as_ref().map_or(0, |c| match c {
            Codes::Sq8(_) => Sq8::section_bytes(c.rows(), c.dim()),
        });
        let words = HEADER_WORDS + self.layer0.len() + self.upper_offsets.len() + self.upper.len();
        let mut out = Vec::with_capacity(words * 4 + code_bytes);
        out.extend_from_slice(&MAGIC.to_le_bytes());
        for w in [
            self.m,
            self.entry as usize,
            self.max_level,
            self.len(),
            self.upper.len(),
            self.codes.as_ref().map_or(0, Codes::dim),
        ] {
            out.extend_from_slice(&(w as u32).to_le_bytes());
        }
        for part in [&self.layer0, &self.upper_offsets, &self.upper] {
            for w in part.iter() {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        match &self.codes {
            Some(Codes::Sq8(c)) => c.write(&mut out),
            None => {}
        }
        out
    }

    /// A graph over the file image in `buffer` (typically a memory map): no copy is made.
    /// `path` names the file in errors.
    pub fn from_buffer(buffer: Buffer, path: &Path) -> Result<Hnsw> {
        let bad = |why: &str| Error::corrupt(path, format!("bad HNSW index: {why}"));
        if buffer.len() < HEADER_WORDS * 4 || !buffer.len().is_multiple_of(4) {
            return Err(bad("size"));
        }
        if cfg!(target_endian = "big") {
            return Err(bad("big-endian hosts cannot map little-endian index files"));
        }
        let len = buffer.len() / 4;
        let words = ScalarBuffer::<u32>::new(buffer.clone(), 0, len);
        let header = &words[..HEADER_WORDS];
        if u64::from(header[0]) | (u64::from(header[1]) << 32) != MAGIC {
            return Err(bad("magic"));
        }
        let (m, entry, max_level, n, upper_len, dim) = (
            header[2] as usize,
            header[3],
            header[4] as usize,
            header[5] as usize,
            header[6] as usize,
            header[7] as usize,
        );
        let l0 = n * (1 + 2 * m);
        let code_words = if dim == 0 {
            0
        } else {
            Sq8::section_bytes(n, dim) / 4
        };
        if m < 2
            || HEADER_WORDS + l0 + n + upper_len + code_words != words.len()
            || (n > 0 && entry as usize >= n)
        {
            return Err(bad("layout does not match the header"));
        }
        let mut at = HEADER_WORDS;
        let mut take = |len: usize| {
            let s = words.slice(at, len);
            at += len;
            s
        };
        let (layer0, upper_offsets, upper) = (take(l0), take(n), take(upper_len));
        let codes = (dim > 0).then(|| Codes::Sq8(Sq8::read(&buffer, at * 4, n, dim)));
        let graph = Hnsw {
            m,
            entry,
            max_level,
            layer0,
            upper_offsets,
            upper,
            codes,
        };
        graph.validate().map_err(|why| bad(&why))?;
        Ok(graph)
    }

    /// Checks every neighbour id and list count (on every open, so the search can index by
    /// them): each list's largest id against the row count.
    fn validate(&self) -> Result<(), String> {
        let n = self.len() as u32;
        let in_range = |list: &[u32], most: usize| {
            let c = list[0] as usize;
            c <= most && list[1..1 + c].iter().fold(0, |m, &x| m.max(x)) < n.max(1)
        };
        if !self
            .layer0
            .chunks(1 + 2 * self.m)
            .all(|l| in_range(l, 2 * self.m))
        {
            return Err("layer 0 list out of range".into());
        }
        if !self.upper.len().is_multiple_of(1 + self.m) {
            return Err("upper lists are ragged".into());
        }
        if !self.upper.chunks(1 + self.m).all(|l| in_range(l, self.m)) {
            return Err("upper list out of range".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::distance::Metric;
    use crate::index::hnsw::builder::{extend, HnswParams};
    use crate::vector::VectorView;

    fn image() -> (Vec<u8>, usize, usize) {
        let (n, dim) = (300, 8);
        let data: Vec<f32> = (0..n * dim)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let view = VectorView::new(&data, dim, Metric::L2);
        let params = HnswParams::default();
        let graph = extend(&view, params, None, &AtomicBool::new(false)).unwrap();
        (graph.to_bytes(), n, graph.m)
    }

    fn open(bytes: &[u8]) -> Result<Hnsw> {
        Hnsw::from_buffer(Buffer::from(bytes.to_vec()), Path::new("g.hnsw"))
    }

    fn set_word(bytes: &mut [u8], word: usize, value: u32) {
        bytes[word * 4..word * 4 + 4].copy_from_slice(&value.to_le_bytes());
    }

    #[test]
    fn a_graph_opens_and_damaged_lists_are_refused() {
        let (bytes, n, m) = image();
        let graph = open(&bytes).unwrap();
        assert_eq!(graph.len(), n);
        let list = |row: usize| HEADER_WORDS + row * (1 + 2 * m);
        // A neighbour id past the last row, in the last list of layer 0.
        let row = n - 1;
        let count = graph.layer0[row * (1 + 2 * m)] as usize;
        assert!(count > 0);
        let mut bad = bytes.clone();
        set_word(&mut bad, list(row) + count, n as u32);
        let err = open(&bad).unwrap_err().to_string();
        assert!(
            err.contains("layer 0 list out of range") && err.contains("g.hnsw"),
            "{err}"
        );
        // A count over 2m.
        let mut bad = bytes.clone();
        set_word(&mut bad, list(0), (2 * m + 1) as u32);
        assert!(open(&bad).unwrap_err().to_string().contains("layer 0 list"));
        // An id past the count is not a neighbour: not checked, not refused.
        if count < 2 * m {
            let mut unused = bytes.clone();
            set_word(&mut unused, list(row) + count + 1, u32::MAX);
            assert_eq!(open(&unused).unwrap().len(), n);
        }
    }
}
