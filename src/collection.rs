//! A collection handle: its current snapshot, reads (`get`, `search`), and writes (`append`,
//! `delete`, index builds), each one `writer::Transaction` committed under the writer lock and
//! published as a new snapshot. Background index builds run on the collection's
//! `writer::background::Worker`. Damage to mapped files is contained here: an index found
//! damaged is set aside and rebuilt; a segment changed under us marks the collection damaged.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant};

use arrow_array::{Array, BooleanArray, RecordBatch};
use arrow_schema::SchemaRef;

use crate::distance::Metric;
use crate::error::{lock, read, write};
use crate::ids::{ids_of, IdRef};
use crate::index;
use crate::options::{IndexKind, IndexSettings};
use crate::schema::Layout;
use crate::search::SearchRequest;
use crate::segment::Segment;
use crate::snapshot::{open_index, Part, Snapshot};
use crate::stats::{Backup, IndexParams, Stats};
use crate::storage::gc::remove_garbage;
use crate::storage::manifest::{IndexFileMeta, Manifest, SegmentMeta, MANIFEST};
use crate::storage::{FileKind, Store};
use crate::task::Task;
use crate::writer::append::Staged;
use crate::writer::background::Worker;
use crate::writer::compact;
use crate::writer::delete::delete_rows;
use crate::writer::policy::{self, Moment, SegInfo};
use crate::writer::Transaction;
use crate::{Error, Result};

/// An open collection. Cheap to share (`Arc`); every method may be called from any thread.
#[derive(Debug)]
pub struct Collection {
    store: Arc<dyn Store>,
    layout: Arc<Layout>,
    current: RwLock<Arc<Snapshot>>,
    /// The last committed manifest; holding the lock makes one writer at a time.
    writer: Mutex<Manifest>,
    dropped: AtomicBool,
    /// This collection's own `Arc`, for the background worker to hold while it works.
    me: Weak<Collection>,
    worker: Worker,
    /// Set when a mapped file was found changed under the collection: every later use fails.
    damage: Mutex<Option<(PathBuf, String)>>,
    /// When the mapped files were last checked for outside changes.
    last_check: Mutex<Instant>,
    /// When rows were last written (merges of fresh rows wait for a quiet moment).
    last_write: Mutex<Instant>,
    /// Merges of small unindexed segments, beside the worker (which builds graphs), so small
    /// writes do not pile up while a graph is built.
    merger: Worker,
    /// Segments a running merge is reading: no other merge takes them.
    claimed: Mutex<HashSet<u64>>,
    /// Merges and index builds running now (for stats and metrics).
    merges_running: AtomicUsize,
    builds_running: AtomicUsize,
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
                store.path(MANIFEST),
                "stored schema does not match the collection definition",
            ));
        }
        let mut parts = Vec::with_capacity(manifest.segments.len());
        let mut damaged = Vec::new();
        for meta in &manifest.segments {
            let (part, index_damage) = Part::open(&*store, &layout, manifest.metric, meta, true)?;
            if let Some(e) = index_damage {
                damaged.push((meta.id, e));
            }
            parts.push(part);
        }
        remove_garbage(&*store, &manifest)?;
        let snapshot = Snapshot {
            layout: layout.clone(),
            metric: manifest.metric,
            version: manifest.version,
            parts,
            index: manifest.index,
        };
        let collection = Arc::new_cyclic(|me| Collection {
            store,
            layout,
            current: RwLock::new(Arc::new(snapshot)),
            writer: Mutex::new(manifest),
            dropped: AtomicBool::new(false),
            me: me.clone(),
            worker: Worker::default(),
            damage: Mutex::new(None),
            last_check: Mutex::new(Instant::now()),
            last_write: Mutex::new(Instant::now()),
            merger: Worker::default(),
            claimed: Mutex::new(HashSet::new()),
            merges_running: AtomicUsize::new(0),
            builds_running: AtomicUsize::new(0),
        });
        // A damaged index is set aside and rebuilt from its segment; the segment is searched
        // exactly meanwhile.
        for (seg_id, e) in damaged {
            collection.set_aside_index(seg_id, &e)?;
        }
        // Segments that reached the threshold but whose build was interrupted (a crash or a
        // close) get their index now, and merges left undone are done.
        collection.schedule_work();
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

    /// Appends `batches` as one new segment. Every batch is validated (schema, dimension,
    /// nulls, non-finite values, duplicate ids within the batches and against stored rows)
    /// before anything is written; a refused append leaves the collection as it was.
    /// Returns the number of rows appended.
    pub fn append(&self, batches: &[RecordBatch]) -> Result<usize> {
        let Some(batch) = self.prepare_all(batches)? else {
            return Ok(0);
        };
        let ids = batch.column(self.layout.id_index).clone();
        let check = |snap: &Snapshot| refuse_stored(snap, snap.first_stored(ids_of(ids.as_ref())));
        // Refuse early, before writing, what the commit would refuse.
        check(&self.snapshot())?;
        let staged = Staged::write(
            self.store.clone(),
            &self.layout,
            self.metric(),
            &batch,
            &crate::storage::unique(),
        )?;
        let rows = batch.num_rows();
        drop(batch);
        self.commit_staged(vec![staged], check)?;
        Ok(rows)
    }

    /// `batches` in the layout as one batch (`None` when they hold no rows), refused if they
    /// break the schema or repeat an id.
    fn prepare_all(&self, batches: &[RecordBatch]) -> Result<Option<RecordBatch>> {
        let prepared = batches
            .iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| self.layout.prepare(b, self.metric()))
            .collect::<Result<Vec<_>>>()?;
        Ok(match prepared.len() {
            0 => None,
            1 => prepared.into_iter().next(),
            _ => {
                let batch = arrow_select::concat::concat_batches(&self.layout.schema, &prepared)?;
                drop(prepared);
                self.layout.check_unique_ids_of(&batch)?;
                Some(batch)
            }
        })
    }

    /// Commits staged segments (in this collection's store) in one transaction, after `check`
    /// accepts the snapshot they are added to (under the writer lock). On error nothing is
    /// committed and the staged files are removed.
    pub(crate) fn commit_staged(
        &self,
        staged: Vec<Staged>,
        check: impl FnOnce(&Snapshot) -> Result<()>,
    ) -> Result<()> {
        self.transact(|txn, snapshot| {
            check(snapshot)?;
            let mut parts = snapshot.parts.clone();
            for s in &staged {
                self.add_staged(txn, &mut parts, s)?;
            }
            Ok(((), parts))
        })?;
        self.written();
        Ok(())
    }

    /// Commits staged segments that replace the stored rows with the same ids (`ids`, every
    /// id the segments hold) in one transaction: those rows are deleted and the segments
    /// added. On error nothing is committed and the staged files are removed.
    pub(crate) fn commit_staged_upsert<'a>(
        &self,
        staged: Vec<Staged>,
        ids: impl Iterator<Item = IdRef<'a>>,
    ) -> Result<()> {
        self.transact(|txn, snapshot| {
            let (mut parts, _) = delete_rows(txn, snapshot, &located(snapshot, ids))?;
            for s in &staged {
                self.add_staged(txn, &mut parts, s)?;
            }
            Ok(((), parts))
        })?;
        self.written();
        Ok(())
    }

    /// Renames `staged` into place as a new segment of `txn` and adds its part to `parts`,
    /// mapped as a reopen would read it (zero-copy from the page cache).
    fn add_staged(
        &self,
        txn: &mut Transaction<'_>,
        parts: &mut Vec<Part>,
        staged: &Staged,
    ) -> Result<()> {
        let p = txn.add_segment(staged)?;
        let meta = &txn.next.segments[p];
        parts.push(Part::open(txn.store(), &self.layout, txn.next.metric, meta, false)?.0);
        Ok(())
    }

    /// Changes settings (`key`, `value` pairs, see [`IndexSettings::set`]) in one commit;
    /// they apply to what is indexed or merged afterwards. Returns the new settings. Refused
    /// as a whole if any pair is.
    pub fn alter(&self, changes: &[(&str, &str)]) -> Result<IndexSettings> {
        let mut manifest = self.writable()?;
        let mut settings = manifest.index;
        for (key, value) in changes {
            settings.set(key, value)?;
        }
        settings.check()?;
        if settings != manifest.index {
            let mut txn = Transaction::begin(&*self.store, &manifest);
            txn.next.index = settings;
            let next = txn.commit().inspect_err(|e| self.unsettled(e))?;
            let mut current = write(&self.current);
            let mut snapshot = current.with_parts(next.version, current.parts.clone());
            snapshot.index = settings;
            *current = Arc::new(snapshot);
            *manifest = next;
        }
        drop(manifest);
        self.schedule_work();
        Ok(settings)
    }

    /// Deletes the rows with these ids; ids not stored are ignored. Returns how many rows were
    /// deleted.
    pub fn delete(&self, ids: &dyn Array) -> Result<usize> {
        let ids = self.layout.cast_ids(ids)?;
        self.transact(|txn, snapshot| {
            let by_part = located(snapshot, ids_of(ids.as_ref()));
            let (parts, deleted) = delete_rows(txn, snapshot, &by_part)?;
            Ok((deleted, parts))
        })
        .inspect(|_| self.written())
    }

    /// Deletes the live rows `mask` selects (it is evaluated on each segment's rows; a null
    /// does not select). Returns how many rows were deleted.
    pub fn delete_where(
        &self,
        mask: impl FnMut(&RecordBatch) -> Result<BooleanArray>,
    ) -> Result<usize> {
        self.transact(|txn, snapshot| {
            let by_part = selected_rows(snapshot, mask)?;
            let (parts, deleted) = delete_rows(txn, snapshot, &by_part)?;
            Ok((deleted, parts))
        })
        .inspect(|_| self.written())
    }

    /// Replaces the live rows `mask` selects with the rows `update` makes of them (given in
    /// the collection's schema), in one commit: the old rows are deleted and the new ones
    /// appended, validated like any append (an id may not collide with a row that stays).
    /// Returns how many rows were replaced.
    pub fn update_where(
        &self,
        mask: impl FnMut(&RecordBatch) -> Result<BooleanArray>,
        update: impl FnOnce(RecordBatch) -> Result<RecordBatch>,
    ) -> Result<usize> {
        self.transact(|txn, snapshot| {
            let by_part = selected_rows(snapshot, mask)?;
            let at: Vec<(usize, usize)> = by_part
                .iter()
                .flat_map(|(&p, rows)| rows.iter().map(move |&r| (p, r)))
                .collect();
            if at.is_empty() {
                return Ok((0, snapshot.parts.clone()));
            }
            let new = self
                .layout
                .prepare(&update(snapshot.rows_at(&at)?)?, self.metric())?;
            let (parts, deleted) = delete_rows(txn, snapshot, &by_part)?;
            let staying = snapshot.with_parts(snapshot.version, parts);
            let ids = new.column(self.layout.id_index);
            refuse_stored(&staying, staying.first_stored(ids_of(ids.as_ref())))?;
            let parts = self.add_rows(txn, staying.parts, &new)?;
            Ok((deleted, parts))
        })
        .inspect(|_| self.written())
    }

    /// Appends `batches`, replacing the stored rows that have the same ids, in one commit.
    /// The batches are validated like an append (their ids must be unique among them).
    /// Returns the number of rows written.
    pub fn upsert(&self, batches: &[RecordBatch]) -> Result<usize> {
        let Some(batch) = self.prepare_all(batches)? else {
            return Ok(0);
        };
        let staged = Staged::write(
            self.store.clone(),
            &self.layout,
            self.metric(),
            &batch,
            &crate::storage::unique(),
        )?;
        let ids = batch.column(self.layout.id_index);
        self.commit_staged_upsert(vec![staged], ids_of(ids.as_ref()))?;
        Ok(batch.num_rows())
    }

    /// Stages `batch` (in the layout) as a new segment of `txn`; returns `parts` with it.
    fn add_rows(
        &self,
        txn: &mut Transaction<'_>,
        mut parts: Vec<Part>,
        batch: &RecordBatch,
    ) -> Result<Vec<Part>> {
        let staged = Staged::write(
            self.store.clone(),
            &self.layout,
            txn.next.metric,
            batch,
            &crate::storage::unique(),
        )?;
        self.add_staged(txn, &mut parts, &staged)?;
        Ok(parts)
    }

    /// The one commit path: under the writer lock, `edit` changes the next version in a
    /// transaction and returns the parts of the snapshot it makes; the transaction commits and
    /// the snapshot is published. On error nothing changes and the transaction's files are
    /// removed.
    fn transact<R>(
        &self,
        edit: impl FnOnce(&mut Transaction<'_>, &Snapshot) -> Result<(R, Vec<Part>)>,
    ) -> Result<R> {
        let mut manifest = self.writable()?;
        let snapshot = self.snapshot();
        let mut txn = Transaction::begin(&*self.store, &manifest);
        let (result, parts) = edit(&mut txn, &snapshot)?;
        if txn.next.segments == manifest.segments && txn.next.next_file_id == manifest.next_file_id
        {
            return Ok(result); // nothing changed: no new version
        }
        let next = txn.commit().inspect_err(|e| self.unsettled(e))?;
        *write(&self.current) = Arc::new(snapshot.with_parts(next.version, parts));
        *manifest = next;
        Ok(result)
    }

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
        for part in &self.snapshot().parts {
            let name = FileKind::Segment.name(part.seg.id, part.seg.id);
            let now = self.store.stamp(&name);
            if let (Some(mapped), Ok(now)) = (part.seg.stamp, &now) {
                if mapped == *now {
                    continue;
                }
            }
            let reason = match now {
                Ok(_) => "changed on disk while in use (size or modification time differs)".into(),
                Err(e) => e.to_string(),
            };
            let path = self.store.path(&name);
            *lock(&self.damage) = Some((path.clone(), reason.clone()));
            return Err(Error::corrupt(path, reason));
        }
        Ok(())
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
    pub fn backup(&self, to: &std::path::Path) -> Result<Backup> {
        let manifest = self.lock_writer();
        std::fs::create_dir(to).map_err(|e| Error::io(to, e))?;
        let mut done = Backup {
            collection: self.name().to_string(),
            version: manifest.version,
            files: 0,
            bytes: 0,
            linked: 0,
        };
        for file in manifest.live_files() {
            done.linked += usize::from(self.store.export(file, &to.join(file))?);
            done.bytes += self.store.stamp(file)?.bytes;
            done.files += 1;
        }
        // The manifest last: a copy cut short names no file it lacks.
        let text = self.store.read(MANIFEST)?;
        let path = to.join(MANIFEST);
        std::fs::write(&path, &text)
            .and_then(|()| std::fs::File::open(&path)?.sync_all())
            .map_err(|e| Error::io(&path, e))?;
        crate::storage::local::sync_dir(to)?;
        done.files += 1;
        done.bytes += text.len() as u64;
        Ok(done)
    }

    /// Counts, sizes and settings.
    pub fn stats(&self) -> Result<Stats> {
        let worker = self.worker.status();
        let manifest = self.lock_writer().clone();
        let snapshot = self.snapshot();
        let mut bytes = self.store.stamp(MANIFEST)?.bytes;
        for s in &manifest.segments {
            bytes += s.checksummed_bytes();
            if let Some(d) = &s.deletes {
                bytes += self.store.stamp(&d.file)?.bytes;
            }
        }
        let settings = manifest.index;
        Ok(Stats {
            collection: self.name().to_string(),
            rows: snapshot.count(),
            deleted_rows: manifest
                .segments
                .iter()
                .map(|s| s.deletes.as_ref().map_or(0, |d| d.count as usize))
                .sum(),
            segments: manifest.segments.len(),
            bytes_on_disk: bytes,
            dim: self.layout.dim,
            vector_type: self.layout.vector_type.as_str().to_string(),
            metric: manifest.metric,
            index_kinds: manifest
                .segments
                .iter()
                .map(|s| {
                    s.index
                        .as_ref()
                        .map_or(IndexKind::Flat, |i| i.kind)
                        .as_str()
                        .to_string()
                })
                .collect(),
            version: manifest.version,
            index_kind: settings.kind,
            quantization: settings.quant,
            index: IndexParams {
                m: settings.m,
                ef_construction: settings.ef_construction,
                ef_search: settings.ef_search,
                index_threshold: settings.threshold,
                ivf_threshold: settings.ivf_threshold,
                nlist: settings.nlist,
                nprobe: settings.nprobe,
            },
            indexing: worker.running,
            merges_running: self.merges_running.load(Ordering::Relaxed),
            index_builds_running: self.builds_running.load(Ordering::Relaxed),
            index_build: self.worker.progress(),
            index_error: worker.last_error,
            repairs: worker.repairs,
        })
    }

    /// Builds an index (the collection's kind, with its parameters) for every segment that has
    /// none and holds at least `min_rows` rows, commits each, and returns how many were built.
    /// The index is built without holding the writer lock, so appends and deletes go on
    /// meanwhile. Segments a background merge reads or makes while the call runs (a merge of
    /// small segments makes an unindexed one) are waited for and indexed too; segments that
    /// writes keep adding during the call are left after `BUILD_PASSES` passes.
    pub fn build_index(&self, min_rows: usize) -> Result<usize> {
        const BUILD_PASSES: usize = 16;
        let cancel = Task::new();
        let mut built = 0;
        for _ in 0..BUILD_PASSES {
            built += self.build_indexes(min_rows, &cancel)?;
            let mut left: Vec<u64> = self.unindexed(min_rows).iter().map(|s| s.id).collect();
            if left.is_empty() {
                break;
            }
            // Those a merge is reading: wait until it ends (committed, cancelled or failed)
            // and releases them; the next pass indexes what it made, or them.
            loop {
                left.retain(|id| lock(&self.claimed).contains(id));
                if left.is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(built)
    }

    /// Waits until the background worker has indexed every segment at or over the threshold
    /// (returns at once when nothing is being built).
    pub fn wait_for_indexing(&self) {
        loop {
            self.merger.wait();
            self.worker.wait();
            if !self.merger.running() && !self.worker.running() {
                return;
            }
        }
    }

    /// Stops the background worker (an unfinished index is discarded) and starts no other.
    pub(crate) fn stop_indexing(&self) {
        self.merger.stop();
        self.worker.stop();
    }

    /// Stops the worker and refuses every later write: the collection is being dropped. The
    /// writer lock is held while the guard lives.
    pub(crate) fn mark_dropped(&self) -> MutexGuard<'_, Manifest> {
        self.stop_indexing();
        let guard = self.lock_writer();
        self.dropped.store(true, Ordering::SeqCst);
        guard
    }

    fn lock_writer(&self) -> MutexGuard<'_, Manifest> {
        lock(&self.writer)
    }

    /// After a commit whose outcome is unknown, every later use fails until the collection is
    /// opened again (and reads whichever version is on disk).
    fn unsettled(&self, e: &Error) {
        if let Error::Unsettled(why) = e {
            *lock(&self.damage) = Some((self.store.path(MANIFEST), why.clone()));
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
        let file = self.transact(|txn, snapshot| {
            let meta = txn
                .next
                .position(seg_id)
                .and_then(|p| txn.next.segments[p].index.take());
            Ok((meta.map(|m| m.file), snapshot.parts.clone()))
        })?;
        if let Some(file) = file {
            let _ = self.store.rename(&file, &format!("{file}.damaged"));
        }
        self.worker.set_rebuild(seg_id, true);
        self.worker.repaired(format!(
            "{e}; the index was set aside and is rebuilt from its segment"
        ));
        Ok(())
    }

    /// The segments that still need an index under `min_rows`.
    fn unindexed(&self, min_rows: usize) -> Vec<Arc<Segment>> {
        let rebuild = self.worker.rebuilds();
        self.snapshot()
            .parts
            .iter()
            .filter(|p| {
                p.index.is_none()
                    && (p.seg.rows() >= min_rows.max(1) || rebuild.contains(&p.seg.id))
            })
            .map(|p| p.seg.clone())
            .collect()
    }

    /// The threshold of automatic builds (`usize::MAX`: off, though damaged indexes are
    /// still rebuilt).
    fn auto_threshold(&self) -> usize {
        let settings = self.lock_writer().index;
        match (settings.kind, settings.threshold) {
            (IndexKind::Flat, _) | (_, 0) => usize::MAX,
            (_, t) => t,
        }
    }

    /// Notes a write and has the worker do what it calls for.
    fn written(&self) {
        *lock(&self.last_write) = Instant::now();
        self.schedule_work();
    }

    /// The live segments as the merge policy sees them (those a merge is reading left out).
    fn seg_infos(&self) -> Vec<SegInfo> {
        let claimed = lock(&self.claimed).clone();
        self.snapshot()
            .parts
            .iter()
            .filter(|p| !claimed.contains(&p.seg.id))
            .map(|p| SegInfo {
                id: p.seg.id,
                rows: p.seg.rows(),
                live: p.live_rows(),
                indexed: p.index.is_some(),
            })
            .collect()
    }

    /// Has the worker merge what the policy asks for and index the segments that reached the
    /// threshold and have none yet.
    fn schedule_work(&self) {
        if self.worker.stopped() {
            return;
        }
        let settings = self.lock_writer().index;
        let infos = self.seg_infos();
        if settings.compaction && policy::choose_small(&infos, &settings).is_some() {
            if let Some(me) = self.me.upgrade() {
                self.merger.kick(move |cancel| me.merge_small(cancel));
            }
        }
        let merges =
            settings.compaction && policy::choose(&infos, &settings, Moment::Idle).is_some();
        if !merges && self.unindexed(self.auto_threshold()).is_empty() {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        self.worker.kick(move |cancel| me.maintain(cancel));
    }

    /// One pass of the merger: small merges (no graph built) while the policy asks for them;
    /// then the worker looks at what they made.
    fn merge_small(&self, cancel: &Task) -> Result<()> {
        let mut merged = false;
        while !cancel.cancelled() {
            let settings = self.lock_writer().index;
            if !settings.compaction {
                break;
            }
            let Some(plan) = policy::choose_small(&self.seg_infos(), &settings) else {
                break;
            };
            let flat = IndexSettings {
                kind: IndexKind::Flat,
                ..settings
            };
            if !self.run_merge(&plan.segments, &flat, cancel)? {
                break;
            }
            merged = true;
        }
        if merged {
            self.schedule_worker();
        }
        Ok(())
    }

    /// Kicks the worker alone (after the merger changed the segments).
    fn schedule_worker(&self) {
        if let Some(me) = self.me.upgrade() {
            self.worker.kick(move |cancel| me.maintain(cancel));
        }
    }

    /// One pass of the worker: merges (those due after a commit, then, once the collection
    /// has been quiet for `compaction_idle_ms`, the fresh rows into the largest graph) and
    /// index builds, until none is left or `cancel` is set.
    fn maintain(&self, cancel: &Task) -> Result<()> {
        while !cancel.cancelled() {
            let settings = self.lock_writer().index;
            if settings.compaction {
                if let Some(plan) = policy::choose(&self.seg_infos(), &settings, Moment::Commit) {
                    if self.run_merge(&plan.segments, &settings, cancel)? {
                        continue;
                    }
                    return Ok(());
                }
            }
            self.build_indexes(self.auto_threshold(), cancel)?;
            if !settings.compaction
                || policy::choose(&self.seg_infos(), &settings, Moment::Idle).is_none()
            {
                return Ok(());
            }
            let quiet = Duration::from_millis(settings.compaction_idle_ms);
            loop {
                let since = lock(&self.last_write).elapsed();
                if since >= quiet {
                    break;
                }
                if cancel.cancelled() || self.worker.pending() {
                    return Ok(()); // a write came: the worker runs the pass again
                }
                std::thread::sleep((quiet - since).min(Duration::from_millis(20)));
            }
            match policy::choose(&self.seg_infos(), &settings, Moment::Idle) {
                Some(plan) if self.run_merge(&plan.segments, &settings, cancel)? => continue,
                _ => return Ok(()),
            }
        }
        Ok(())
    }

    /// Merges every segment that fits into as few segments as `max_segment_rows` allows,
    /// dropping deleted rows, with the index that suits each merged size; returns how many
    /// merges ran. Readers keep their snapshots and writers go on meanwhile.
    pub fn compact(&self) -> Result<usize> {
        let cancel = Task::new();
        let mut merges = 0;
        loop {
            let settings = self.lock_writer().index;
            let Some(plan) = policy::choose(&self.seg_infos(), &settings, Moment::Full) else {
                return Ok(merges);
            };
            if !self.run_merge(&plan.segments, &settings, &cancel)? {
                return Ok(merges);
            }
            merges += 1;
        }
    }

    /// Merges the segments `ids` (the first one's graph is extended when it has one) with the
    /// index `settings` ask for, and commits the result; `false` when cancelled, or when an
    /// input went away or another merge has it.
    fn run_merge(&self, ids: &[u64], settings: &IndexSettings, cancel: &Task) -> Result<bool> {
        let Some(_claim) = Claim::take(&self.claimed, ids) else {
            return Ok(false);
        };
        let _running = Running::count(&self.merges_running);
        let snapshot = self.snapshot();
        let inputs: Option<Vec<Part>> = ids
            .iter()
            .map(|id| snapshot.parts.iter().find(|p| p.seg.id == *id).cloned())
            .collect();
        let Some(inputs) = inputs else {
            return Ok(false);
        };
        drop(snapshot);
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
        let retired = self.transact(|txn, current| {
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

    fn build_indexes(&self, min_rows: usize, cancel: &Task) -> Result<usize> {
        let mut settings: IndexSettings = self.lock_writer().index;
        if settings.kind == IndexKind::Flat {
            // Damaged indexes of a collection made flat since are rebuilt as graphs.
            settings.kind = IndexKind::Hnsw;
        }
        let mut built = 0;
        for seg in self.unindexed(min_rows) {
            // A segment a merge is reading gets its index from the merge.
            let Some(_claim) = Claim::take(&self.claimed, &[seg.id]) else {
                continue;
            };
            let _running = Running::count(&self.builds_running);
            let Some((kind, bytes)) =
                index::build(&settings, &seg.view(self.metric()), None, cancel)?
            else {
                return Ok(built); // cancelled
            };
            let done = self.transact(|txn, snapshot| {
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
            if done {
                self.worker.set_rebuild(seg.id, false);
                built += 1;
            }
        }
        Ok(built)
    }
}

/// One running merge or index build, counted while it lives.
struct Running<'a>(&'a AtomicUsize);

impl<'a> Running<'a> {
    fn count(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Running(counter)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Segments claimed by a running merge, released when it ends however it ends.
struct Claim<'a> {
    set: &'a Mutex<HashSet<u64>>,
    ids: Vec<u64>,
}

impl<'a> Claim<'a> {
    fn take(set: &'a Mutex<HashSet<u64>>, ids: &[u64]) -> Option<Claim<'a>> {
        let mut claimed = lock(set);
        if ids.iter().any(|id| claimed.contains(id)) {
            return None;
        }
        claimed.extend(ids);
        Some(Claim {
            set,
            ids: ids.to_vec(),
        })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut claimed = lock(self.set);
        for id in &self.ids {
            claimed.remove(id);
        }
    }
}

/// Where the live rows with `ids` are in `snapshot`: part → rows (ids not stored are skipped).
fn located<'a>(
    snapshot: &Snapshot,
    ids: impl Iterator<Item = IdRef<'a>>,
) -> BTreeMap<usize, Vec<usize>> {
    let mut by_part: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (p, row) in ids.filter_map(|id| snapshot.locate(id)) {
        by_part.entry(p).or_default().push(row);
    }
    by_part
}

/// The live rows of each part of `snapshot` that `mask` selects.
fn selected_rows(
    snapshot: &Snapshot,
    mut mask: impl FnMut(&RecordBatch) -> Result<BooleanArray>,
) -> Result<BTreeMap<usize, Vec<usize>>> {
    let mut by_part = BTreeMap::new();
    for (p, part) in snapshot.parts.iter().enumerate() {
        if part.live_rows() == 0 {
            continue;
        }
        let m = mask(&part.seg.batch)?;
        if m.len() != part.seg.rows() {
            return Err(Error::invalid(format!(
                "condition gave {} values for a segment of {} rows",
                m.len(),
                part.seg.rows()
            )));
        }
        let rows: Vec<usize> = m
            .iter()
            .enumerate()
            .filter(|(r, v)| *v == Some(true) && !part.is_deleted(*r))
            .map(|(r, _)| r)
            .collect();
        if !rows.is_empty() {
            by_part.insert(p, rows);
        }
    }
    Ok(by_part)
}

/// Refuses a write holding an id that is stored already (`id` as `first_stored` gives it).
pub(crate) fn refuse_stored(snapshot: &Snapshot, id: Option<String>) -> Result<()> {
    match id {
        Some(id) => Err(Error::invalid(format!(
            "collection '{}': duplicate id {id} is already stored",
            snapshot.layout.name
        ))),
        None => Ok(()),
    }
}
