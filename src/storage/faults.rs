//! Injected storage failures, for tests of every write step: the Nth write (with its fsync),
//! rename or directory sync of a database's collections fails, the way a full disk or a
//! failing device would, with an error naming the file and the operation.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arrow_buffer::Buffer;

use super::local::LocalStore;
use super::{Stamp, Store, Written};
use crate::{Error, Result};

/// A countdown to one failure, shared by the stores of a database opened with
/// `Database::open_with_faults`.
#[derive(Debug, Default)]
pub struct Faults {
    ops: AtomicU64,
    fail_at: AtomicU64,
    fired: AtomicBool,
}

impl Faults {
    /// No failure planned.
    pub fn new() -> Arc<Faults> {
        Arc::default()
    }

    /// Makes the `n`th write, rename or sync from now on fail (1: the next one).
    pub fn fail_nth(&self, n: u64) {
        self.fired.store(false, Ordering::SeqCst);
        self.fail_at
            .store(self.ops.load(Ordering::SeqCst) + n, Ordering::SeqCst);
    }

    /// Plans no failure.
    pub fn clear(&self) {
        self.fail_at.store(0, Ordering::SeqCst);
    }

    /// Whether the planned failure happened.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// Writes, renames and syncs so far.
    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::SeqCst)
    }

    fn hit(&self, op: &str, path: PathBuf) -> Result<()> {
        let n = self.ops.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_at.load(Ordering::SeqCst) {
            self.fired.store(true, Ordering::SeqCst);
            return Err(Error::io(
                path,
                std::io::Error::other(format!("{op} failed (injected failure)")),
            ));
        }
        Ok(())
    }
}

/// A local directory whose writes, renames and syncs fail when `faults` says so.
#[derive(Debug)]
pub(crate) struct FaultyStore {
    pub inner: LocalStore,
    pub faults: Arc<Faults>,
}

impl Store for FaultyStore {
    fn path(&self, name: &str) -> PathBuf {
        self.inner.path(name)
    }

    fn write(
        &self,
        name: &str,
        fill: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    ) -> Result<Written> {
        // The file is written whole, then its fsync "fails": what is left must be cleaned up.
        let faults = &self.faults;
        let path = self.path(name);
        self.inner.write(name, &mut |w| {
            fill(w)?;
            faults.hit("write and fsync", path.clone())
        })
    }

    fn map(&self, name: &str, bytes: u64, crc32: Option<u32>) -> Result<Buffer> {
        self.inner.map(name, bytes, crc32)
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        self.inner.read(name)
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.faults
            .hit(&format!("rename from {from}"), self.path(to))?;
        self.inner.rename(from, to)
    }

    fn adopt(&self, from: &dyn Store, name: &str) -> Result<()> {
        self.inner.adopt(from, name)
    }

    fn list(&self) -> Result<Vec<String>> {
        self.inner.list()
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.inner.delete(name)
    }

    fn sync(&self) -> Result<()> {
        self.faults
            .hit("fsync of the directory", self.inner.dir().to_path_buf())?;
        self.inner.sync()
    }

    fn create(&self, name: &str, bytes: &[u8]) -> Result<Option<Written>> {
        self.faults
            .hit(&format!("create {name}"), self.path(name))?;
        self.inner.create(name, bytes)
    }

    fn stamp(&self, name: &str) -> Result<Stamp> {
        self.inner.stamp(name)
    }

    fn export(&self, name: &str, to: &dyn Store) -> Result<bool> {
        self.inner.export(name, to)
    }
}
