//! A streamed, all-or-nothing append (`Ingest`), used by servers: batches are validated as
//! they arrive and staged in segments of about `SEGMENT_BYTES`, so memory stays bounded
//! whatever the size of the stream, and the whole stream commits in one transaction at its
//! end, creating the collection (with the schema of its first rows) if it does not exist.

use std::sync::Arc;

use arrow_array::RecordBatch;

use super::{first_manifest, Database};
use crate::collection::{refuse_stored, Collection};
use crate::distance::Metric;
use crate::ids::IdSet;
use crate::ingest::schema_for_batch;
use crate::options::CollectionOptions;
use crate::schema::{check_name, Layout};
use crate::snapshot::Snapshot;
use crate::storage::{unique, Store};
use crate::writer::append::{Staged, SEGMENT_BYTES};
use crate::writer::Transaction;
use crate::{Error, Result};

/// How a write meets the collection it names. The mode is enforced when the write commits,
/// whatever the front end: a `Create` whose name another writer took meanwhile fails with
/// `AlreadyExists` rather than appending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// A new collection: fails with `AlreadyExists` when the name exists (at the start or at
    /// the commit).
    Create,
    /// Rows added to an existing collection: fails with `NotFound` when there is none.
    Append,
    /// Rows added to the collection, which is created (with the options and the schema of the
    /// first rows) when it does not exist.
    CreateOrAppend,
    /// Stored rows with the ids of the stream's rows replaced, the others added (the
    /// collection is created when it does not exist).
    Upsert,
    /// The collection replaced by a new one made of the stream's rows (or created).
    Replace,
}

impl WriteMode {
    /// Every mode, by its name.
    pub const ALL: [(&'static str, WriteMode); 5] = [
        ("create", WriteMode::Create),
        ("append", WriteMode::Append),
        ("create_or_append", WriteMode::CreateOrAppend),
        ("upsert", WriteMode::Upsert),
        ("replace", WriteMode::Replace),
    ];

    /// The mode's name, as `parse` takes it.
    pub fn name(self) -> &'static str {
        WriteMode::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map(|(n, _)| *n)
            .expect("every mode is listed")
    }
}

impl std::str::FromStr for WriteMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<WriteMode> {
        WriteMode::ALL
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                let names: Vec<&str> = WriteMode::ALL.iter().map(|(n, _)| *n).collect();
                Error::invalid(format!(
                    "unknown write mode '{s}' (expected one of: {})",
                    names.join(", ")
                ))
            })
    }
}

/// Where an ingest goes.
#[derive(Debug)]
enum Target {
    /// No row has arrived yet.
    Undecided,
    Existing(Arc<Collection>),
    /// A collection created by this ingest when it commits, staged in a place of the
    /// database's root (discarded on drop, and by the next open after a crash).
    New {
        place: String,
        store: Arc<dyn Store>,
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
    mode: WriteMode,
    /// How long the first batch waited for room.
    stalled: std::time::Duration,
    /// When the caller gives up: waiting for room ends there at the latest.
    deadline: Option<std::time::Instant>,
}

impl Ingest {
    pub(super) fn new(
        db: Arc<Database>,
        name: &str,
        mode: WriteMode,
        opts: CollectionOptions,
    ) -> Result<Ingest> {
        check_name(name)?;
        opts.index.check()?;
        let exists = db.exists(name);
        let target = match mode {
            WriteMode::Create if exists => {
                return Err(Error::AlreadyExists(format!("collection '{name}'")))
            }
            WriteMode::Append if !exists => {
                return Err(Error::NotFound(format!("collection '{name}'")))
            }
            WriteMode::Replace => Target::Undecided,
            _ if exists => {
                let existing = db.collection(name)?;
                let layout = existing.layout();
                opts.refuse_changes(
                    name,
                    existing.metric(),
                    layout.id_column(),
                    layout.vector_column(),
                    layout.vector_type,
                    &existing.snapshot().index_settings(),
                )?;
                Target::Existing(existing)
            }
            _ => Target::Undecided,
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
            mode,
            stalled: std::time::Duration::ZERO,
            deadline: None,
        })
    }

    /// Waits for room under `max_unindexed_rows` until `deadline` at the latest (the caller's
    /// own deadline; `write_stall_ms` bounds the wait too).
    pub fn with_deadline(mut self, deadline: Option<std::time::Instant>) -> Self {
        self.deadline = deadline;
        self
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

    /// How long the ingest waited for the collection's background indexing to make room for
    /// it (see the `max_unindexed_rows` setting).
    pub fn stalled(&self) -> std::time::Duration {
        self.stalled
    }

    fn layout(&self) -> Option<(&Layout, Metric)> {
        match &self.target {
            Target::Undecided => None,
            Target::Existing(c) => Some((c.layout(), c.metric())),
            Target::New { layout, .. } => Some((layout, self.opts.metric)),
        }
    }

    /// Makes the new collection this stream creates, its layout from `batch`'s schema.
    fn decide(&mut self, batch: &RecordBatch) -> Result<()> {
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
            self.opts.vector_type,
        )?;
        let (place, store) = self.db.root.stage(&self.name)?;
        self.target = Target::New {
            place,
            store,
            layout: Arc::new(layout),
        };
        Ok(())
    }

    /// Validates `batch` and stages it. On error the ingest should be dropped.
    pub fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            // A batch without rows still defines a collection to create (a create with no
            // rows, as a client that only streams Arrow can ask for one).
            let creates = matches!(
                self.mode,
                WriteMode::Create | WriteMode::CreateOrAppend | WriteMode::Upsert
            );
            if creates && matches!(self.target, Target::Undecided) {
                self.decide(batch)?;
            }
            return Ok(());
        }
        if self.rows + batch.num_rows() > self.max_rows {
            return Err(Error::invalid(format!(
                "put refused: the stream exceeds the limit of {} rows per put (max_put_rows)",
                self.max_rows
            )));
        }
        if let (Target::Existing(c), 0) = (&self.target, self.rows) {
            self.stalled = c.admit(self.deadline)?; // before the first row is staged
        }
        if matches!(self.target, Target::Undecided) {
            self.decide(batch)?;
        }
        let (layout, metric) = self.layout().expect("decided");
        let prepared = layout.prepare(batch, metric)?;
        let id_column = prepared.column(layout.id_index).clone();
        let ids = self
            .ids
            .get_or_insert_with(|| IdSet::for_type(id_column.data_type()));
        if let Some((_, id)) = ids.insert_all(id_column.as_ref()) {
            return Err(Error::invalid(format!(
                "collection '{}': duplicate id {id} in the stream (sent twice)",
                self.name
            )));
        }
        if let (Target::Existing(c), false) = (&self.target, self.mode == WriteMode::Upsert) {
            let snapshot = c.snapshot();
            let stored = snapshot.first_stored(crate::ids::ids_of(id_column.as_ref()));
            refuse_stored(&snapshot, stored)?;
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
        let store: Arc<dyn Store> = match &self.target {
            Target::Existing(c) => c.store().clone(),
            Target::New { store, .. } => store.clone(),
            Target::Undecided => unreachable!("rows were pushed"),
        };
        let staged = Staged::write(store, layout, metric, &batch, &unique())?;
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
        let check = |snap: &Snapshot| {
            refuse_stored(snap, ids.as_ref().and_then(|i| snap.first_stored(i.iter())))
        };
        match std::mem::replace(&mut self.target, Target::Undecided) {
            Target::Undecided if self.mode == WriteMode::Replace => Err(Error::invalid(format!(
                "replacing collection '{}' needs at least one row to define the new one",
                self.name
            ))),
            Target::Undecided => Err(Error::invalid(format!(
                "collection '{}' does not exist and the stream has no rows to create it from",
                self.name
            ))),
            Target::Existing(c) if self.mode == WriteMode::Upsert => {
                if let Some(ids) = &ids {
                    c.commit_staged_upsert(staged, ids.iter())?;
                }
                Ok((self.name.clone(), self.rows))
            }
            Target::Existing(c) => {
                c.commit_staged(staged, check)?;
                Ok((self.name.clone(), self.rows))
            }
            Target::New {
                place,
                store,
                layout,
            } => {
                if self.mode == WriteMode::Replace && self.db.exists(&self.name) {
                    self.db.drop_collection(&self.name)?;
                }
                let created = self.db.create_with(&self.name, &place, || {
                    let mut txn =
                        Transaction::create(&*store, first_manifest(&layout, &self.opts)?);
                    for s in &staged {
                        txn.add_segment(s)?;
                    }
                    txn.commit().map(drop)
                });
                match created {
                    Ok(_) => Ok((self.name.clone(), self.rows)),
                    Err(Error::AlreadyExists(_))
                        if matches!(self.mode, WriteMode::CreateOrAppend | WriteMode::Upsert) =>
                    {
                        // Another writer created the collection while this stream ran: add
                        // the rows to it if they fit its definition.
                        let c = self.db.collection(&self.name)?;
                        if c.layout().schema != layout.schema {
                            self.db.root.discard(&place);
                            return Err(Error::invalid(format!(
                                "collection '{}' was created by another writer meanwhile with \
                                 another schema",
                                self.name
                            )));
                        }
                        let mut staged = staged;
                        for s in &mut staged {
                            s.move_to(c.store().clone())?;
                        }
                        self.db.root.discard(&place);
                        match (self.mode, &ids) {
                            (WriteMode::Upsert, Some(ids)) => {
                                c.commit_staged_upsert(staged, ids.iter())?
                            }
                            _ => c.commit_staged(staged, check)?,
                        }
                        Ok((self.name.clone(), self.rows))
                    }
                    Err(e) => {
                        self.db.root.discard(&place);
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
        if let Target::New { place, .. } = &self.target {
            self.db.root.discard(place);
        }
    }
}
