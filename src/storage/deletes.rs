//! Deletion bitmap files: a magic, the bitmap's 64-row words (little-endian), and a CRC32 of
//! all before it. A new version is written for every delete; the manifest names the current.

use super::{Store, Written};
use crate::bitmap::Bitmap;
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"OMENDEL1";

/// Writes `bitmap` as file `name`, durably.
pub(crate) fn write(store: &dyn Store, name: &str, bitmap: &Bitmap) -> Result<Written> {
    let words = bitmap.words();
    let mut buf = Vec::with_capacity(12 + words.len() * 8);
    buf.extend_from_slice(MAGIC);
    for w in words {
        buf.extend_from_slice(&w.to_le_bytes());
    }
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    store.put(name, &buf)
}

/// Reads the bitmap of a segment of `rows` rows from file `name`.
pub(crate) fn read(store: &dyn Store, name: &str, rows: usize) -> Result<Bitmap> {
    let path = store.path(name);
    let buf = store.read(name)?;
    let words = rows.div_ceil(64);
    if buf.len() != 12 + words * 8 || &buf[..8] != MAGIC {
        return Err(Error::corrupt(path, "bad deletion bitmap header or size"));
    }
    let body = &buf[..buf.len() - 4];
    let crc = u32::from_le_bytes(buf[buf.len() - 4..].try_into().expect("4 bytes"));
    if crc32fast::hash(body) != crc {
        return Err(Error::corrupt(path, "deletion bitmap checksum mismatch"));
    }
    let words = body[8..]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    Ok(Bitmap::from_words(words))
}
