//! The fast-scan layout of 1-bit codes (`rabitq1`, `binary`): a list of coded entries (an IVF
//! list, see `index::ivf`) is stored in blocks of `BLOCK` entries, a block holding 16 bytes per
//! group of four dimensions (two entries' nibbles per byte, see `distance::scalar::fastscan`),
//! so one table lookup scores 32 entries at once.

use super::RaBitQ;

/// Entries per fast-scan block.
pub(crate) const BLOCK: usize = 32;

/// The fast-scan blocks of 1-bit codes, list by list (`starts` from `block_starts`).
pub(crate) fn pack_blocks(codes: &RaBitQ, offsets: &[u32], starts: &[usize]) -> Vec<u8> {
    let groups = codes.groups();
    let lists = offsets.len() - 1;
    let mut out = vec![0u8; starts[lists] * groups * 16];
    for l in 0..lists {
        let (first, last) = (offsets[l] as usize, offsets[l + 1] as usize);
        for (b, block) in (first..last).step_by(BLOCK).enumerate() {
            let at = (starts[l] + b) * groups * 16;
            let bytes = &mut out[at..at + groups * 16];
            for i in 0..BLOCK.min(last - block) {
                let e = (block + i) as u32;
                for g in 0..groups {
                    let nibble = codes.nibble(e, g);
                    bytes[g * 16 + i % 16] |= if i < 16 { nibble } else { nibble << 4 };
                }
            }
        }
    }
    out
}

/// Per list, its first fast-scan block, and the total after the last.
pub(crate) fn block_starts(offsets: &[u32]) -> Vec<usize> {
    let mut starts = Vec::with_capacity(offsets.len());
    let mut at = 0;
    starts.push(0);
    for w in offsets.windows(2) {
        at += (w[1] - w[0]).div_ceil(BLOCK as u32) as usize;
        starts.push(at);
    }
    starts
}
