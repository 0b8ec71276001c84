//! A writer that counts the bytes passing through it and computes their CRC32, so a file's
//! checksum is known the moment it is written.

use std::io::Write;

use super::Written;

/// Wraps a writer, hashing what passes.
pub(crate) struct Checksummed<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Checksummed<W> {
    pub(crate) fn new(inner: W) -> Self {
        Checksummed {
            inner,
            hasher: crc32fast::Hasher::new(),
            bytes: 0,
        }
    }

    /// The inner writer and what passed through.
    pub(crate) fn finish(self) -> (W, Written) {
        let written = Written {
            bytes: self.bytes,
            crc32: self.hasher.finalize(),
        };
        (self.inner, written)
    }
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
