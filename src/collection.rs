//! A collection: its directory, its current snapshot, the write path (append, delete) that
//! commits new manifests, and the background builder that indexes segments past the
//! collection's threshold.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};

use arrow_array::{Array, RecordBatch};
use arrow_schema::SchemaRef;

use crate::distance::Metric;
use crate::hnsw::{Hnsw, HnswParams};
use crate::search::Hit;
use crate::segment::{ids_of, Segment};
use crate::snapshot::{Part, Snapshot};
use crate::storage::{
    self, Bitmap, DeletesMeta, IndexFileMeta, IndexSettings, Manifest, SegmentMeta,
};
use crate::validate::Layout;
use crate::writer::{refuse_stored, Staged};
use crate::{Error, Result};

/// How a new collection is defined beyond its schema.
#[derive(Debug, Clone)]
pub struct CollectionOptions {
    pub metric: Metric,
    /// The primary-key column (Utf8 or Int64). Default `id`.
    pub id_column: String,
    /// The vector column; by default the one FixedSizeList<Float32, d> column.
    pub vector_column: Option<String>,
    /// HNSW parameters for `build_index`.
    pub index: IndexSettings,
}

impl Default for CollectionOptions {
    fn default() -> Self {
        CollectionOptions {
            metric: Metric::Cosine,
            id_column: "id".into(),
            vector_column: None,
            index: IndexSettings::default(),
        }
    }
}

/// Counts and sizes, as `Collection::stats` reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub rows: usize,
    pub deleted_rows: usize,
    pub segments: usize,
    pub bytes_on_disk: u64,
    pub dim: usize,
    pub metric: Metric,
    /// The index kind of each segment, in segment order.
    pub index_kinds: Vec<String>,
    pub version: u64,
    /// The collection's index settings.
    pub index: IndexSettings,
    /// Whether a background index build is running or queued.
    pub indexing: bool,
    /// The error of the last failed background index build, if any.
    pub index_error: Option<String>,
    /// Damage found and contained since the collection opened (an index set aside and rebuilt).
    pub repairs: Vec<String>,
}

/// The background index builder of one collection.
#[derive(Debug, Default)]
struct Indexer {
    running: bool,
    /// More work arrived while a build ran; the builder looks again before it stops.
    pending: bool,
    handle: Option<std::thread::JoinHandle<()>>,
    last_error: Option<String>,
    /// Segments whose index was damaged: rebuilt whatever the threshold.
    rebuild: HashSet<u64>,
    /// What was repaired since the collection opened (damaged indexes set aside).
    repairs: Vec<String>,
}

#[derive(Debug)]
pub struct Collection {
    dir: PathBuf,
    layout: Arc<Layout>,
    current: RwLock<Arc<Snapshot>>,
    /// The last committed manifest; holding the lock makes one writer at a time.
    writer: Mutex<Manifest>,
    dropped: AtomicBool,
    /// This collection's own `Arc`, for the background builder to hold while it works.
    me: Weak<Collection>,
    indexer: Mutex<Indexer>,
    /// Set when the database closes or the collection is dropped: builds stop and none start.
    stop: AtomicBool,
    /// Set when a mapped file was found changed under the collection: every later use fails.
    damage: Mutex<Option<(PathBuf, String)>>,
    /// When the mapped files were last checked for outside changes.
    last_check: Mutex<std::time::Instant>,
}

impl Collection {
    /// Writes the first manifest of a new collection into `dir` (which must exist and be empty).
    pub(crate) fn initialize(
        dir: &Path,
        name: &str,
        schema: &arrow_schema::Schema,
        opts: &CollectionOptions,
    ) -> Result<()> {
        opts.index.check()?;
        let layout = Layout::from_schema(
            name,
            schema,
            &opts.id_column,
            opts.vector_column.as_deref(),
            None,
        )?;
        new_manifest(&layout, opts)?.commit(dir)
    }

    /// Opens the collection stored in `dir`: reads the manifest, maps and verifies every
    /// segment, loads deletion bitmaps, and removes files no manifest names (left by a crash).
    pub(crate) fn open(dir: &Path) -> Result<Arc<Collection>> {
        let manifest = Manifest::load(dir)?;
        let schema = manifest.schema(dir)?;
        let layout = Arc::new(Layout::from_schema(
            &manifest.name,
            &schema,
            &manifest.id_column,
            Some(&manifest.vector_column),
            None,
        )?);
        if layout.schema.fields() != schema.fields() || layout.dim != manifest.dim {
            return Err(Error::corrupt(
                dir.join(storage::MANIFEST),
                "stored schema does not match the collection definition",
            ));
        }
        let mut parts = Vec::with_capacity(manifest.segments.len());
        let mut damaged = Vec::new();
        for meta in &manifest.segments {
            let (part, index_damage) = open_part(dir, &layout, manifest.metric, meta, true)?;
            if let Some(e) = index_damage {
                damaged.push((meta.id, e));
            }
            parts.push(part);
        }
        remove_garbage(dir, &manifest)?;
        let snapshot = Snapshot {
            layout: layout.clone(),
            metric: manifest.metric,
            version: manifest.version,
            parts,
            index: manifest.index,
        };
        let collection = Arc::new_cyclic(|me| Collection {
            dir: dir.to_path_buf(),
            layout,
            current: RwLock::new(Arc::new(snapshot)),
            writer: Mutex::new(manifest),
            dropped: AtomicBool::new(false),
            me: me.clone(),
            indexer: Mutex::new(Indexer::default()),
            stop: AtomicBool::new(false),
            damage: Mutex::new(None),
            last_check: Mutex::new(std::time::Instant::now()),
        });
        // A damaged index is set aside and rebuilt from its segment; the segment is searched
        // exactly meanwhile.
        for (seg_id, e) in damaged {
            collection.set_aside_index(seg_id, &e)?;
        }
        // Segments that reached the threshold but whose build was interrupted (a crash or a
        // close) get their index now.
        collection.schedule_indexing();
        Ok(collection)
    }

    /// Drops a damaged index from the manifest (its file is renamed `*.damaged`, kept for
    /// inspection) and queues the segment for a rebuild whatever the threshold.
    fn set_aside_index(&self, seg_id: u64, e: &Error) -> Result<()> {
        let mut manifest = self.writable()?;
        let Some(p) = manifest.segments.iter().position(|s| s.id == seg_id) else {
            return Ok(());
        };
        let Some(meta) = manifest.segments[p].index.clone() else {
            return Ok(());
        };
        let mut next = manifest.clone();
        next.version += 1;
        next.segments[p].index = None;
        next.commit(&self.dir)?;
        let from = self.dir.join(&meta.file);
        let _ = fs::rename(&from, self.dir.join(format!("{}.damaged", meta.file)));
        let snapshot = self.snapshot();
        self.publish(&snapshot, next.version, snapshot.parts.clone());
        *manifest = next;
        drop(manifest);
        let mut indexer = self.lock_indexer();
        indexer.rebuild.insert(seg_id);
        indexer.repairs.push(format!(
            "{e}; the index was set aside and is rebuilt from its segment"
        ));
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.layout.name
    }
    pub fn schema(&self) -> SchemaRef {
        self.layout.schema.clone()
    }
    pub fn dim(&self) -> usize {
        self.layout.dim
    }
    pub fn metric(&self) -> Metric {
        self.snapshot().metric
    }

    /// The current committed state; it stays valid (and unchanged) while writers commit.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.read().expect("snapshot lock").clone()
    }

    /// Live rows.
    pub fn count(&self) -> usize {
        self.snapshot().count()
    }

    pub(crate) fn mark_dropped(&self) -> MutexGuard<'_, Manifest> {
        self.stop_indexing();
        let guard = self.lock_writer();
        self.dropped.store(true, Ordering::SeqCst);
        guard
    }

    fn lock_writer(&self) -> MutexGuard<'_, Manifest> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn writable(&self) -> Result<MutexGuard<'_, Manifest>> {
        let guard = self.lock_writer();
        if self.dropped.load(Ordering::SeqCst) {
            return Err(Error::NotFound(format!(
                "collection '{}' was dropped",
                self.name()
            )));
        }
        Ok(guard)
    }

    /// Appends `batches` as one new segment. Every batch is validated (schema, dimension,
    /// nulls, non-finite values, duplicate ids within the batches and against stored rows)
    /// before anything is written; a refused append leaves the collection as it was.
    /// Returns the number of rows appended.
    pub fn append(&self, batches: &[RecordBatch]) -> Result<usize> {
        let prepared = batches
            .iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| self.layout.prepare(b))
            .collect::<Result<Vec<_>>>()?;
        if prepared.is_empty() {
            return Ok(0);
        }
        let batch = if prepared.len() == 1 {
            prepared.into_iter().next().expect("one batch")
        } else {
            let batch = arrow_select::concat::concat_batches(&self.layout.schema, &prepared)?;
            drop(prepared);
            self.layout.check_unique_ids_of(&batch)?;
            batch
        };
        let ids = batch.column(self.layout.id_index).clone();
        let check = |snap: &Snapshot| refuse_stored(snap, snap.first_existing(ids.as_ref()));
        // Refuse early, before writing, what the commit would refuse.
        check(&self.snapshot())?;
        let staged = Staged::write(&self.dir, &self.layout, self.metric(), &batch)?;
        let rows = batch.num_rows();
        drop(batch);
        self.commit_staged(vec![staged], check)?;
        Ok(rows)
    }

    /// Commits staged segments (in this collection's directory) in one manifest version, after
    /// `check` accepts the snapshot they are added to (under the writer lock). On error nothing
    /// is committed and the staged files are removed.
    pub(crate) fn commit_staged(
        &self,
        staged: Vec<Staged>,
        check: impl FnOnce(&Snapshot) -> Result<()>,
    ) -> Result<()> {
        let mut manifest = self.writable()?;
        let snapshot = self.snapshot();
        check(&snapshot)?;
        let mut next = manifest.clone();
        next.version += 1;
        let mut renamed = Vec::new();
        let result = staged
            .iter()
            .try_for_each(|s| s.name_into(&self.dir, &mut next, &mut renamed))
            .and_then(|()| storage::sync_dir(&self.dir))
            .and_then(|()| next.commit(&self.dir));
        if let Err(e) = result {
            for path in renamed {
                let _ = fs::remove_file(path);
            }
            return Err(e);
        }
        // The commit is durable; map the files written so the new segments are read exactly as
        // a reopen would read them (zero-copy from the page cache rather than from heap memory).
        let mut parts = snapshot.parts.clone();
        for meta in &next.segments[manifest.segments.len()..] {
            parts.push(open_part(&self.dir, &self.layout, next.metric, meta, false)?.0);
        }
        self.publish(&snapshot, next.version, parts);
        *manifest = next;
        drop(manifest);
        self.schedule_indexing();
        Ok(())
    }

    /// Checks that no mapped file was changed by someone else since it was mapped (size and
    /// modification time; at most once a second). A change marks the collection damaged: this
    /// and every later call fail with `Corrupt` naming the file.
    pub fn check_files(&self) -> Result<()> {
        if let Some((path, reason)) = self.lock_damage().clone() {
            return Err(Error::corrupt(path, reason));
        }
        {
            let mut last = self.last_check.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() < std::time::Duration::from_secs(1) {
                return Ok(());
            }
            *last = std::time::Instant::now();
        }
        for part in &self.snapshot().parts {
            let path = self.dir.join(format!("seg-{:010}.arrow", part.seg.id));
            let now = storage::Stamp::of(&path);
            if let (Some(mapped), Ok(now)) = (part.seg.stamp, &now) {
                if mapped == *now {
                    continue;
                }
            }
            let reason = match now {
                Ok(_) => "changed on disk while in use (size or modification time differs)".into(),
                Err(e) => e.to_string(),
            };
            *self.lock_damage() = Some((path.clone(), reason.clone()));
            return Err(Error::corrupt(path, reason));
        }
        Ok(())
    }

    /// Reads every file of the current version and checks it against its checksum; returns
    /// the number of files and bytes checked, or `Corrupt` naming the first bad file.
    pub fn verify(&self) -> Result<(usize, u64)> {
        let manifest = self.lock_writer().clone();
        let (mut files, mut bytes) = (0, 0);
        let mut check = |file: &str, len: u64, crc: u32| -> Result<()> {
            storage::map_file(&self.dir.join(file), len, Some(crc))?;
            files += 1;
            bytes += len;
            Ok(())
        };
        let result = manifest.segments.iter().try_for_each(|s| {
            check(&s.file, s.bytes, s.crc32)?;
            if let Some(i) = &s.index {
                check(&i.file, i.bytes, i.crc32)?;
            }
            if let Some(n) = &s.norms {
                check(&n.file, n.bytes, n.crc32)?;
            }
            if let Some(d) = &s.deletes {
                Bitmap::read(&self.dir.join(&d.file), s.rows as usize)?;
            }
            Ok(())
        });
        let result = result.map(|()| (files, bytes));
        if let Err(Error::Corrupt { path, reason }) = &result {
            *self.lock_damage() = Some((path.clone(), reason.clone()));
        }
        result
    }

    fn lock_damage(&self) -> MutexGuard<'_, Option<(PathBuf, String)>> {
        self.damage.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Deletes the rows with these ids; ids not stored are ignored. Returns how many rows were
    /// deleted.
    pub fn delete(&self, ids: &dyn Array) -> Result<usize> {
        let ids = self.layout.cast_ids(ids)?;
        let mut manifest = self.writable()?;
        let snapshot = self.snapshot();
        let mut by_part: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let mut seen = HashSet::new();
        for id in ids_of(ids.as_ref()) {
            if let Some((p, row)) = snapshot.locate(id) {
                if seen.insert((p, row)) {
                    by_part.entry(p).or_default().push(row);
                }
            }
        }
        if by_part.is_empty() {
            return Ok(0);
        }
        let mut next = manifest.clone();
        next.version += 1;
        let mut parts = snapshot.parts.clone();
        let mut written = Vec::new();
        let mut old_files = Vec::new();
        let mut deleted = 0;
        let result = (|| {
            for (&p, rows) in &by_part {
                let part = &snapshot.parts[p];
                let mut bitmap = part
                    .deletes
                    .as_deref()
                    .cloned()
                    .unwrap_or_else(|| Bitmap::new(part.seg.rows()));
                for &r in rows {
                    deleted += bitmap.insert(r) as usize;
                }
                let file = format!("del-{:010}-{:010}.bin", part.seg.id, next.next_file_id);
                next.next_file_id += 1;
                bitmap.write(&self.dir.join(&file))?;
                written.push(file.clone());
                let meta = &mut next.segments[p];
                if let Some(old) = meta.deletes.take() {
                    old_files.push(old.file);
                }
                meta.deletes = Some(DeletesMeta {
                    file,
                    count: bitmap.count() as u64,
                });
                parts[p] = Part {
                    seg: part.seg.clone(),
                    deletes: Some(Arc::new(bitmap)),
                    index: part.index.clone(),
                };
            }
            storage::sync_dir(&self.dir)?;
            next.commit(&self.dir)
        })();
        if let Err(e) = result {
            for f in written {
                let _ = fs::remove_file(self.dir.join(f));
            }
            return Err(e);
        }
        self.publish(&snapshot, next.version, parts);
        *manifest = next;
        for f in old_files {
            // Readers hold their bitmaps in memory, so the old files are garbage now.
            let _ = fs::remove_file(self.dir.join(f));
        }
        Ok(deleted)
    }

    /// The rows with these ids, in the order asked (missing ids are skipped).
    pub fn get(&self, ids: &dyn Array) -> Result<RecordBatch> {
        self.snapshot().get(ids)
    }

    /// The `k` nearest rows to `query` with their `_distance`, nearest first.
    pub fn search(&self, query: &[f32], k: usize) -> Result<RecordBatch> {
        let snap = self.snapshot();
        let hits: Vec<Hit> = snap.search(query, k)?;
        snap.hits_to_batch(&hits)
    }

    pub fn stats(&self) -> Result<Stats> {
        let (indexing, index_error, repairs) = {
            let indexer = self.lock_indexer();
            (
                indexer.running,
                indexer.last_error.clone(),
                indexer.repairs.clone(),
            )
        };
        let manifest = self.lock_writer().clone();
        let snapshot = self.snapshot();
        let mut bytes = fs::metadata(self.dir.join(storage::MANIFEST))
            .map_err(|e| Error::io(&self.dir, e))?
            .len();
        for s in &manifest.segments {
            bytes += s.bytes
                + s.index.as_ref().map_or(0, |i| i.bytes)
                + s.norms.as_ref().map_or(0, |n| n.bytes);
            if let Some(d) = &s.deletes {
                let path = self.dir.join(&d.file);
                bytes += fs::metadata(&path).map_err(|e| Error::io(&path, e))?.len();
            }
        }
        Ok(Stats {
            rows: snapshot.count(),
            deleted_rows: manifest
                .segments
                .iter()
                .map(|s| s.deletes.as_ref().map_or(0, |d| d.count as usize))
                .sum(),
            segments: manifest.segments.len(),
            bytes_on_disk: bytes,
            dim: self.layout.dim,
            metric: manifest.metric,
            index_kinds: manifest
                .segments
                .iter()
                .map(|s| {
                    s.index
                        .as_ref()
                        .map_or("flat", |i| i.kind.as_str())
                        .to_string()
                })
                .collect(),
            version: manifest.version,
            index: manifest.index,
            indexing,
            index_error,
            repairs,
        })
    }

    /// Builds an HNSW index (with the collection's parameters) for every segment that has none
    /// and holds at least `min_rows` rows, commits each, and returns how many were built. The
    /// graph is built without holding the writer lock, so appends and deletes go on meanwhile.
    pub fn build_index(&self, min_rows: usize) -> Result<usize> {
        self.build_indexes(min_rows, &AtomicBool::new(false))
    }

    /// The segments that still need an index under `min_rows`.
    fn unindexed(&self, min_rows: usize) -> Vec<Arc<Segment>> {
        let rebuild = self.lock_indexer().rebuild.clone();
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

    /// Starts (or queues more work for) the background builder when some segment has reached
    /// the collection's index threshold and has no index yet.
    fn schedule_indexing(&self) {
        let threshold = match self.lock_writer().index.threshold {
            0 => usize::MAX, // automatic builds are off; damaged indexes are still rebuilt
            t => t,
        };
        if self.stop.load(Ordering::SeqCst) || self.unindexed(threshold).is_empty() {
            return;
        }
        let mut indexer = self.lock_indexer();
        if indexer.running {
            indexer.pending = true;
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        if let Some(old) = indexer.handle.take() {
            let _ = old.join(); // it has finished: `running` is false
        }
        indexer.running = true;
        indexer.pending = false;
        indexer.handle = Some(std::thread::spawn(move || loop {
            let threshold = match me.lock_writer().index.threshold {
                0 => usize::MAX,
                t => t,
            };
            let result = me.build_indexes(threshold, &me.stop);
            let mut indexer = me.lock_indexer();
            indexer.last_error = result.err().map(|e| e.to_string());
            if indexer.pending && !me.stop.load(Ordering::SeqCst) {
                indexer.pending = false;
                continue;
            }
            indexer.running = false;
            break;
        }));
    }

    /// Waits until the background builder has indexed every segment at or over the threshold
    /// (returns at once when nothing is being built).
    pub fn wait_for_indexing(&self) {
        loop {
            let handle = {
                let mut indexer = self.lock_indexer();
                match indexer.handle.take() {
                    Some(h) => h,
                    None => return,
                }
            };
            let _ = handle.join();
        }
    }

    /// Stops the background builder (an unfinished graph is discarded) and starts no other.
    pub(crate) fn stop_indexing(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wait_for_indexing();
    }

    fn lock_indexer(&self) -> MutexGuard<'_, Indexer> {
        self.indexer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn build_indexes(&self, min_rows: usize, cancel: &AtomicBool) -> Result<usize> {
        let settings = self.lock_writer().index;
        let mut built = 0;
        for seg in self.unindexed(min_rows) {
            let graph = {
                let space = seg.space(self.metric());
                let params = HnswParams {
                    m: settings.m,
                    ef_construction: settings.ef_construction,
                    ..HnswParams::default()
                };
                match Hnsw::build_cancellable(&space, params, cancel) {
                    Some(graph) => graph,
                    None => return Ok(built),
                }
            };
            let bytes = graph.to_bytes();
            let mut manifest = self.writable()?;
            let Some(p) = manifest.segments.iter().position(|s| s.id == seg.id) else {
                continue; // the segment went away while we built
            };
            if manifest.segments[p].index.is_some() {
                continue; // another build indexed it meanwhile
            }
            let file = format!("idx-{:010}-{:010}.hnsw", seg.id, manifest.next_file_id);
            let path = self.dir.join(&file);
            let mut next = manifest.clone();
            next.version += 1;
            next.next_file_id += 1;
            next.segments[p].index = Some(IndexFileMeta {
                kind: "hnsw".into(),
                file: file.clone(),
                bytes: bytes.len() as u64,
                crc32: crc32fast::hash(&bytes),
            });
            let committed = storage::write_durable(&path, &bytes)
                .and_then(|()| storage::sync_dir(&self.dir))
                .and_then(|()| next.commit(&self.dir));
            if let Err(e) = committed {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            let meta = next.segments[p].index.clone().expect("just set");
            let index = open_index(&self.dir, &meta)?;
            let current = self.snapshot();
            let parts = current
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
            self.publish(&current, next.version, parts);
            *manifest = next;
            drop(manifest);
            self.lock_indexer().rebuild.remove(&seg.id);
            built += 1;
        }
        Ok(built)
    }

    fn publish(&self, base: &Snapshot, version: u64, parts: Vec<Part>) {
        let snap = Snapshot {
            layout: self.layout.clone(),
            metric: base.metric,
            version,
            parts,
            index: base.index,
        };
        *self.current.write().expect("snapshot lock") = Arc::new(snap);
    }
}

/// Opens one committed segment with its deletions, norms and index. With `trust_stamp`, a
/// segment file whose size and modification time match the manifest is not re-hashed (opening
/// stays instant); any other is checked against its CRC32. A damaged index does not fail the
/// segment: it comes back as the second value, and the part is searched exactly.
fn open_part(
    dir: &Path,
    layout: &Arc<Layout>,
    metric: Metric,
    meta: &SegmentMeta,
    trust_stamp: bool,
) -> Result<(Part, Option<Error>)> {
    let path = dir.join(&meta.file);
    let stamp = storage::Stamp::of(&path)?;
    let verify = trust_stamp
        && (meta.mtime_ns == 0 || stamp.mtime_ns != meta.mtime_ns || stamp.bytes != meta.bytes);
    let batch = storage::open_segment(&path, &layout.schema, meta, verify)?;
    if batch.num_rows() as u64 != meta.rows {
        return Err(Error::corrupt(
            &path,
            format!(
                "holds {} rows, the manifest says {}",
                batch.num_rows(),
                meta.rows
            ),
        ));
    }
    let deletes = match &meta.deletes {
        None => None,
        Some(d) => Some(Arc::new(Bitmap::read(
            &dir.join(&d.file),
            batch.num_rows(),
        )?)),
    };
    let rows = batch.num_rows();
    let mut seg = Segment::new(
        meta.id,
        batch,
        layout.id_index,
        layout.vector_index,
        layout.dim,
    );
    seg.stamp = Some(stamp);
    if let Some(n) = &meta.norms {
        seg = seg.with_norms(metric, storage::map_f32s(&dir.join(&n.file), n, rows)?);
    }
    let (index, damage) = match &meta.index {
        None => (None, None),
        Some(i) => match open_index(dir, i) {
            Ok(index) => (Some(index), None),
            Err(e @ Error::Corrupt { .. }) => (None, Some(e)),
            Err(e) => return Err(e),
        },
    };
    Ok((
        Part {
            seg: Arc::new(seg),
            deletes,
            index,
        },
        damage,
    ))
}

/// The first manifest of a collection with this layout and these options.
pub(crate) fn new_manifest(layout: &Layout, opts: &CollectionOptions) -> Result<Manifest> {
    Ok(Manifest {
        format: 1,
        version: 1,
        name: layout.name.clone(),
        id_column: layout.schema.field(layout.id_index).name().clone(),
        vector_column: layout.schema.field(layout.vector_index).name().clone(),
        dim: layout.dim,
        metric: opts.metric,
        schema_ipc: Manifest::encode_schema(&layout.schema)?,
        next_file_id: 1,
        segments: Vec::new(),
        index: opts.index,
    })
}

/// Maps an index file and opens the graph in place.
fn open_index(dir: &Path, meta: &IndexFileMeta) -> Result<Arc<Hnsw>> {
    let path = dir.join(&meta.file);
    if meta.kind != "hnsw" {
        return Err(Error::corrupt(
            &path,
            format!("unknown index kind '{}'", meta.kind),
        ));
    }
    let buffer = storage::map_file(&path, meta.bytes, Some(meta.crc32))?;
    Ok(Arc::new(Hnsw::from_buffer(buffer, &path)?))
}

/// Whether `name` is one of the files a collection directory holds (other than `MANIFEST`):
/// segments, norms, deletions, indexes, and the temporary files of unfinished writes.
pub(crate) fn is_collection_file(name: &str) -> bool {
    (name.starts_with("seg-") && name.ends_with(".arrow"))
        || (name.starts_with("nrm-") && name.ends_with(".f32"))
        || (name.starts_with("del-") && name.ends_with(".bin"))
        || (name.starts_with("idx-") && name.ends_with(".hnsw"))
        || name.starts_with("stage-")
        || name == "MANIFEST.tmp"
}

/// Removes segment and deletion files that the manifest does not name: leftovers of writes
/// that crashed before their commit.
fn remove_garbage(dir: &Path, manifest: &Manifest) -> Result<()> {
    let live: HashSet<&str> = manifest.live_files().collect();
    let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = is_collection_file(name);
        if ours && !live.contains(name) {
            fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
        }
    }
    Ok(())
}
