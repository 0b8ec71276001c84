//! `LocalStore`: a collection's files in a local directory, written with fsync and read
//! through read-only memory maps (the only mmap `unsafe` of the engine).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow_buffer::Buffer;

use super::checksum::Checksummed;
use super::{unique, Stamp, Store, Written, STAGED_PREFIX};
use crate::{Error, Result};

/// A directory of files (also what a backend maps its local cache through).
#[derive(Debug, Clone)]
pub struct LocalStore {
    dir: PathBuf,
}

impl LocalStore {
    /// The files of directory `dir` (which must exist to be written to).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LocalStore { dir: dir.into() }
    }

    /// The directory (where the fault hooks say a failure happened).
    #[cfg(feature = "faults")]
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Fsyncs a directory so that entries created, renamed or removed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// A file the manifest names but that cannot be found is damage, not an I/O hiccup.
fn missing_is_corrupt(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::corrupt(path, "missing (the manifest names it)")
    } else {
        Error::io(path, e)
    }
}

impl Store for LocalStore {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn write(
        &self,
        name: &str,
        fill: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    ) -> Result<Written> {
        let path = self.path(name);
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut out = Checksummed::new(BufWriter::with_capacity(1 << 20, file));
        fill(&mut out)?;
        let (inner, written) = out.finish();
        let file = inner
            .into_inner()
            .map_err(|e| Error::io(&path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&path, e))?;
        Ok(written)
    }

    fn map(&self, name: &str, bytes: u64, crc32: Option<u32>) -> Result<Buffer> {
        let path = self.path(name);
        let file = File::open(&path).map_err(|e| missing_is_corrupt(&path, e))?;
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if len != bytes {
            return Err(Error::corrupt(
                &path,
                format!(
                    "size is {len} bytes, the manifest says {bytes} (truncated or overwritten)"
                ),
            ));
        }
        // SAFETY: committed files are immutable (written under a fresh name, fsynced, never
        // modified; only unlinked when no manifest names them), and the mapping is read-only.
        // A file changed by someone else is detected by its stamp and reported as damage.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        if let Some(expected) = crc32 {
            let crc = crc32fast::hash(&map);
            if crc != expected {
                return Err(Error::corrupt(
                    &path,
                    format!("checksum mismatch (crc32 {crc:08x}, manifest says {expected:08x})"),
                ));
            }
        }
        Ok(Buffer::from(bytes::Bytes::from_owner(map)))
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.path(name);
        fs::read(&path).map_err(|e| Error::io(&path, e))
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let to = self.path(to);
        fs::rename(self.path(from), &to).map_err(|e| Error::io(&to, e))
    }

    fn adopt(&self, from: &dyn Store, name: &str) -> Result<()> {
        let to = self.path(name);
        fs::rename(from.path(name), &to).map_err(|e| Error::io(&to, e))
    }

    fn list(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))? {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        fs::remove_file(&path).map_err(|e| Error::io(&path, e))
    }

    fn sync(&self) -> Result<()> {
        sync_dir(&self.dir)
    }

    fn create(&self, name: &str, bytes: &[u8]) -> Result<Option<Written>> {
        // Written whole under a name of its own, then linked to `name`: a link never replaces
        // an existing file, and appears complete or not at all.
        let staged = format!("{STAGED_PREFIX}{}", unique());
        let written = self.put(&staged, bytes)?;
        let linked = fs::hard_link(self.path(&staged), self.path(name));
        let _ = fs::remove_file(self.path(&staged));
        match linked {
            Ok(()) => Ok(Some(written)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(Error::io(self.path(name), e)),
        }
    }

    fn local(&self) -> bool {
        true
    }

    fn export(&self, name: &str, to: &dyn Store) -> Result<bool> {
        if !to.local() {
            to.put(name, &self.read(name)?)?;
            return Ok(false);
        }
        let (from, to) = (self.path(name), to.path(name));
        if fs::hard_link(&from, &to).is_ok() {
            return Ok(true);
        }
        fs::copy(&from, &to).map_err(|e| missing_is_corrupt(&from, e))?;
        File::open(&to)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&to, e))?;
        Ok(false)
    }

    fn stamp(&self, name: &str) -> Result<Stamp> {
        let path = self.path(name);
        let m = fs::metadata(&path).map_err(|e| missing_is_corrupt(&path, e))?;
        let mtime_ns = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64);
        Ok(Stamp {
            bytes: m.len(),
            mtime_ns,
        })
    }
}

/// Maps a file read-only through the engine's store and checks its CRC32 (for measurements).
#[doc(hidden)]
pub fn map_path(path: &Path, crc32: u32) -> Result<Buffer> {
    let len = fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new("."));
    LocalStore::new(dir).map(name, len, Some(crc32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_puts_a_file_only_where_none_is() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LocalStore::new(tmp.path());
        let first = store.create("v1", b"first").unwrap().unwrap();
        assert_eq!(first.bytes, 5);
        assert!(store.create("v1", b"second").unwrap().is_none());
        assert_eq!(store.read("v1").unwrap(), b"first");
        // Nothing else is left behind by either call.
        assert_eq!(store.list().unwrap(), ["v1"]);
    }
}
