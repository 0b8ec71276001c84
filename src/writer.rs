//! The write path: rows are validated and written to segment files under temporary names
//! (`stage-*`), fsynced, and become part of a collection only when one manifest naming them
//! commits. A write that is refused or abandoned leaves nothing behind: its staged files are
//! removed when it is dropped, and a crash leaves only `stage-*` files that the next open
//! removes.
//!
//! [`Ingest`] is the streamed form used by servers: batches are validated as they arrive and
//! staged in segments of about [`SEGMENT_BYTES`], so memory stays bounded whatever the size of
//! the stream, and the whole stream commits all or nothing (creating the collection if needed).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;

use crate::collection::{new_manifest, Collection, CollectionOptions};
use crate::database::{unique, Database};
use crate::distance::Metric;
use crate::segment::{metric_norms, IdRef};
use crate::snapshot::Snapshot;
use crate::storage::{self, FileMeta, Manifest, SegmentMeta, Stamp, Written};
use crate::validate::{schema_for_batch, Layout};
use crate::{Error, Result};

/// A streamed put is staged in segments of about this many bytes of Arrow data.
pub const SEGMENT_BYTES: usize = 64 << 20;

/// The vectors of a batch in the collection's layout, row-major.
pub(crate) fn vectors_of<'a>(batch: &'a RecordBatch, layout: &Layout) -> &'a [f32] {
    let fsl = batch.column(layout.vector_index).as_fixed_size_list();
    let values = fsl
        .values()
        .as_primitive::<arrow_array::types::Float32Type>()
        .values();
    let start = fsl.offset() * layout.dim;
    &values[start..start + fsl.len() * layout.dim]
}

/// A segment written under a temporary name, not yet named by any manifest. Dropping it
/// removes its files unless a commit has renamed them.
#[derive(Debug)]
pub(crate) struct Staged {
    segment: PathBuf,
    norms: Option<PathBuf>,
    rows: u64,
    written: Written,
    norms_written: Option<Written>,
}

impl Staged {
    /// Writes `batch` (already in the layout) and the norms `metric` needs into `dir`.
    pub(crate) fn write(
        dir: &Path,
        layout: &Layout,
        metric: Metric,
        batch: &RecordBatch,
    ) -> Result<Staged> {
        if batch.num_rows() > u32::MAX as usize {
            return Err(Error::invalid("a segment may hold at most 2^32 - 1 rows"));
        }
        let tag = unique();
        let segment = dir.join(format!("stage-{tag}.arrow"));
        let written = storage::write_segment(&segment, batch)?;
        let mut staged = Staged {
            segment,
            norms: None,
            rows: batch.num_rows() as u64,
            written,
            norms_written: None,
        };
        if let Some(norms) = metric_norms(metric, vectors_of(batch, layout), layout.dim) {
            let path = dir.join(format!("stage-{tag}.f32"));
            staged.norms_written = Some(storage::write_f32s(&path, &norms)?);
            staged.norms = Some(path);
        }
        Ok(staged)
    }

    /// Moves the staged files to their committed names in `dir` under the manifest's next file
    /// id and records them in `next`. `renamed` collects the new paths, for cleanup on failure.
    pub(crate) fn name_into(
        &self,
        dir: &Path,
        next: &mut Manifest,
        renamed: &mut Vec<PathBuf>,
    ) -> Result<()> {
        let id = next.next_file_id;
        next.next_file_id += 1;
        let file = format!("seg-{id:010}.arrow");
        let path = dir.join(&file);
        fs::rename(&self.segment, &path).map_err(|e| Error::io(&path, e))?;
        renamed.push(path.clone());
        let norms = match (&self.norms, self.norms_written) {
            (Some(from), Some(w)) => {
                let file = format!("nrm-{id:010}.f32");
                let to = dir.join(&file);
                fs::rename(from, &to).map_err(|e| Error::io(&to, e))?;
                renamed.push(to);
                Some(FileMeta {
                    file,
                    bytes: w.bytes,
                    crc32: w.crc32,
                })
            }
            _ => None,
        };
        next.segments.push(SegmentMeta {
            id,
            file,
            rows: self.rows,
            bytes: self.written.bytes,
            crc32: self.written.crc32,
            deletes: None,
            index: None,
            norms,
            mtime_ns: Stamp::of(&path)?.mtime_ns,
        });
        Ok(())
    }

    /// Moves the staged files into another directory on the same file system, keeping their
    /// temporary names.
    fn move_to(&mut self, dir: &Path) -> Result<()> {
        for path in std::iter::once(&mut self.segment).chain(self.norms.as_mut()) {
            let to = dir.join(path.file_name().expect("staged files have names"));
            fs::rename(&*path, &to).map_err(|e| Error::io(&to, e))?;
            *path = to;
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // After a commit the temporary names are gone and these fail harmlessly.
        let _ = fs::remove_file(&self.segment);
        if let Some(n) = &self.norms {
            let _ = fs::remove_file(n);
        }
    }
}

/// The ids of one write, to refuse duplicates across its batches and against stored rows.
#[derive(Debug)]
enum IdSet {
    Int(HashSet<i64>),
    Str(HashSet<String>),
}

impl IdSet {
    fn for_type(dt: &DataType) -> IdSet {
        match dt {
            DataType::Int64 => IdSet::Int(HashSet::new()),
            _ => IdSet::Str(HashSet::new()),
        }
    }

    /// Adds the ids of `ids`; the first one seen before, as text, if any.
    fn insert_all(&mut self, ids: &dyn Array) -> Option<String> {
        match self {
            IdSet::Int(set) => ids
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .find(|&&v| !set.insert(v))
                .map(|v| v.to_string()),
            IdSet::Str(set) => ids
                .as_string::<i32>()
                .iter()
                .map(Option::unwrap_or_default)
                .find(|v| !set.insert(v.to_string()))
                .map(|v| format!("'{v}'")),
        }
    }

    /// The first of these ids stored live in `snapshot`, as text.
    fn first_stored(&self, snapshot: &Snapshot) -> Option<String> {
        match self {
            IdSet::Int(set) => set
                .iter()
                .find(|&&v| snapshot.locate(IdRef::Int(v)).is_some())
                .map(|v| v.to_string()),
            IdSet::Str(set) => set
                .iter()
                .find(|v| snapshot.locate(IdRef::Str(v)).is_some())
                .map(|v| format!("'{v}'")),
        }
    }
}

/// Where an ingest goes.
#[derive(Debug)]
enum Target {
    /// No row has arrived yet.
    Undecided,
    Existing(Arc<Collection>),
    /// A collection created by this ingest when it commits, staged in a `.creating-*`
    /// directory of the database (removed on drop, and by the next open after a crash).
    New {
        dir: PathBuf,
        layout: Arc<Layout>,
    },
}

/// A streamed append: push batches, then commit. Nothing is visible, and nothing stays on
/// disk, unless `commit` succeeds. Obtained from [`Database::ingest`].
#[derive(Debug)]
pub struct Ingest {
    db: Arc<Database>,
    name: String,
    opts: CollectionOptions,
    max_rows: usize,
    target: Target,
    ids: Option<IdSet>,
    pending: Vec<RecordBatch>,
    pending_bytes: usize,
    staged: Vec<Staged>,
    rows: usize,
}

impl Ingest {
    pub(crate) fn new(db: Arc<Database>, name: &str, opts: CollectionOptions) -> Result<Ingest> {
        crate::validate::check_name(name)?;
        opts.index.check()?;
        let target = if db.exists(name) {
            Target::Existing(db.collection(name)?)
        } else {
            Target::Undecided
        };
        Ok(Ingest {
            db,
            name: name.to_string(),
            opts,
            max_rows: usize::MAX,
            target,
            ids: None,
            pending: Vec::new(),
            pending_bytes: 0,
            staged: Vec::new(),
            rows: 0,
        })
    }

    /// Refuses the stream once it holds more than `max_rows` rows.
    pub fn with_max_rows(mut self, max_rows: usize) -> Self {
        self.max_rows = max_rows;
        self
    }

    /// Rows accepted so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    fn layout(&self) -> Option<(&Layout, Metric)> {
        match &self.target {
            Target::Undecided => None,
            Target::Existing(c) => Some((c.layout(), c.metric())),
            Target::New { layout, .. } => Some((layout, self.opts.metric)),
        }
    }

    /// Validates `batch` and stages it. On error the ingest should be dropped.
    pub fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.rows + batch.num_rows() > self.max_rows {
            return Err(Error::invalid(format!(
                "put refused: the stream exceeds the limit of {} rows per put (max_put_rows)",
                self.max_rows
            )));
        }
        if matches!(self.target, Target::Undecided) {
            let schema = schema_for_batch(
                batch,
                &self.opts.id_column,
                self.opts.vector_column.as_deref(),
            )?;
            let layout = Layout::from_schema(
                &self.name,
                &schema,
                &self.opts.id_column,
                self.opts.vector_column.as_deref(),
                None,
            )?;
            let dir = self
                .db
                .path()
                .join(format!(".creating-{}-{}", self.name, unique()));
            fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
            self.target = Target::New {
                dir,
                layout: Arc::new(layout),
            };
        }
        let (layout, _) = self.layout().expect("decided");
        let prepared = layout.prepare(batch)?;
        layout.check_unique_ids_of(&prepared)?;
        let id_column = prepared.column(layout.id_index).clone();
        let ids = self
            .ids
            .get_or_insert_with(|| IdSet::for_type(id_column.data_type()));
        if let Some(id) = ids.insert_all(id_column.as_ref()) {
            return Err(Error::invalid(format!(
                "collection '{}': duplicate id {id} in the stream (sent twice)",
                self.name
            )));
        }
        if let Target::Existing(c) = &self.target {
            let snapshot = c.snapshot();
            refuse_stored(&snapshot, snapshot.first_existing(id_column.as_ref()))?;
        }
        self.rows += prepared.num_rows();
        self.pending_bytes += prepared.get_array_memory_size();
        self.pending.push(prepared);
        if self.pending_bytes >= SEGMENT_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the pending batches as one staged segment.
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let (layout, metric) = self.layout().expect("rows were pushed");
        let batch = arrow_select::concat::concat_batches(&layout.schema, &self.pending)?;
        let dir = match &self.target {
            Target::Existing(c) => c.dir().to_path_buf(),
            Target::New { dir, .. } => dir.clone(),
            Target::Undecided => unreachable!("rows were pushed"),
        };
        let staged = Staged::write(&dir, layout, metric, &batch)?;
        self.pending.clear();
        self.pending_bytes = 0;
        self.staged.push(staged);
        Ok(())
    }

    /// Commits every pushed row at once (creating the collection if needed) and returns the
    /// collection's name and the rows written.
    pub fn commit(mut self) -> Result<(String, usize)> {
        self.flush()?;
        let staged = std::mem::take(&mut self.staged);
        let ids = self.ids.take();
        let check =
            |snap: &Snapshot| refuse_stored(snap, ids.as_ref().and_then(|i| i.first_stored(snap)));
        match std::mem::replace(&mut self.target, Target::Undecided) {
            Target::Undecided => Err(Error::invalid(format!(
                "collection '{}' does not exist and the stream has no rows to create it from",
                self.name
            ))),
            Target::Existing(c) => {
                c.commit_staged(staged, check)?;
                Ok((self.name.clone(), self.rows))
            }
            Target::New { dir, layout } => {
                let created = self.db.create_with(&self.name, &dir, |dir| {
                    let mut manifest = new_manifest(&layout, &self.opts)?;
                    let mut renamed = Vec::new();
                    for s in &staged {
                        s.name_into(dir, &mut manifest, &mut renamed)?;
                    }
                    storage::sync_dir(dir)?;
                    manifest.commit(dir)
                });
                match created {
                    Ok(_) => Ok((self.name.clone(), self.rows)),
                    Err(Error::AlreadyExists(_)) => {
                        // Another writer created the collection while this stream ran: append
                        // to it if the rows fit its definition.
                        let _ = fs::remove_dir_all(&dir);
                        let c = self.db.collection(&self.name)?;
                        if c.layout().schema != layout.schema {
                            return Err(Error::invalid(format!(
                                "collection '{}' was created by another writer meanwhile with \
                                 another schema",
                                self.name
                            )));
                        }
                        let mut staged = staged;
                        for s in &mut staged {
                            s.move_to(c.dir())?;
                        }
                        c.commit_staged(staged, check)?;
                        Ok((self.name.clone(), self.rows))
                    }
                    Err(e) => {
                        let _ = fs::remove_dir_all(&dir);
                        Err(e)
                    }
                }
            }
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.staged.clear();
        if let Target::New { dir, .. } = &self.target {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Refuses a write holding an id that is stored already (`id` as `first_existing` gives it).
pub(crate) fn refuse_stored(snapshot: &Snapshot, id: Option<String>) -> Result<()> {
    match id {
        Some(id) => Err(Error::invalid(format!(
            "collection '{}': duplicate id {id} is already stored",
            snapshot.layout.name
        ))),
        None => Ok(()),
    }
}
