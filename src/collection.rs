//! A collection handle: its current snapshot, reads (`get`, `search`) and the one commit path
//! (`transact`: a `writer::Transaction` committed under the writer lock and published as a
//! new snapshot). The writes are in `collection/write.rs`, integrity checks and backup in
//! `collection/integrity.rs`, stats in `collection/stats.rs`; background merges and index
//! builds are scheduled by `writer::maintenance`, which calls back into the collection
//! (`Maintained`) to make and commit each one. Damage to mapped files is contained here: an
//! index found damaged is set aside and rebuilt; a segment changed under us marks the
//! collection damaged.

mod integrity;
mod stats;
mod write;

pub(crate) use write::refuse_stored;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use arrow_array::{Array, RecordBatch};
use arrow_schema::SchemaRef;

use crate::distance::Metric;
use crate::error::{lock, read, write};
use crate::index;
use crate::options::IndexSettings;
use crate::schema::Layout;
use crate::search::SearchRequest;
use crate::segment::Segment;
use crate::snapshot::{open_index, SegmentView, Snapshot};
use crate::storage::gc::remove_garbage;
use crate::storage::manifest::{manifest_name, IndexFileMeta, Manifest, SegmentMeta};
use crate::storage::{FileKind, Store};
use crate::task::Task;
use crate::writer::backpressure::Room;
use crate::writer::compact;
use crate::writer::maintenance::{Maintained, Maintenance};
use crate::writer::Transaction;
use crate::{Error, Result};

/// Opens the segments `metas` names (see `SegmentView::open`), in order. On storage that is
/// shared (object storage, where opening downloads files) several at once.
fn open_parts(
    store: &dyn Store,
    layout: &Layout,
    metric: Metric,
    metas: &[&SegmentMeta],
) -> Result<Vec<(SegmentView, Option<Error>)>> {
    let open = |meta: &SegmentMeta| SegmentView::open(store, layout, metric, meta, true);
    if !store.shared() || metas.len() < 2 {
        return metas.iter().map(|m| open(m)).collect();
    }
    let mut opened = Vec::with_capacity(metas.len());
    for group in metas.chunks(OPEN_AT_ONCE) {
        let results: Vec<Result<(SegmentView, Option<Error>)>> = std::thread::scope(|s| {
            let handles: Vec<_> = group.iter().map(|m| s.spawn(move || open(m))).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::Internal("opening a segment panicked".into()))
                    })
                })
                .collect()
        });
        for r in results {
            opened.push(r?);
        }
    }
    Ok(opened)
}

/// How many segments of shared storage are opened (downloaded) at once.
const OPEN_AT_ONCE: usize = 8;

/// How many times in a row a write tries again after another server committed first, and
/// for how long at most (it holds the writer lock meanwhile): past either, it fails with
/// `Conflict`, nothing written.
const MAX_LOST_RACES: usize = 16;
const MAX_RACING: std::time::Duration = std::time::Duration::from_secs(10);

/// An open collection. Cheap to share (`Arc`); every method may be called from any thread.
#[derive(Debug)]
pub struct Collection {
    store: Arc<dyn Store>,
    layout: Arc<Layout>,
    current: RwLock<Arc<Snapshot>>,
    /// The last committed manifest; holding the lock makes one writer at a time.
    writer: Mutex<Manifest>,
    dropped: AtomicBool,
    /// Background merges and index builds.
    maintenance: Maintenance<Collection>,
    /// Set when a mapped file was found changed under the collection: every later use fails.
    damage: Mutex<Option<(PathBuf, String)>>,
    /// When the mapped files were last checked for outside changes.
    last_check: Mutex<Instant>,
    /// Where writes wait while too many rows are not yet indexed.
    room: Room,
}

impl Collection {
    /// Opens the collection stored in `store`: reads the manifest, maps and verifies every
    /// segment, loads deletion bitmaps, and removes files no manifest names (left by a crash).
    pub(crate) fn open(store: Arc<dyn Store>) -> Result<Arc<Collection>> {
        let manifest = Manifest::load(&*store)?;
        let schema = manifest.schema(&*store)?;
        let layout = Arc::new(Layout::from_schema(
            &manifest.name,
            &schema,
            &manifest.id_column,
            Some(&manifest.vector_column),
            None,
        )?);
        if layout.schema.fields() != schema.fields() || layout.dim != manifest.dim {
            return Err(Error::corrupt(
                store.path(&manifest.file(&*store)),
                "stored schema does not match the collection definition",
            ));
        }
        let metas: Vec<&SegmentMeta> = manifest.segments.iter().collect();
        let mut parts = Vec::with_capacity(metas.len());
        let mut damaged = Vec::new();
        for ((part, index_damage), meta) in open_parts(&*store, &layout, manifest.metric, &metas)?
            .into_iter()
            .zip(&metas)
        {
            if let Some(e) = index_damage {
                damaged.push((meta.id, e));
            }
            parts.push(part);
        }
        if !store.shared() {
            remove_garbage(&*store, &manifest)?;
        }
        let snapshot = Snapshot {
            layout: layout.clone(),
            metric: manifest.metric,
            version: manifest.version,
            parts,
            index: manifest.index,
            together: Default::default(),
        };
        let collection = Arc::new_cyclic(|me| Collection {
            store,
            layout,
            current: RwLock::new(Arc::new(snapshot)),
            writer: Mutex::new(manifest),
            dropped: AtomicBool::new(false),
            maintenance: Maintenance::new(me.clone()),
            damage: Mutex::new(None),
            last_check: Mutex::new(Instant::now()),
            room: Room::default(),
        });
        // A damaged index is set aside and rebuilt from its segment; the segment is searched
        // exactly meanwhile.
        for (seg_id, e) in damaged {
            collection.set_aside_index(seg_id, &e)?;
        }
        // Segments that reached the threshold but whose build was interrupted (a crash or a
        // close) get their index now, and merges left undone are done.
        collection.maintenance.schedule();
        Ok(collection)
    }

    /// The collection's name.
    pub fn name(&self) -> &str {
        &self.layout.name
    }

    /// The collection's schema.
    pub fn schema(&self) -> SchemaRef {
        self.layout.schema.clone()
    }

    /// The position of the id column in the schema.
    pub fn id_index(&self) -> usize {
        self.layout.id_index
    }

    /// The position of the vector column in the schema.
    pub fn vector_index(&self) -> usize {
        self.layout.vector_index
    }

    /// The vectors' dimension.
    pub fn dim(&self) -> usize {
        self.layout.dim
    }

    /// The metric rows are ranked by.
    pub fn metric(&self) -> Metric {
        self.snapshot().metric
    }

    /// The current committed state; it stays valid (and unchanged) while writers commit.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        read(&self.current).clone()
    }

    /// Live rows.
    pub fn count(&self) -> usize {
        self.snapshot().count()
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The rows with these ids, in the order asked (missing ids are skipped).
    pub fn get(&self, ids: &dyn Array) -> Result<RecordBatch> {
        self.snapshot().get(ids)
    }

    /// The `k` nearest rows to `query` with their `_distance`, nearest first.
    pub fn search(&self, query: &[f32], k: usize) -> Result<RecordBatch> {
        let snap = self.snapshot();
        let hits = snap.search(&SearchRequest::new(query, k))?;
        snap.hits_to_batch(hits.first().map_or(&[], Vec::as_slice))
    }

    /// Waits, within `write_stall_ms`, until the rows not yet indexed are within the
    /// collection's bound (`max_unindexed_rows`); refused with `ResourceExhausted` after.
    /// Every write that adds rows calls it before writing anything. Returns how long it waited.
    pub(crate) fn admit(&self, deadline: Option<Instant>) -> Result<std::time::Duration> {
        self.room
            .admit(|| self.snapshot(), || self.maintenance.schedule(), deadline)
    }

    /// The one commit path: under the writer lock, `edit` changes the next version in a
    /// transaction and returns the parts of the snapshot it makes; the transaction commits and
    /// the snapshot is published. On error nothing changes and the transaction's files are
    /// removed. On shared storage, a commit that another server's commit beat is tried again on
    /// the newest version (`catch_up`): `edit` runs again there, so what it checks (ids not
    /// stored yet) and selects (rows to delete or replace) is decided on the version the
    /// change lands on, and a change is never applied twice or on rows that changed under it.
    fn transact<R>(
        &self,
        edit: impl FnMut(&mut Transaction<'_>, &Snapshot) -> Result<(R, Vec<SegmentView>)>,
    ) -> Result<R> {
        self.transact_retrying(MAX_LOST_RACES, edit)
    }

    /// `transact` for background work (merges, index builds): a commit that lost a race is
    /// tried again once on the newest version, then given up (the work is planned again on
    /// what the other server committed), so that it never holds the writer lock through a
    /// run of lost races while the caller's writes wait.
    fn transact_background<R>(
        &self,
        edit: impl FnMut(&mut Transaction<'_>, &Snapshot) -> Result<(R, Vec<SegmentView>)>,
    ) -> Result<R> {
        self.transact_retrying(1, edit)
    }

    fn transact_retrying<R>(
        &self,
        retries: usize,
        mut edit: impl FnMut(&mut Transaction<'_>, &Snapshot) -> Result<(R, Vec<SegmentView>)>,
    ) -> Result<R> {
        let mut manifest = self.writable()?;
        let (mut lost, started) = (0, Instant::now());
        loop {
            let snapshot = self.snapshot();
            let mut txn = Transaction::begin(&*self.store, &manifest);
            let (result, parts) = edit(&mut txn, &snapshot)?;
            if txn.next.segments == manifest.segments
                && txn.next.next_file_id == manifest.next_file_id
            {
                return Ok(result); // nothing changed: no new version
            }
            match txn.commit() {
                Ok(next) => {
                    *write(&self.current) = Arc::new(snapshot.with_parts(next.version, parts));
                    *manifest = next;
                    drop(manifest);
                    self.room.freed();
                    return Ok(result);
                }
                Err(Error::Conflict(_))
                    if self.store.shared() && lost < retries && started.elapsed() < MAX_RACING =>
                {
                    lost += 1;
                    drop(parts);
                    self.catch_up(&mut manifest)?;
                }
                Err(Error::Conflict(why)) if lost > 0 => {
                    return Err(Error::Conflict(format!(
                        "{why} (tried again on the newest version {lost} times)"
                    )));
                }
                Err(e) => {
                    self.unsettled(&e, manifest.version + 1);
                    return Err(e);
                }
            }
        }
    }

    /// Moves the collection to the newest committed version on its storage (another server's
    /// commits): the segments both versions name keep their open views; the others are opened.
    /// `held` is the writer lock's manifest. Opening new segments may download them: while it
    /// did, further versions may have landed, and those are read too (up to two more passes,
    /// each with less to download), so that a write tried again after it starts from a fresh
    /// version. Returns whether it moved.
    fn catch_up(&self, held: &mut MutexGuard<'_, Manifest>) -> Result<bool> {
        let mut moved = false;
        for _ in 0..3 {
            let Some(newest) = Manifest::load_newer(&*self.store, held.version)? else {
                return Ok(moved);
            };
            moved = true;
            if (
                &newest.id_column,
                &newest.vector_column,
                newest.dim,
                newest.metric,
            ) != (&held.id_column, &held.vector_column, held.dim, held.metric)
            {
                return Err(Error::Conflict(format!(
                    "collection '{}' was dropped and made again by another writer: open it \
                     again",
                    self.name()
                )));
            }
            let current = self.snapshot();
            let kept: Vec<Option<&SegmentView>> = newest
                .segments
                .iter()
                .map(|meta| {
                    let p = held.segments.iter().position(|m| m == meta)?;
                    current.parts.get(p)
                })
                .collect();
            let new: Vec<&SegmentMeta> = newest
                .segments
                .iter()
                .zip(&kept)
                .filter(|(_, k)| k.is_none())
                .map(|(meta, _)| meta)
                .collect();
            let opened = !new.is_empty();
            let mut new = open_parts(&*self.store, &self.layout, newest.metric, &new)?.into_iter();
            let parts: Vec<SegmentView> = kept
                .into_iter()
                .map(|k| match k {
                    Some(part) => Ok(part.clone()),
                    None => new
                        .next()
                        .map(|(part, _)| part)
                        .ok_or_else(|| Error::Internal("a segment was not opened".into())),
                })
                .collect::<Result<_>>()?;
            let mut snapshot = current.with_parts(newest.version, parts);
            snapshot.index = newest.index;
            *write(&self.current) = Arc::new(snapshot);
            **held = newest;
            if !opened {
                break;
            }
        }
        Ok(moved)
    }

    /// Moves the collection to the newest committed version on its storage (see `catch_up`)
    /// unless a write holds the writer lock: a reader never waits behind a write (which
    /// catches up by itself if it loses its commit race), it reads what the collection has and
    /// looks again after the database's refresh period. Merges and index builds are planned
    /// again after it.
    pub(crate) fn try_refresh(&self) -> Result<()> {
        if let Some((path, reason)) = lock(&self.damage).clone() {
            return Err(Error::corrupt(path, reason));
        }
        let mut manifest = match self.writer.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(()),
        };
        if self.dropped.load(Ordering::SeqCst) {
            return Err(Error::NotFound(format!(
                "collection '{}' was dropped",
                self.name()
            )));
        }
        if self.catch_up(&mut manifest)? {
            drop(manifest);
            self.room.freed();
            self.maintenance.schedule();
        }
        Ok(())
    }

    /// Stops the worker and refuses every later write: the collection is being dropped. The
    /// writer lock is held while the guard lives.
    pub(crate) fn mark_dropped(&self) -> MutexGuard<'_, Manifest> {
        self.maintenance.stop();
        let guard = self.lock_writer();
        self.dropped.store(true, Ordering::SeqCst);
        guard
    }

    fn lock_writer(&self) -> MutexGuard<'_, Manifest> {
        lock(&self.writer)
    }

    /// After a commit whose outcome is unknown, every later use fails until the collection is
    /// opened again (and reads whichever version is on disk).
    fn unsettled(&self, e: &Error, version: u64) {
        if let Error::Unsettled(why) = e {
            *lock(&self.damage) = Some((self.store.path(&manifest_name(version)), why.clone()));
        }
    }

    fn writable(&self) -> Result<MutexGuard<'_, Manifest>> {
        if let Some((path, reason)) = lock(&self.damage).clone() {
            return Err(Error::corrupt(path, reason));
        }
        let guard = self.lock_writer();
        if self.dropped.load(Ordering::SeqCst) {
            return Err(Error::NotFound(format!(
                "collection '{}' was dropped",
                self.name()
            )));
        }
        Ok(guard)
    }
    /// Drops a damaged index from the manifest (its file is renamed `*.damaged`, kept for
    /// inspection) and queues the segment for a rebuild whatever the threshold.
    fn set_aside_index(&self, seg_id: u64, e: &Error) -> Result<()> {
        let file = self.transact_background(|txn, snapshot| {
            let meta = txn
                .next
                .position(seg_id)
                .and_then(|p| txn.next.segments[p].index.take());
            Ok((meta.map(|m| m.file), snapshot.parts.clone()))
        })?;
        if let Some(file) = file {
            let _ = self.store.rename(&file, &format!("{file}.damaged"));
        }
        self.maintenance.rebuild(
            seg_id,
            format!("{e}; the index was set aside and is rebuilt from its segment"),
        );
        Ok(())
    }
    /// Builds an index (the collection's kind, with its parameters) for every segment that has
    /// none and holds at least `min_rows` rows, commits each, and returns how many were built.
    /// The index is built without holding the writer lock, so appends and deletes go on
    /// meanwhile. Segments a background merge reads or makes while the call runs (a merge of
    /// small segments makes an unindexed one) are waited for and indexed too; segments that
    /// writes keep adding during the call are left after a bounded number of passes.
    pub fn build_index(&self, min_rows: usize) -> Result<usize> {
        self.maintenance.build_now(self, min_rows)
    }

    /// Merges every segment that fits into as few segments as `max_segment_rows` allows,
    /// dropping deleted rows, with the index that suits each merged size; returns how many
    /// merges ran. Readers keep their snapshots and writers go on meanwhile.
    pub fn compact(&self) -> Result<usize> {
        self.maintenance.compact(self)
    }

    /// Waits until the background worker has indexed every segment at or over the threshold
    /// (returns at once when nothing is being built).
    pub fn wait_for_indexing(&self) {
        self.maintenance.wait();
    }

    /// Stops the background worker (an unfinished index is discarded) and starts no other.
    pub(crate) fn stop_indexing(&self) {
        self.maintenance.stop();
    }
}

/// How the collection makes and commits the merges and index builds its maintenance
/// schedules.
impl Maintained for Collection {
    fn maintenance(&self) -> &Maintenance<Collection> {
        &self.maintenance
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        Collection::snapshot(self)
    }

    fn settings(&self) -> IndexSettings {
        self.lock_writer().index
    }

    fn merge(
        &self,
        inputs: Vec<SegmentView>,
        settings: &IndexSettings,
        cancel: &Task,
    ) -> Result<bool> {
        let Some(merged) = compact::merge(
            &self.store,
            &self.layout,
            self.metric(),
            settings,
            inputs,
            cancel,
        )?
        else {
            return Ok(false);
        };
        let retired = self.transact_background(|txn, current| {
            Ok(
                match compact::commit(txn, current, &merged, &self.layout)? {
                    Some((parts, retired)) => (Some(retired), parts),
                    None => (None, current.parts.clone()),
                },
            )
        })?;
        let Some(retired) = retired else {
            return Ok(false);
        };
        for (seg, files) in retired {
            seg.retire(self.store.clone(), files);
        }
        Ok(true)
    }

    fn index(
        &self,
        seg: &Segment,
        settings: &IndexSettings,
        cancel: &Task,
    ) -> Result<Option<bool>> {
        let Some((kind, bytes)) = index::build(settings, &seg.view(self.metric()), None, cancel)?
        else {
            return Ok(None); // cancelled
        };
        let done = self.transact_background(|txn, snapshot| {
            let Some(p) = txn.next.position(seg.id) else {
                return Ok((false, snapshot.parts.clone())); // the segment went away
            };
            if txn.next.segments[p].index.is_some() {
                return Ok((false, snapshot.parts.clone())); // indexed meanwhile
            }
            let file = txn.write_file(FileKind::Index(kind), seg.id, |store, name| {
                store.put(name, &bytes)
            })?;
            let meta = IndexFileMeta {
                kind,
                file: file.file,
                bytes: file.bytes,
                crc32: file.crc32,
                mtime_ns: file.mtime_ns,
            };
            let index = open_index(txn.store(), &meta)?;
            txn.next.segments[p].index = Some(meta);
            let parts = snapshot
                .parts
                .iter()
                .map(|part| {
                    let mut part = part.clone();
                    if part.seg.id == seg.id {
                        part.index = Some(index.clone());
                    }
                    part
                })
                .collect();
            Ok((true, parts))
        })?;
        Ok(Some(done))
    }
}
