//! The write path. Every change to a collection is one `Transaction`: files are written (or
//! renamed from staged names) and recorded in the next manifest; the commit syncs the
//! directory and commits the manifest; on any error before that, every file the transaction
//! created is removed, and the previous version stands. Files the new version no longer names
//! are removed only after the commit. The collection publishes the new snapshot after it.
//!
//! - `append`: rows staged as segment files before the commit that names them;
//! - `delete`: new deletion bitmaps;
//! - `compact`: merged segments, swapped in for their inputs;
//! - `policy`: which segments merge, and when;
//! - `maintenance`: what merges and index builds run after commits, and when (`claim`: the
//!   segments each one holds);
//! - `background`: the worker thread they run on (and the pool their parallel loops use);
//! - `backpressure`: writes wait while too many rows are not yet indexed.

pub(crate) mod append;
pub(crate) mod background;
pub(crate) mod backpressure;
pub(crate) mod claim;
pub(crate) mod compact;
pub(crate) mod delete;
pub(crate) mod maintenance;
pub(crate) mod policy;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::storage::manifest::{manifest_name, CommitError, FileMeta, Manifest, SegmentMeta};
use crate::storage::{FileKind, Store, Written};
use crate::{Error, Result};
use append::Staged;

/// One change to a collection, from its first file to its manifest commit.
pub(crate) struct Transaction<'a> {
    store: &'a dyn Store,
    /// The version being written.
    pub next: Manifest,
    /// The version it replaces (`None` for a new collection).
    base: Option<u64>,
    /// Files this transaction put in place (removed if it does not commit).
    created: Vec<String>,
    /// Staged files renamed into place, as (staged, committed) names: renamed back if the
    /// transaction does not commit, so a write that lost a commit race can try again.
    moved: Vec<(String, String)>,
    /// Staged files the commit names as they are (shared storage): set once it has committed.
    kept: Vec<Arc<AtomicBool>>,
    /// Files the new version stops naming (removed once it has committed).
    replaced: Vec<String>,
    committed: bool,
}

impl<'a> Transaction<'a> {
    /// A change to the collection whose current version is `base`.
    pub(crate) fn begin(store: &'a dyn Store, base: &Manifest) -> Self {
        let mut next = base.clone();
        next.version += 1;
        let mut txn = Self::with_manifest(store, next);
        txn.base = Some(base.version);
        txn
    }

    /// The first version of a new collection.
    pub(crate) fn create(store: &'a dyn Store, first: Manifest) -> Self {
        Self::with_manifest(store, first)
    }

    fn with_manifest(store: &'a dyn Store, next: Manifest) -> Self {
        Transaction {
            store,
            next,
            base: None,
            created: Vec::new(),
            moved: Vec::new(),
            kept: Vec::new(),
            replaced: Vec::new(),
            committed: false,
        }
    }

    /// The collection's files.
    pub(crate) fn store(&self) -> &'a dyn Store {
        self.store
    }

    /// Writes a new file of `kind` for segment `seg` with `write` and returns its metadata.
    pub(crate) fn write_file(
        &mut self,
        kind: FileKind,
        seg: u64,
        write: impl FnOnce(&dyn Store, &str) -> Result<Written>,
    ) -> Result<FileMeta> {
        let file = kind.name(seg, self.next.take_file_id());
        // Recorded first: a write that fails half-way leaves a file to remove too.
        self.created.push(file.clone());
        let written = write(self.store, &file)?;
        Ok(FileMeta {
            mtime_ns: self.store.stamp(&file)?.mtime_ns,
            file,
            bytes: written.bytes,
            crc32: written.crc32,
        })
    }

    /// Renames a staged segment (and its norms and keys) into place as a new segment of the
    /// next version (on shared storage, names them as they were written); returns the
    /// segment's position in the manifest.
    pub(crate) fn add_segment(&mut self, staged: &Staged) -> Result<usize> {
        let id = self.next.take_file_id();
        // On shared storage the files keep the names they were written with (no rename, and
        // no modification time: a download is checked by checksum).
        let keep = staged.kept_as_written();
        let file = if keep {
            self.kept.push(staged.committed_flag());
            staged.segment_name().to_string()
        } else {
            let file = FileKind::Segment.name(id, id);
            self.store.rename(staged.segment_name(), &file)?;
            self.moved
                .push((staged.segment_name().to_string(), file.clone()));
            file
        };
        let mtime_ns = |name: &str| {
            if keep {
                Ok(0)
            } else {
                self.store.stamp(name).map(|s| s.mtime_ns)
            }
        };
        let written = staged.written();
        let mut meta = SegmentMeta {
            id,
            mtime_ns: mtime_ns(&file)?,
            file,
            rows: staged.rows(),
            bytes: written.bytes,
            crc32: written.crc32,
            deletes: None,
            index: None,
            norms: None,
            pk: None,
        };
        for (kind, from, written) in staged.sidecars() {
            let to = if keep {
                from.clone()
            } else {
                let to = kind.name(id, id);
                self.store.rename(from, &to)?;
                self.moved.push((from.to_string(), to.clone()));
                to
            };
            let file = Some(FileMeta {
                mtime_ns: mtime_ns(&to)?,
                file: to,
                bytes: written.bytes,
                crc32: written.crc32,
            });
            match kind {
                FileKind::Norms => meta.norms = file,
                FileKind::Pk => meta.pk = file,
                _ => return Err(Error::Internal(format!("{kind:?} is not a sidecar"))),
            }
        }
        self.next.segments.push(meta);
        Ok(self.next.segments.len() - 1)
    }

    /// Notes that the new version no longer names `file`.
    pub(crate) fn replace(&mut self, file: String) {
        self.replaced.push(file);
    }

    /// Makes the new files durable and commits the manifest; returns it.
    pub(crate) fn commit(mut self) -> Result<Manifest> {
        self.store.sync()?;
        match self.next.commit(self.store) {
            Ok(()) => {}
            Err(CommitError::Failed(e) | CommitError::Conflict(e)) => return Err(e),
            Err(CommitError::Unsynced(e)) => {
                // The new manifest is in place but not durable. Take it back; only once that
                // is durable may this transaction's files go (else a crash could leave a
                // manifest naming removed files).
                let withdrawn = self
                    .store
                    .delete(&manifest_name(self.next.version))
                    .and_then(|()| self.store.sync())
                    .is_ok();
                if !withdrawn {
                    self.settle(); // keep every file: either version may be on disk
                    return Err(Error::Unsettled(format!(
                        "{e}; the commit's outcome is unknown until the collection is opened \
                         again"
                    )));
                }
                return Err(e);
            }
        }
        self.settle();
        if self.store.shared() {
            // Other servers may still read them (see `Store::shared`).
            self.replaced.clear();
        } else if let Some(base) = self.base {
            // The previous version's manifest is garbage now (an older layout's `MANIFEST`
            // goes at the next open: the versioned one is read before it).
            let _ = self.store.delete(&manifest_name(base));
        }
        for file in std::mem::take(&mut self.replaced) {
            // Readers hold what they read of these in memory or mapped: they are garbage now
            // (and the next open removes them if this fails).
            let _ = self.store.delete(&file);
        }
        Ok(self.next.clone())
    }

    /// Keeps the transaction's files: a manifest (committed, or perhaps committed) names them.
    fn settle(&mut self) {
        self.committed = true;
        for flag in &self.kept {
            flag.store(true, Ordering::SeqCst);
        }
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.committed {
            for file in &self.created {
                let _ = self.store.delete(file);
            }
            for (staged, file) in self.moved.iter().rev() {
                if self.store.rename(file, staged).is_err() {
                    let _ = self.store.delete(file);
                }
            }
        }
    }
}
