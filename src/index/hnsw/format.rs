//! The HNSW index file, searched in place from its mapping. All words little-endian:
//!
//! - header, nine u32: magic (`OMENHNS2`, two words), m, entry, max_level, n, upper length,
//!   code dimension (0: no codes), the codes' kind (`quant::quant_tag`);
//! - layer 0: `n × (1 + 2m)` u32 (a count, then the neighbour ids);
//! - upper offsets: n u32; upper lists: `1 + m` u32 each;
//! - with codes, the quantizer's section (`quant::sq8`, `quant::rabitq`).
//!
//! Files of the first format (`OMENHNS1`, eight header words, 8-bit codes when the code
//! dimension is not 0) still open. Opening validates every count and neighbour id, so a
//! damaged file cannot make search panic.

use std::path::Path;

use arrow_buffer::{Buffer, ScalarBuffer};

use super::Hnsw;
use crate::options::QuantKind;
use crate::quant::{quant_of_tag, quant_tag, Codes};
use crate::{Error, Result};

const MAGIC: u64 = u64::from_le_bytes(*b"OMENHNS2");
const HEADER_WORDS: usize = 9;
/// The first format: eight header words, 8-bit codes or none.
const MAGIC_V1: u64 = u64::from_le_bytes(*b"OMENHNS1");

impl Hnsw {
    /// The file image.
    pub fn to_bytes(&self) -> Vec<u8> {
        let words = HEADER_WORDS + self.layer0.len() + self.upper_offsets.len() + self.upper.len();
        let code_bytes = self
            .codes
            .as_ref()
            .map_or(0, |c| c.section_bytes(words * 4));
        let mut out = Vec::with_capacity(words * 4 + code_bytes);
        out.extend_from_slice(&MAGIC.to_le_bytes());
        for w in [
            self.m,
            self.entry as usize,
            self.max_level,
            self.len(),
            self.upper.len(),
            self.codes.as_ref().map_or(0, Codes::dim),
            quant_tag(self.codes.as_ref().map_or(QuantKind::None, Codes::kind)) as usize,
        ] {
            out.extend_from_slice(&(w as u32).to_le_bytes());
        }
        for part in [&self.layer0, &self.upper_offsets, &self.upper] {
            for w in part.iter() {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        if let Some(c) = &self.codes {
            c.write(&mut out);
        }
        out
    }

    /// A graph over the file image in `buffer` (typically a memory map): no copy is made.
    /// `path` names the file in errors.
    pub fn from_buffer(buffer: Buffer, path: &Path) -> Result<Hnsw> {
        let bad = |why: &str| Error::corrupt(path, format!("bad HNSW index: {why}"));
        if buffer.len() < 8 * 4 || !buffer.len().is_multiple_of(4) {
            return Err(bad("size"));
        }
        if cfg!(target_endian = "big") {
            return Err(bad("big-endian hosts cannot map little-endian index files"));
        }
        let len = buffer.len() / 4;
        let words = ScalarBuffer::<u32>::new(buffer.clone(), 0, len);
        let header = &words[..len.min(HEADER_WORDS)];
        let magic = u64::from(header[0]) | (u64::from(header[1]) << 32);
        let (header_words, quant) = match magic {
            MAGIC if header.len() == HEADER_WORDS => (
                HEADER_WORDS,
                quant_of_tag(header[8]).ok_or_else(|| bad("unknown code kind"))?,
            ),
            MAGIC_V1 if header[7] == 0 => (8, QuantKind::None),
            MAGIC_V1 => (8, QuantKind::Sq8),
            _ => return Err(bad("magic")),
        };
        let (m, entry, max_level, n, upper_len, dim) = (
            header[2] as usize,
            header[3],
            header[4] as usize,
            header[5] as usize,
            header[6] as usize,
            header[7] as usize,
        );
        let l0 = n * (1 + 2 * m);
        let graph_words = header_words + l0 + n + upper_len;
        if m < 2 || graph_words > words.len() || (n > 0 && entry as usize >= n) {
            return Err(bad("layout does not match the header"));
        }
        if (dim == 0) != (quant == QuantKind::None) {
            return Err(bad("code dimension does not match the code kind"));
        }
        let mut at = header_words;
        let mut take = |len: usize| {
            let s = words.slice(at, len);
            at += len;
            s
        };
        let (layer0, upper_offsets, upper) = (take(l0), take(n), take(upper_len));
        let (codes, code_bytes) =
            Codes::read(quant, &buffer, graph_words * 4, n, dim, 1).map_err(|why| bad(&why))?;
        if graph_words * 4 + code_bytes != buffer.len() {
            return Err(bad("layout does not match the header"));
        }
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
    use crate::task::Task;

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
        let graph = extend(&view, params, None, &Task::new()).unwrap();
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
