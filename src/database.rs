//! A database: a directory of collections, held open by one handle at a time. It creates,
//! lists, opens and drops collections, and owns the create-on-first-write policy (`ingest`,
//! `append_or_create`) that every front end (Flight, Flight SQL, Python, C) uses.

mod ingest;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::Schema;

pub use ingest::{Ingest, WriteMode};

use crate::collection::Collection;
use crate::error::lock;
use crate::options::CollectionOptions;
use crate::schema::{check_name, Layout};
#[cfg(feature = "faults")]
use crate::storage::faults::Faults;
use crate::storage::manifest::{CommitError, Manifest};
use crate::storage::root::{LocalRoot, Root};
use crate::{Error, ErrorKind, Result};

/// The catalog document of the database (a name no collection can have).
const CATALOG: &str = "catalog.json";

fn not_empty(dest: &str) -> Error {
    Error::AlreadyExists(format!("backup destination {dest} (it is not empty)"))
}

/// An open database. Databases are fully independent: any number may be open in one process
/// (on different directories); nothing is shared between them.
#[derive(Debug)]
pub struct Database {
    /// Where the collections live; holds the lock that keeps a second handle out.
    root: Box<dyn Root>,
    open: Mutex<HashMap<String, Arc<Collection>>>,
    /// On shared storage, how often an open collection looks for versions other servers
    /// committed, and when each last did.
    refresh: Duration,
    looked: Mutex<HashMap<String, Instant>>,
}

impl Database {
    /// Opens the database in directory `path`, which must exist: for tools that read or look
    /// after a database, where a mistyped path must fail rather than create an empty one.
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Database> {
        let root = path.as_ref();
        if !LocalRoot::exists(root) {
            return Err(Error::NotFound(format!(
                "no database directory at {} (only `serve` and `import` create one)",
                root.display()
            )));
        }
        Database::open(root)
    }

    /// Opens (creating if needed) the database in directory `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Database> {
        Ok(Database::on(Box::new(LocalRoot::open(path.as_ref())?)))
    }

    /// The database on storage backend `root` (see [`crate::backend`]).
    pub fn on_root(root: Box<dyn Root>) -> Database {
        Database::on(root)
    }

    fn on(root: Box<dyn Root>) -> Database {
        Database {
            root,
            open: Mutex::new(HashMap::new()),
            refresh: Duration::from_secs(1),
            looked: Mutex::new(HashMap::new()),
        }
    }

    /// On shared storage (several servers over one bucket), an open collection is read at
    /// the newest version another server committed once `every` has passed since it last
    /// looked (default 1 s; zero: before every use). No effect on a local directory.
    pub fn with_refresh(mut self, every: Duration) -> Database {
        self.refresh = every;
        self
    }

    /// Notes that collection `name` was just read at its newest version.
    fn looked_now(&self, name: &str) {
        if self.root.shared() {
            lock(&self.looked).insert(name.to_string(), Instant::now());
        }
    }

    /// Whether open collection `name` should look for versions other servers committed: on
    /// shared storage, at most once per `refresh`.
    fn due(&self, name: &str) -> bool {
        if !self.root.shared() {
            return false;
        }
        {
            let mut looked = lock(&self.looked);
            let now = Instant::now();
            if looked
                .get(name)
                .is_some_and(|t| now.duration_since(*t) < self.refresh)
            {
                return false;
            }
            looked.insert(name.to_string(), now);
        }
        true
    }

    /// Opens the database in `path` with storage that fails when `faults` says so: for tests
    /// of what a failed write, rename or sync leaves behind.
    #[doc(hidden)]
    #[cfg(feature = "faults")]
    pub fn open_with_faults(path: impl AsRef<Path>, faults: Arc<Faults>) -> Result<Database> {
        let root = LocalRoot::open(path.as_ref())?.with_faults(faults);
        Ok(Database::on(Box::new(root)))
    }

    /// The database's directory.
    pub fn path(&self) -> &Path {
        self.root.path()
    }

    /// The database's catalog document: what front ends keep beside the collections (the
    /// server's external tables declared for every session), as text; `None` before one is
    /// written.
    pub fn catalog(&self) -> Result<Option<String>> {
        self.root.read_doc(CATALOG)
    }

    /// Replaces the catalog document atomically: a crash leaves the old text or the new.
    pub fn set_catalog(&self, text: &str) -> Result<()> {
        self.root.write_doc(CATALOG, text)
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
        let (staged, store) = self.root.stage(name)?;
        let made = self.create_with(name, &staged, || {
            first_manifest(&layout, &opts)?
                .commit(&*store)
                .map_err(CommitError::into_error)
        });
        if made.is_err() {
            self.root.discard(&staged);
        }
        made
    }

    /// Creates collection `name` from the staged place `staged`, after `write` has committed
    /// its first manifest there: the place is published whole, so the collection appears
    /// whole or not at all. `AlreadyExists` leaves `staged` untouched.
    fn create_with(
        &self,
        name: &str,
        staged: &str,
        write: impl FnOnce() -> Result<()>,
    ) -> Result<Arc<Collection>> {
        let mut open = self.lock_open();
        if open.contains_key(name) || self.exists(name) {
            return Err(Error::AlreadyExists(format!("collection '{name}'")));
        }
        write()?;
        self.root.publish(staged, name)?;
        let c = Collection::open(self.root.store(name))?;
        open.insert(name.to_string(), c.clone());
        self.looked_now(name);
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
        if let Some(c) = open.get(name).cloned() {
            drop(open);
            // When another server committed since, move to the newest version, opening only
            // the segments it adds (queries holding the old snapshot finish on it). Storage
            // that cannot be read fails the call; a collection that cannot follow (dropped and
            // made again) is opened afresh below.
            match self.due(name).then(|| c.try_refresh()) {
                None | Some(Ok(())) => {
                    c.check_files()?;
                    return Ok(c);
                }
                Some(Err(e)) if matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Io) => {
                    return Err(e)
                }
                Some(Err(_)) => {}
            }
            c.stop_indexing();
            open = self.lock_open();
        }
        if !self.root.has_manifest(name) {
            return Err(match self.root.data_files(name) {
                0 => Error::NotFound(format!("collection '{name}'")),
                n => Error::corrupt(
                    self.root.store(name).path("manifest-*.json"),
                    format!("missing, but the collection directory still holds {n} data files"),
                ),
            });
        }
        let c = Collection::open(self.root.store(name))?;
        open.insert(name.to_string(), c.clone());
        self.looked_now(name);
        Ok(c)
    }

    /// Whether a collection of this name exists (damaged ones included).
    pub fn exists(&self, name: &str) -> bool {
        check_name(name).is_ok() && (self.root.has_manifest(name) || self.root.data_files(name) > 0)
    }

    /// Names of all collections, sorted (damaged ones included: opening them says what is
    /// wrong).
    pub fn list_collections(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .root
            .list()?
            .into_iter()
            .filter(|name| self.exists(name))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Drops a collection and its files. Snapshots already taken stay readable until released.
    pub fn drop_collection(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let mut open = self.lock_open();
        if !self.exists(name) {
            return Err(Error::NotFound(format!("collection '{name}'")));
        }
        let handle = open.remove(name);
        let _writer = handle.as_ref().map(|c| c.mark_dropped());
        self.root.remove(name)
    }

    /// Backs up collection `only` (or every collection) into directory `to`, which must be
    /// new or empty; the copy opens as a database (see `Collection::backup`). A collection is
    /// copied under a temporary name and renamed into place, so a backup cut short holds
    /// whole collections only. A damaged collection fails the backup, naming it.
    pub fn backup(&self, to: &Path, only: Option<&str>) -> Result<Vec<crate::Backup>> {
        if !LocalRoot::is_empty(to) {
            return Err(not_empty(&to.display().to_string()));
        }
        self.backup_to(&LocalRoot::create(to)?, only)
    }

    /// Backs up as [`Database::backup`] does, into another backend's database (object
    /// storage: `omendb-object`), which must hold no collection and no catalog.
    pub fn backup_to(&self, dest: &dyn Root, only: Option<&str>) -> Result<Vec<crate::Backup>> {
        if !dest.list()?.is_empty() || dest.read_doc(CATALOG)?.is_some() {
            return Err(not_empty(&dest.path().display().to_string()));
        }
        let names = match only {
            Some(name) => vec![name.to_string()],
            None => self.list_collections()?,
        };
        let mut done = Vec::new();
        for name in names {
            let c = self.collection(&name)?;
            let (staged, store) = dest.stage(&name)?;
            let copied = c
                .backup(&*store)
                .and_then(|b| dest.publish(&staged, &name).map(|()| b));
            if copied.is_err() {
                dest.discard(&staged);
            }
            done.push(copied?);
        }
        if let (None, Some(text)) = (only, self.catalog()?) {
            dest.write_doc(CATALOG, &text)?;
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
