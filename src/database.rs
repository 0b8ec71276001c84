//! A database: a directory of collections, held open by one handle at a time. It creates,
//! lists, opens and drops collections, and owns the create-on-first-write policy (`ingest`,
//! `append_or_create`) that every front end (Flight, Flight SQL, Python, C) uses.

mod ingest;

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use arrow_array::RecordBatch;
use arrow_schema::Schema;

pub use ingest::{Ingest, WriteMode};

use crate::collection::Collection;
use crate::error::lock;
use crate::options::CollectionOptions;
use crate::schema::{check_name, Layout};
use crate::storage::faults::{Faults, FaultyStore};
use crate::storage::local::{sync_dir, LocalStore};
use crate::storage::manifest::{CommitError, Manifest, MANIFEST};
use crate::storage::{unique, FileKind, Store};
use crate::{Error, Result};

/// The catalog document's file in the database directory (a dot: never a collection's name).
const CATALOG: &str = "catalog.json";

/// Writes the catalog document of the database in `dir`: written beside it and synced, renamed
/// over it, and the directory synced, so a crash leaves the old text or the new.
fn write_catalog(dir: &Path, text: &str) -> Result<()> {
    let store = LocalStore::new(dir);
    let tmp = format!(".{CATALOG}.{}", unique());
    let replaced = store
        .put(&tmp, text.as_bytes())
        .and_then(|_| store.rename(&tmp, CATALOG));
    if replaced.is_err() {
        let _ = store.delete(&tmp);
    }
    replaced.and_then(|()| store.sync())
}

/// An open database. Databases are fully independent: any number may be open in one process
/// (on different directories); nothing is shared between them.
#[derive(Debug)]
pub struct Database {
    root: PathBuf,
    /// Held for the life of the handle: a second open of the same directory fails.
    _lock: File,
    open: Mutex<HashMap<String, Arc<Collection>>>,
    /// Failures to inject into the collections' storage (tests only).
    faults: Option<Arc<Faults>>,
}

impl Database {
    /// Opens the database in directory `path`, which must exist: for tools that read or look
    /// after a database, where a mistyped path must fail rather than create an empty one.
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Database> {
        let root = path.as_ref();
        if !root.is_dir() {
            return Err(Error::NotFound(format!(
                "no database directory at {} (only `serve` and `import` create one)",
                root.display()
            )));
        }
        Database::open(root)
    }

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
            } else if name.starts_with(&format!(".{CATALOG}.")) {
                fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
            }
        }
        Ok(Database {
            root,
            _lock: lock,
            open: Mutex::new(HashMap::new()),
            faults: None,
        })
    }

    /// Opens the database in `path` with storage that fails when `faults` says so: for tests
    /// of what a failed write, rename or sync leaves behind.
    #[doc(hidden)]
    pub fn open_with_faults(path: impl AsRef<Path>, faults: Arc<Faults>) -> Result<Database> {
        let mut db = Database::open(path)?;
        db.faults = Some(faults);
        Ok(db)
    }

    /// The store of the collection in `dir`.
    fn store(&self, dir: PathBuf) -> Arc<dyn Store> {
        let inner = LocalStore::new(dir);
        match &self.faults {
            Some(faults) => Arc::new(FaultyStore {
                inner,
                faults: faults.clone(),
            }),
            None => Arc::new(inner),
        }
    }

    /// The database's directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The database's catalog document: what front ends keep beside the collections (the
    /// server's external tables declared for every session), as text; `None` before one is
    /// written.
    pub fn catalog(&self) -> Result<Option<String>> {
        let path = self.root.join(CATALOG);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Replaces the catalog document atomically (see [`write_catalog`]).
    pub fn set_catalog(&self, text: &str) -> Result<()> {
        write_catalog(&self.root, text)
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
        opts.index.check()?;
        let layout = Layout::from_schema(
            name,
            schema,
            &opts.id_column,
            opts.vector_column.as_deref(),
            opts.vector_type,
        )?;
        let tmp = self.staging_dir(name)?;
        let made = self.create_with(name, &tmp, |store| {
            first_manifest(&layout, &opts)?
                .commit(store)
                .map_err(CommitError::into_error)
        });
        if made.is_err() {
            let _ = fs::remove_dir_all(tmp.dir());
        }
        made
    }

    /// A fresh directory in the root where a new collection is prepared before it appears.
    fn staging_dir(&self, name: &str) -> Result<LocalStore> {
        let dir = self.root.join(format!(".creating-{name}-{}", unique()));
        fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(LocalStore::new(dir))
    }

    /// Creates collection `name` from the staging directory `tmp`, after `write` has committed
    /// its first manifest there: the directory is renamed into place, so the collection
    /// appears whole or not at all. `AlreadyExists` leaves `tmp` untouched.
    fn create_with(
        &self,
        name: &str,
        tmp: &LocalStore,
        write: impl FnOnce(&dyn Store) -> Result<()>,
    ) -> Result<Arc<Collection>> {
        let mut open = self.lock_open();
        let dir = self.root.join(name);
        if open.contains_key(name) || dir.exists() {
            return Err(Error::AlreadyExists(format!("collection '{name}'")));
        }
        write(tmp)?;
        fs::rename(tmp.dir(), &dir).map_err(|e| Error::io(&dir, e))?;
        sync_dir(&self.root)?;
        let c = Collection::open(self.store(dir))?;
        open.insert(name.to_string(), c.clone());
        Ok(c)
    }

    /// Starts a streamed, all-or-nothing write of rows to collection `name` in `mode` (see
    /// [`WriteMode`]); a collection it creates gets `opts` and the schema of the first rows.
    /// Nothing is visible until [`Ingest::commit`], which enforces the mode.
    pub fn ingest(
        self: &Arc<Self>,
        name: &str,
        mode: WriteMode,
        opts: CollectionOptions,
    ) -> Result<Ingest> {
        Ingest::new(self.clone(), name, mode, opts)
    }

    /// Appends `batches` to collection `name` in one commit, creating it with `opts` (and the
    /// schema of the batches) if it does not exist. Returns the rows written.
    pub fn append_or_create(
        self: &Arc<Self>,
        name: &str,
        opts: CollectionOptions,
        batches: &[RecordBatch],
    ) -> Result<usize> {
        let mut ingest = self.ingest(name, WriteMode::CreateOrAppend, opts)?;
        for b in batches {
            ingest.push(b)?;
        }
        Ok(ingest.commit()?.1)
    }

    /// Opens an existing collection. A collection whose files were changed or lost fails with
    /// `Corrupt` naming the file; one whose `MANIFEST` is missing while its files remain is
    /// damaged too, not absent.
    pub fn collection(&self, name: &str) -> Result<Arc<Collection>> {
        check_name(name)?;
        let mut open = self.lock_open();
        if let Some(c) = open.get(name) {
            let c = c.clone();
            drop(open);
            c.check_files()?;
            return Ok(c);
        }
        let dir = self.root.join(name);
        if !dir.join(MANIFEST).is_file() {
            return Err(match orphaned_files(&dir) {
                0 => Error::NotFound(format!("collection '{name}'")),
                n => Error::corrupt(
                    dir.join(MANIFEST),
                    format!("missing, but the collection directory still holds {n} data files"),
                ),
            });
        }
        let c = Collection::open(self.store(dir))?;
        open.insert(name.to_string(), c.clone());
        Ok(c)
    }

    /// Whether a collection of this name exists (damaged ones included).
    pub fn exists(&self, name: &str) -> bool {
        check_name(name).is_ok() && {
            let dir = self.root.join(name);
            dir.join(MANIFEST).is_file() || orphaned_files(&dir) > 0
        }
    }

    /// Names of all collections, sorted (damaged ones included: opening them says what is
    /// wrong).
    pub fn list_collections(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(|e| Error::io(&self.root, e))? {
            let entry = entry.map_err(|e| Error::io(&self.root, e))?;
            if let Some(name) = entry.file_name().to_str() {
                if self.exists(name) {
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
        if !self.exists(name) {
            return Err(Error::NotFound(format!("collection '{name}'")));
        }
        let handle = open.remove(name);
        let _writer = handle.as_ref().map(|c| c.mark_dropped());
        let trash = self.root.join(format!(".dropped-{name}-{}", unique()));
        fs::rename(&dir, &trash).map_err(|e| Error::io(&dir, e))?;
        sync_dir(&self.root)?;
        fs::remove_dir_all(&trash).map_err(|e| Error::io(&trash, e))
    }

    /// Backs up collection `only` (or every collection) into directory `to`, which must be
    /// new or empty; the copy opens as a database (see `Collection::backup`). A collection is
    /// copied under a temporary name and renamed into place, so a backup cut short holds
    /// whole collections only. A damaged collection fails the backup, naming it.
    pub fn backup(&self, to: &Path, only: Option<&str>) -> Result<Vec<crate::Backup>> {
        if fs::read_dir(to).is_ok_and(|mut d| d.next().is_some()) {
            return Err(Error::AlreadyExists(format!(
                "backup destination {} (it is not empty)",
                to.display()
            )));
        }
        fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
        let names = match only {
            Some(name) => vec![name.to_string()],
            None => self.list_collections()?,
        };
        let mut done = Vec::new();
        for name in names {
            let c = self.collection(&name)?;
            let tmp = to.join(format!(".creating-{name}-{}", unique()));
            let copied = c.backup(&tmp).and_then(|b| {
                let dir = to.join(&name);
                fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
                sync_dir(to)?;
                Ok(b)
            });
            if copied.is_err() {
                let _ = fs::remove_dir_all(&tmp);
            }
            done.push(copied?);
        }
        if let (None, Some(text)) = (only, self.catalog()?) {
            write_catalog(to, &text)?;
        }
        Ok(done)
    }

    /// Closes the database: with `wait`, first lets the background index builds and merges
    /// of the open collections finish; then stops them (an unfinished build is discarded).
    /// The directory is released when the last handle is dropped.
    pub fn close(&self, wait: bool) {
        let open: Vec<Arc<Collection>> = self.lock_open().values().cloned().collect();
        for c in &open {
            if wait {
                c.wait_for_indexing();
            }
            c.stop_indexing();
        }
    }

    fn lock_open(&self) -> MutexGuard<'_, HashMap<String, Arc<Collection>>> {
        lock(&self.open)
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

/// The first manifest of a collection with this layout and these options.
fn first_manifest(layout: &Layout, opts: &CollectionOptions) -> Result<Manifest> {
    Manifest::first(
        &layout.name,
        &layout.schema,
        layout.id_column(),
        layout.vector_column(),
        layout.dim,
        opts.metric,
        opts.index,
    )
}

/// How many collection data files `dir` holds (0 when it is no directory).
fn orphaned_files(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |entries| {
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
