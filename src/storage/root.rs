//! Where a database lives (tantivy's `Directory`, one level above a collection's `Store`):
//! the lock that keeps a second handle out, the store of each collection, collections staged
//! under a temporary name before they appear whole, drops, listing, and the database's own
//! documents (the catalog). `LocalRoot` is a directory of collection directories; an object
//! store implements the same trait over a prefix. Every staging name is made here.

use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(feature = "faults")]
use super::faults::{Faults, FaultyStore};
use super::local::{sync_dir, LocalStore};
use super::manifest::is_manifest;
use super::{unique, FileKind, Store};
use crate::{Error, Result};

/// A collection prepared under this prefix appears by a rename; leftovers are removed at open.
const CREATING: &str = ".creating-";
/// A dropped collection is renamed under this prefix, then removed.
const DROPPED: &str = ".dropped-";

/// A database's place: its collections and its own documents. Implemented by the local
/// directory (`LocalRoot`) and by storage backends outside the engine.
pub trait Root: Send + Sync + fmt::Debug {
    /// Where the database lives, for messages.
    fn path(&self) -> &Path;
    /// The store of collection `name` (which may not exist yet).
    fn store(&self, name: &str) -> Arc<dyn Store>;
    /// Whether collection `name` has a manifest.
    fn has_manifest(&self, name: &str) -> bool;
    /// How many collection data files the place of collection `name` holds (0 when none).
    fn data_files(&self, name: &str) -> usize;
    /// The entries that may be collections (no staging or dropped names), unsorted.
    fn list(&self) -> Result<Vec<String>>;
    /// A new, empty staging place for collection `name`: its key and store.
    fn stage(&self, name: &str) -> Result<(String, Arc<dyn Store>)>;
    /// Moves staged place `staged` into place as collection `name` (durably), or fails with
    /// `AlreadyExists` leaving it staged.
    fn publish(&self, staged: &str, name: &str) -> Result<()>;
    /// Removes staged place `staged` and everything in it (best effort).
    fn discard(&self, staged: &str);
    /// Removes collection `name` and its files; it disappears at once and whole.
    fn remove(&self, name: &str) -> Result<()>;
    /// The text of document `name` of the database (`None` when there is none).
    fn read_doc(&self, name: &str) -> Result<Option<String>>;
    /// Replaces document `name` atomically: a crash leaves the old text or the new.
    fn write_doc(&self, name: &str, text: &str) -> Result<()>;
    /// Whether other processes may commit to these collections at the same time (servers
    /// over one bucket): then an open collection looks for newer versions now and then.
    fn shared(&self) -> bool {
        false
    }
}

/// A database in a local directory, held by a lock file; its collections' stores fail where
/// `faults` says so (tests only).
#[derive(Debug)]
pub(crate) struct LocalRoot {
    dir: PathBuf,
    #[cfg(feature = "faults")]
    faults: Option<Arc<Faults>>,
    /// Held for the life of the root (`None` for a destination root, e.g. a backup).
    _lock: Option<File>,
}

impl LocalRoot {
    /// Opens (creating if needed) the database directory `dir`, takes its lock (`Locked` when
    /// another handle holds it), and removes what interrupted creates, drops and document
    /// writes left.
    pub(crate) fn open(dir: &Path) -> Result<LocalRoot> {
        let mut root = LocalRoot::create(dir)?;
        let lock_path = dir.join("LOCK");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(Error::Locked(dir.to_path_buf())),
            Err(fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
        }
        root._lock = Some(lock);
        for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(CREATING) || name.starts_with(DROPPED) {
                fs::remove_dir_all(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
            } else if name.starts_with('.') && name.contains(".json.") {
                // A document write cut short (`.{doc}.{unique}`).
                fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
            }
        }
        Ok(root)
    }

    /// A root over directory `dir` without its lock, creating the directory: where a backup
    /// writes.
    pub(crate) fn create(dir: &Path) -> Result<LocalRoot> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(LocalRoot {
            dir: dir.to_path_buf(),
            #[cfg(feature = "faults")]
            faults: None,
            _lock: None,
        })
    }

    /// Whether `dir` is an existing directory.
    pub(crate) fn exists(dir: &Path) -> bool {
        dir.is_dir()
    }

    /// Whether `dir` is missing or empty (a backup's destination must be).
    pub(crate) fn is_empty(dir: &Path) -> bool {
        fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
    }

    /// Has the collections' stores fail where `faults` says so.
    #[cfg(feature = "faults")]
    pub(crate) fn with_faults(mut self, faults: Arc<Faults>) -> Self {
        self.faults = Some(faults);
        self
    }

    fn local(&self, name: &str) -> LocalStore {
        LocalStore::new(self.dir.join(name))
    }
}

impl Root for LocalRoot {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn store(&self, name: &str) -> Arc<dyn Store> {
        let inner = self.local(name);
        #[cfg(feature = "faults")]
        if let Some(faults) = &self.faults {
            return Arc::new(FaultyStore {
                inner,
                faults: faults.clone(),
            });
        }
        Arc::new(inner)
    }

    fn has_manifest(&self, name: &str) -> bool {
        fs::read_dir(self.dir.join(name)).is_ok_and(|entries| {
            entries
                .filter_map(|e| e.ok())
                .any(|e| e.file_name().to_str().is_some_and(is_manifest))
        })
    }

    fn data_files(&self, name: &str) -> usize {
        fs::read_dir(self.dir.join(name)).map_or(0, |entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(FileKind::is_collection_file)
                })
                .count()
        })
    }

    fn list(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))? {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            if let Some(name) = entry.file_name().to_str() {
                if !name.starts_with('.') {
                    names.push(name.to_string());
                }
            }
        }
        Ok(names)
    }

    fn stage(&self, name: &str) -> Result<(String, Arc<dyn Store>)> {
        let key = format!("{CREATING}{name}-{}", unique());
        let dir = self.dir.join(&key);
        fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok((key.clone(), self.store(&key)))
    }

    fn publish(&self, staged: &str, name: &str) -> Result<()> {
        let dir = self.dir.join(name);
        if dir.exists() {
            return Err(Error::AlreadyExists(format!("collection '{name}'")));
        }
        fs::rename(self.dir.join(staged), &dir).map_err(|e| Error::io(&dir, e))?;
        sync_dir(&self.dir)
    }

    fn discard(&self, staged: &str) {
        let _ = fs::remove_dir_all(self.dir.join(staged));
    }

    fn remove(&self, name: &str) -> Result<()> {
        let dir = self.dir.join(name);
        let trash = self.dir.join(format!("{DROPPED}{name}-{}", unique()));
        fs::rename(&dir, &trash).map_err(|e| Error::io(&dir, e))?;
        sync_dir(&self.dir)?;
        fs::remove_dir_all(&trash).map_err(|e| Error::io(&trash, e))
    }

    fn read_doc(&self, name: &str) -> Result<Option<String>> {
        let path = self.dir.join(name);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn write_doc(&self, name: &str, text: &str) -> Result<()> {
        let store = LocalStore::new(&self.dir);
        let tmp = format!(".{name}.{}", unique());
        let replaced = store
            .put(&tmp, text.as_bytes())
            .and_then(|_| store.rename(&tmp, name));
        if replaced.is_err() {
            let _ = store.delete(&tmp);
        }
        replaced.and_then(|()| store.sync())
    }
}
