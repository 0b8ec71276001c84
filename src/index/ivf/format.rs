//! The IVF index file, read in place from its mapping. All words little-endian: header of
//! nine u32 (magic `OMENIVF2`, two words; rows, dimension, lists, the codes' kind
//! (`quant::quant_tag`), 1 when fast-scan blocks follow the codes, the number of groups, 0 for
//! none; list entries); the centroids (`lists × dim` f32); list offsets (`lists + 1` u32, into
//! the next part); the row of each list entry (`entries` u32); the codes' section (one code
//! per entry); the fast-scan blocks (`Σ ⌈list length / 32⌉ × 4-dimension groups × 16` bytes,
//! see `quant::rabitq::fastscan`); the group centroids (`groups × dim` f32) and each group's
//! first list (`groups + 1` u32).
//!
//! Files of the first format (`OMENIVF1`, eight header words, one entry per row) are read as
//! before. Opening checks the layout against the header, the offsets and the rows, so a
//! damaged file cannot make search panic.

use std::path::Path;

use arrow_buffer::{Buffer, ScalarBuffer};

use super::{Groups, Ivf};
use crate::options::QuantKind;
use crate::quant::rabitq::fastscan::BLOCK;
use crate::quant::{quant_of_tag, quant_tag, Codes};
use crate::{Error, Result};

/// The current format's magic (the first two words).
const MAGIC: u64 = u64::from_le_bytes(*b"OMENIVF2");
/// Header words of the current format.
const HEADER_WORDS: usize = 9;
/// The first format: eight header words (no entry count), one entry per row.
const MAGIC_V1: u64 = u64::from_le_bytes(*b"OMENIVF1");
/// Header words of the first format.
const HEADER_WORDS_V1: usize = 8;

impl Ivf {
    /// The file image.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let words = HEADER_WORDS + self.centroids.len() + self.offsets.len() + self.rows.len();
        let mut out = Vec::with_capacity(words * 4);
        out.extend_from_slice(&MAGIC.to_le_bytes());
        let kind = self.codes.as_ref().map_or(QuantKind::None, Codes::kind);
        for w in [
            self.segment_rows as u32,
            self.dim as u32,
            self.lists() as u32,
            quant_tag(kind),
            u32::from(self.blocks.is_some()),
            self.groups.as_ref().map_or(0, |g| g.len() as u32),
            self.rows.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        for v in self.centroids.iter() {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for part in [&self.offsets, &self.rows] {
            for w in part.iter() {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        if let Some(c) = &self.codes {
            c.write(&mut out);
        }
        if let Some(b) = &self.blocks {
            out.extend_from_slice(b);
        }
        if let Some(g) = &self.groups {
            for v in g.centroids.iter() {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for w in g.starts.iter() {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        out
    }

    /// An IVF over the file image in `buffer` (typically a memory map), read in place and
    /// checked so a damaged file cannot make search panic. `path` names it in errors.
    pub(crate) fn from_buffer(buffer: Buffer, path: &Path) -> Result<Ivf> {
        let bad = |why: &str| Error::corrupt(path, format!("bad IVF index: {why}"));
        if buffer.len() < HEADER_WORDS * 4 || !buffer.len().is_multiple_of(4) {
            return Err(bad("size"));
        }
        if cfg!(target_endian = "big") {
            return Err(bad("big-endian hosts cannot map little-endian index files"));
        }
        let words = ScalarBuffer::<u32>::new(buffer.clone(), 0, buffer.len() / 4);
        let (header, entries) = match u64::from(words[0]) | (u64::from(words[1]) << 32) {
            MAGIC => (HEADER_WORDS, words[8] as usize),
            MAGIC_V1 => (HEADER_WORDS_V1, words[2] as usize),
            _ => return Err(bad("magic")),
        };
        let (n, dim, lists) = (words[2] as usize, words[3] as usize, words[4] as usize);
        let quant = quant_of_tag(words[5]).ok_or_else(|| bad("unknown code kind"))?;
        let floats = lists
            .checked_mul(dim)
            .ok_or_else(|| bad("layout does not match the header"))?;
        let head = header + floats + lists + 1 + entries;
        if dim == 0 || lists == 0 || head > words.len() {
            return Err(bad("layout does not match the header"));
        }
        let centroids = ScalarBuffer::<f32>::new(buffer.clone(), header, floats);
        let offsets = words.slice(header + floats, lists + 1);
        let rows = words.slice(header + floats + lists + 1, entries);
        let centres = match quant {
            QuantKind::RaBitQ(_) => lists,
            _ => 1,
        };
        let (codes, code_bytes) = Codes::read(quant, &buffer, head * 4, entries, dim, centres)
            .map_err(|why| bad(&why))?;
        let fast = match (words[6], &codes) {
            (0, _) => None,
            (1, Some(Codes::RaBitQ(c))) if c.bits() == 1 => Some(c.groups()),
            _ => return Err(bad("fast-scan blocks without 1-bit codes")),
        };
        let block_at = head * 4 + code_bytes;
        let block_bytes = fast.map_or(0, |groups| {
            // Counted the way `block_starts` counts them, from offsets not yet checked.
            let blocks: usize = (0..lists)
                .map(|l| {
                    (words[header + floats + l + 1].saturating_sub(words[header + floats + l])
                        as usize)
                        .div_ceil(BLOCK)
                })
                .sum();
            blocks * groups * 16
        });
        let group_at = block_at + block_bytes;
        let group_count = words[7] as usize;
        let group_bytes = match group_count {
            0 => 0,
            g => g
                .checked_mul(dim)
                .and_then(|f| f.checked_add(g + 1))
                .and_then(|w| w.checked_mul(4))
                .ok_or_else(|| bad("layout does not match the header"))?,
        };
        if group_at.checked_add(group_bytes) != Some(buffer.len()) || !group_at.is_multiple_of(4) {
            return Err(bad("layout does not match the header"));
        }
        let blocks = fast.map(|_| ScalarBuffer::<u8>::new(buffer.clone(), block_at, block_bytes));
        let groups = match group_count {
            0 => None,
            g => {
                let centroids = ScalarBuffer::<f32>::new(buffer.clone(), group_at / 4, g * dim);
                let starts = words.slice(group_at / 4 + g * dim, g + 1);
                if starts[0] != 0
                    || starts[g] as usize != lists
                    || starts.windows(2).any(|w| w[0] > w[1])
                {
                    return Err(bad("list groups out of order"));
                }
                Some(Groups::new(dim, centroids, starts))
            }
        };
        if offsets[0] != 0
            || offsets[lists] as usize != entries
            || offsets.windows(2).any(|w| w[0] > w[1])
        {
            return Err(bad("list offsets out of order"));
        }
        if rows.iter().any(|&r| r as usize >= n) {
            return Err(bad("list entry out of range"));
        }
        if let Some(Codes::RaBitQ(c)) = &codes {
            if c.rotated() && c.centres() != &centroids[..] {
                return Err(bad("code centres differ from the centroids"));
            }
        }
        let mut ivf = Ivf::new(dim, n, centroids, offsets, rows, codes, blocks);
        ivf.groups = groups;
        Ok(ivf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::Metric;
    use crate::index::ivf::{build_in_lists, clustered, exact_top, in_two_lists};
    use crate::vector::VectorView;

    /// Every list probed finds what exact search finds, for every code kind and metric; the
    /// file round-trips; damaged files are refused.
    #[test]
    fn probing_every_list_is_exact_and_files_round_trip() {
        let (n, dim, k) = (2000, 24, 10);
        let data = clustered(n, dim);
        for metric in [Metric::Cosine, Metric::L2, Metric::Dot] {
            let view = VectorView::new(&data, dim, metric);
            for quant in [
                QuantKind::None,
                QuantKind::Sq8,
                QuantKind::RaBitQ(4),
                QuantKind::RaBitQ(1),
                QuantKind::Binary,
            ] {
                let ivf = build_in_lists(&view, 20, quant);
                assert_eq!(ivf.lists(), 20);
                let bytes = ivf.to_bytes();
                let read =
                    Ivf::from_buffer(Buffer::from(bytes.clone()), Path::new("i.ivf")).unwrap();
                assert_eq!(read, ivf);
                assert!(in_two_lists(&ivf, n));
                let mut hits = 0;
                for qi in 0..20u32 {
                    let q = view.row(qi * 97 + 5).to_vec();
                    let want = exact_top(&view, &q, k);
                    // Every list and every entry re-ranked: exact.
                    let got: Vec<u32> = read
                        .search(&view, &q, k, n, 20, &|_| true)
                        .into_iter()
                        .map(|(r, _)| r)
                        .collect();
                    assert_eq!(got.len(), k);
                    let mut distinct = got.clone();
                    distinct.sort_unstable();
                    distinct.dedup();
                    assert_eq!(distinct.len(), k, "{metric} {quant:?}: a row twice");
                    hits += got.iter().filter(|r| want.contains(r)).count();
                }
                assert!(hits >= 20 * k * 99 / 100, "{metric} {quant:?}: {hits}");
                // A filter returns only accepted rows.
                let q = view.row(1).to_vec();
                let even = read.search(&view, &q, k, 64, 20, &|r| r % 2 == 0);
                assert_eq!(even.len(), k);
                assert!(even.iter().all(|(r, _)| r % 2 == 0));
                // A filter that leaves few rows in the nearest list: more lists are scanned
                // until k are found.
                let rare = read.search(&view, &q, k, k, 1, &|r| r % 50 == 0);
                assert_eq!(rare.len(), k, "{metric} {quant:?}");
                assert!(rare.iter().all(|(r, _)| r % 50 == 0));
                // Damage.
                let mut bad = bytes.clone();
                let entry = HEADER_WORDS + 20 * dim + 21;
                bad[entry * 4..entry * 4 + 4].copy_from_slice(&(n as u32).to_le_bytes());
                let err = Ivf::from_buffer(Buffer::from(bad), Path::new("i.ivf")).unwrap_err();
                assert!(err.to_string().contains("list entry out of range"), "{err}");
                let short = Buffer::from(bytes[..bytes.len() - 8].to_vec());
                assert!(Ivf::from_buffer(short, Path::new("i.ivf")).is_err());
            }
        }
    }

    /// A file of the first format (eight header words, one entry per row) reads as the index
    /// it was written from; one list is such an index (no second list to file rows in).
    #[test]
    fn first_format_files_still_open() {
        let (n, dim) = (300, 16);
        let data = clustered(n, dim);
        let view = VectorView::new(&data, dim, Metric::Cosine);
        for quant in [QuantKind::None, QuantKind::RaBitQ(1)] {
            let ivf = build_in_lists(&view, 1, quant);
            assert_eq!(ivf.rows.len(), n);
            let bytes = ivf.to_bytes();
            // The same words under the old header; the codes' section, placed by its offset
            // in the file, is written afresh after them.
            let mut v1 = b"OMENIVF1".to_vec();
            v1.extend_from_slice(&bytes[8..HEADER_WORDS_V1 * 4]);
            let words = ivf.centroids.len() + ivf.offsets.len() + ivf.rows.len();
            v1.extend_from_slice(&bytes[HEADER_WORDS * 4..(HEADER_WORDS + words) * 4]);
            if let Some(c) = &ivf.codes {
                c.write(&mut v1);
            }
            if let Some(b) = &ivf.blocks {
                v1.extend_from_slice(b);
            }
            let read = Ivf::from_buffer(Buffer::from(v1), Path::new("v1.ivf")).unwrap();
            assert_eq!(read, ivf, "{quant:?}");
            let q = view.row(7).to_vec();
            assert_eq!(read.search(&view, &q, 5, 50, 1, &|_| true)[0].0, 7);
        }
    }
}
