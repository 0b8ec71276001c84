//! The writes of a collection (Qdrant's `point_ops`): append, upsert, delete, conditional
//! delete and update, and settings changes, each one commit through `Collection::transact`.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{Array, BooleanArray, RecordBatch};

use super::Collection;
use crate::error::write;
use crate::ids::{ids_of, IdRef};
use crate::options::IndexSettings;
use crate::search::Selection;
use crate::snapshot::{SegmentView, Snapshot};
use crate::writer::append::Staged;
use crate::writer::delete::delete_rows;
use crate::writer::Transaction;
use crate::{Error, Result};

impl Collection {
    /// Appends `batches` as one new segment. Every batch is validated (schema, dimension,
    /// nulls, non-finite values, duplicate ids within the batches and against stored rows)
    /// before anything is written; a refused append leaves the collection as it was.
    /// Returns the number of rows appended.
    pub fn append(&self, batches: &[RecordBatch]) -> Result<usize> {
        let Some(batch) = self.prepare_all(batches)? else {
            return Ok(0);
        };
        self.admit(None)?;
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
        check: impl Fn(&Snapshot) -> Result<()>,
    ) -> Result<()> {
        self.transact(|txn, snapshot| {
            check(snapshot)?;
            let mut parts = snapshot.parts.clone();
            for s in &staged {
                self.add_staged(txn, &mut parts, s)?;
            }
            Ok(((), parts))
        })?;
        self.maintenance.written();
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
        let ids: Vec<IdRef<'a>> = ids.collect();
        self.transact(|txn, snapshot| {
            let located = located(snapshot, ids.iter().copied());
            let (mut parts, _) = delete_rows(txn, snapshot, &located)?;
            for s in &staged {
                self.add_staged(txn, &mut parts, s)?;
            }
            Ok(((), parts))
        })?;
        self.maintenance.written();
        Ok(())
    }

    /// Renames `staged` into place as a new segment of `txn` and adds its part to `parts`,
    /// mapped as a reopen would read it (zero-copy from the page cache).
    fn add_staged(
        &self,
        txn: &mut Transaction<'_>,
        parts: &mut Vec<SegmentView>,
        staged: &Staged,
    ) -> Result<()> {
        let p = txn.add_segment(staged)?;
        let meta = &txn.next.segments[p];
        parts.push(SegmentView::open(txn.store(), &self.layout, txn.next.metric, meta, false)?.0);
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
            let next = txn
                .commit()
                .inspect_err(|e| self.unsettled(e, manifest.version + 1))?;
            let mut current = write(&self.current);
            let mut snapshot = current.with_parts(next.version, current.parts.clone());
            snapshot.index = settings;
            *current = Arc::new(snapshot);
            *manifest = next;
        }
        drop(manifest);
        self.room.freed();
        self.maintenance.schedule();
        Ok(settings)
    }

    /// Deletes the rows with these ids; ids not stored are ignored. Returns how many rows were
    /// deleted.
    pub fn delete(&self, ids: &dyn Array) -> Result<usize> {
        let ids = self.layout.cast_ids(ids)?;
        self.delete_selected(|snapshot| Ok(located(snapshot, ids_of(ids.as_ref()))))
    }

    /// Deletes the live rows `mask` selects (it is evaluated on each segment's rows; a null
    /// does not select). Returns how many rows were deleted.
    pub fn delete_where(
        &self,
        mut mask: impl FnMut(&RecordBatch) -> Result<BooleanArray>,
    ) -> Result<usize> {
        self.delete_selected(|snapshot| {
            Selection::from_masks(snapshot, &mut mask).map(|s| s.live_rows(snapshot))
        })
    }

    /// Deletes, in one commit, the rows `select` picks in the snapshot the commit is based on
    /// (part → rows); returns how many were deleted.
    fn delete_selected(
        &self,
        mut select: impl FnMut(&Snapshot) -> Result<BTreeMap<usize, Vec<usize>>>,
    ) -> Result<usize> {
        self.transact(|txn, snapshot| {
            let (parts, deleted) = delete_rows(txn, snapshot, &select(snapshot)?)?;
            Ok((deleted, parts))
        })
        .inspect(|_| self.maintenance.written())
    }

    /// Replaces the live rows `mask` selects with the rows `update` makes of them (given in
    /// the collection's schema), in one commit: the old rows are deleted and the new ones
    /// appended, validated like any append (an id may not collide with a row that stays).
    /// Returns how many rows were replaced.
    pub fn update_where(
        &self,
        mut mask: impl FnMut(&RecordBatch) -> Result<BooleanArray>,
        mut update: impl FnMut(RecordBatch) -> Result<RecordBatch>,
    ) -> Result<usize> {
        self.admit(None)?; // it adds rows: held back like an append
        self.transact(|txn, snapshot| {
            let by_part =
                Selection::from_masks(snapshot, &mut mask).map(|s| s.live_rows(snapshot))?;
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
        .inspect(|_| self.maintenance.written())
    }

    /// Appends `batches`, replacing the stored rows that have the same ids, in one commit.
    /// The batches are validated like an append (their ids must be unique among them).
    /// Returns the number of rows written.
    pub fn upsert(&self, batches: &[RecordBatch]) -> Result<usize> {
        let Some(batch) = self.prepare_all(batches)? else {
            return Ok(0);
        };
        self.admit(None)?;
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
        mut parts: Vec<SegmentView>,
        batch: &RecordBatch,
    ) -> Result<Vec<SegmentView>> {
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
