//! A database: a directory of collections, held open by one handle at a time.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arrow_schema::Schema;

use crate::collection::{Collection, CollectionOptions};
use crate::storage::{self, MANIFEST};
use crate::validate::check_name;
use crate::{Error, Result};

/// An open database. Databases are fully independent: any number may be open in one process
/// (on different directories); nothing is shared between them.
#[derive(Debug)]
pub struct Database {
    root: PathBuf,
    /// Held for the life of the handle: a second open of the same directory fails.
    _lock: File,
    open: Mutex<HashMap<String, Arc<Collection>>>,
}

impl Database {
    /// Opens (creating if needed) the database in directory `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Database> {
        let root = path.as_ref().to_path_buf();
        fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        let lock_path = root.join("LOCK");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Locked(root)),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
        }
        // Leftovers of creates and drops that crashed half-way.
        for entry in fs::read_dir(&root).map_err(|e| Error::io(&root, e))? {
            let entry = entry.map_err(|e| Error::io(&root, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".creating-") || name.starts_with(".dropped-") {
                fs::remove_dir_all(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
            }
        }
        Ok(Database {
            root,
            _lock: lock,
            open: Mutex::new(HashMap::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Creates a collection. `schema` needs an id column (Utf8 or Int64; `opts.id_column`) and
    /// one `FixedSizeList<Float32, d>` vector column.
    pub fn create_collection(
        &self,
        name: &str,
        schema: &Schema,
        opts: CollectionOptions,
    ) -> Result<Arc<Collection>> {
        check_name(name)?;
        let mut open = self.lock_open();
        let dir = self.root.join(name);
        if open.contains_key(name) || dir.exists() {
            return Err(Error::AlreadyExists(format!("collection '{name}'")));
        }
        let tmp = self.root.join(format!(".creating-{name}-{}", unique()));
        fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let made = Collection::initialize(&tmp, name, schema, &opts).and_then(|()| {
            fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
            storage::sync_dir(&self.root)
        });
        if let Err(e) = made {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let c = Collection::open(&dir)?;
        open.insert(name.to_string(), c.clone());
        Ok(c)
    }

    /// Opens an existing collection.
    pub fn collection(&self, name: &str) -> Result<Arc<Collection>> {
        check_name(name)?;
        let mut open = self.lock_open();
        if let Some(c) = open.get(name) {
            return Ok(c.clone());
        }
        let dir = self.root.join(name);
        if !dir.join(MANIFEST).is_file() {
            return Err(Error::NotFound(format!("collection '{name}'")));
        }
        let c = Collection::open(&dir)?;
        open.insert(name.to_string(), c.clone());
        Ok(c)
    }

    /// Whether a collection of this name exists.
    pub fn exists(&self, name: &str) -> bool {
        check_name(name).is_ok() && self.root.join(name).join(MANIFEST).is_file()
    }

    /// Names of all collections, sorted.
    pub fn list_collections(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(|e| Error::io(&self.root, e))? {
            let entry = entry.map_err(|e| Error::io(&self.root, e))?;
            if let Some(name) = entry.file_name().to_str() {
                if check_name(name).is_ok() && entry.path().join(MANIFEST).is_file() {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Drops a collection and its files. Snapshots already taken stay readable until released.
    pub fn drop_collection(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let mut open = self.lock_open();
        let dir = self.root.join(name);
        if !dir.join(MANIFEST).is_file() {
            return Err(Error::NotFound(format!("collection '{name}'")));
        }
        let handle = open.remove(name);
        let _writer = handle.as_ref().map(|c| c.mark_dropped());
        let trash = self.root.join(format!(".dropped-{name}-{}", unique()));
        fs::rename(&dir, &trash).map_err(|e| Error::io(&dir, e))?;
        storage::sync_dir(&self.root)?;
        fs::remove_dir_all(&trash).map_err(|e| Error::io(&trash, e))
    }

    fn lock_open(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Collection>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Database {
    /// Stops background index builds before the directory lock is released, so nothing
    /// writes to the directory after this handle is gone.
    fn drop(&mut self) {
        for c in self.lock_open().values() {
            c.stop_indexing();
        }
    }
}

fn unique() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{}-{t}", std::process::id())
}
