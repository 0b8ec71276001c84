//! A collection's integrity: outside changes to mapped files, full checksum verification,
//! and consistent backups.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Collection;
use crate::error::lock;
use crate::stats::Backup;
use crate::storage::manifest::{manifest_name, SegmentMeta};
use crate::storage::Store;
use crate::{Error, Result};

impl Collection {
    /// Checks that no mapped file was changed by someone else since it was mapped (size and
    /// modification time; at most once a second). A change marks the collection damaged: this
    /// and every later call fail with `Corrupt` naming the file.
    pub fn check_files(&self) -> Result<()> {
        if let Some((path, reason)) = lock(&self.damage).clone() {
            return Err(Error::corrupt(path, reason));
        }
        {
            let mut last = lock(&self.last_check);
            if last.elapsed() < Duration::from_secs(1) {
                return Ok(());
            }
            *last = Instant::now();
        }
        let files: HashMap<u64, String> = self
            .lock_writer()
            .segments
            .iter()
            .map(|s| (s.id, s.file.clone()))
            .collect();
        for part in &self.snapshot().parts {
            // (A segment a merge replaced since the snapshot was taken is not checked.)
            let Some(name) = files.get(&part.seg.id) else {
                continue;
            };
            let now = self.store.stamp(name);
            if let (Some(mapped), Ok(now)) = (part.seg.stamp, &now) {
                if mapped == *now {
                    continue;
                }
            }
            let reason = match now {
                Ok(_) => "changed on disk while in use (size or modification time differs)".into(),
                Err(e) => e.to_string(),
            };
            let path = self.store.path(name);
            *lock(&self.damage) = Some((path.clone(), reason.clone()));
            return Err(Error::corrupt(path, reason));
        }
        Ok(())
    }

    /// Removes the files no reader can still need (see `storage::gc::remove_unreachable`):
    /// manifests of versions replaced more than `retain` ago, and files no kept version names
    /// that are older than `retain`. Returns the files and bytes removed. Over shared storage
    /// (object storage, several servers) this is the only way old versions' files go; on a
    /// local directory they go at each commit and open already.
    pub fn collect_garbage(&self, retain: std::time::Duration) -> Result<(usize, u64)> {
        crate::storage::gc::remove_unreachable(&*self.store, retain)
    }

    /// Reads every file of the current version and checks it against its checksum; returns
    /// the number of files and bytes checked, or `Corrupt` naming the first bad file.
    pub fn verify(&self) -> Result<(usize, u64)> {
        self.verify_with(&mut |_, _| {})
    }

    /// `verify`, calling `progress(bytes checked, bytes to check)` after each file.
    pub fn verify_with(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<(usize, u64)> {
        let manifest = self.lock_writer().clone();
        let store = &*self.store;
        let total: u64 = manifest
            .segments
            .iter()
            .map(SegmentMeta::checksummed_bytes)
            .sum();
        let (mut files, mut bytes) = (0, 0);
        let mut check = |file: &str, len: u64, crc: u32| -> Result<()> {
            store.map(file, len, Some(crc))?;
            files += 1;
            bytes += len;
            progress(bytes, total);
            Ok(())
        };
        let result = manifest.segments.iter().try_for_each(|s| {
            check(&s.file, s.bytes, s.crc32)?;
            if let Some(i) = &s.index {
                check(&i.file, i.bytes, i.crc32)?;
            }
            for f in s.norms.iter().chain(&s.pk) {
                check(&f.file, f.bytes, f.crc32)?;
            }
            if let Some(d) = &s.deletes {
                crate::storage::deletes::read(store, &d.file, s.rows as usize)?;
            }
            Ok(())
        });
        let result = result.map(|()| (files, bytes));
        if let Err(Error::Corrupt { path, reason }) = &result {
            *lock(&self.damage) = Some((path.clone(), reason.clone()));
        }
        result
    }

    /// Writes a consistent copy of the current version into the new directory `to` (which
    /// then opens as this collection): every file the manifest names, hard-linked where the
    /// file system allows (committed files are never modified) and copied otherwise, then the
    /// manifest, all synced. Commits wait while the files are linked or copied; readers and
    /// the writes staged meanwhile do not.
    pub(crate) fn backup(&self, to: &dyn Store) -> Result<Backup> {
        let manifest = self.lock_writer();
        let mut done = Backup {
            collection: self.name().to_string(),
            version: manifest.version,
            files: 0,
            bytes: 0,
            linked: 0,
        };
        for file in manifest.live_files() {
            done.linked += usize::from(self.store.export(file, to)?);
            done.bytes += self.store.stamp(file)?.bytes;
            done.files += 1;
        }
        // The manifest last: a copy cut short names no file it lacks.
        let text = self.store.read(&manifest.file(&*self.store))?;
        to.put(&manifest_name(manifest.version), &text)?;
        to.sync()?;
        done.files += 1;
        done.bytes += text.len() as u64;
        Ok(done)
    }
}
