//! A filter evaluated on one snapshot: for each of its segments, the rows the filter selects.

use std::collections::BTreeMap;

use arrow_array::{Array, BooleanArray, RecordBatch};

use crate::bitmap::Bitmap;
use crate::snapshot::Snapshot;
use crate::{Error, Result};

/// The rows a filtered search may return: for each part of the snapshot it was made from, the
/// selected rows (`None`: every row).
#[derive(Debug, Clone)]
pub struct Selection {
    pub(super) version: u64,
    pub(super) parts: Vec<Option<Bitmap>>,
}

impl Selection {
    /// Evaluates `mask` on each segment's rows (a null counts as not selected).
    pub fn from_masks(
        snapshot: &Snapshot,
        mut mask: impl FnMut(&RecordBatch) -> Result<BooleanArray>,
    ) -> Result<Selection> {
        let mut parts = Vec::with_capacity(snapshot.parts.len());
        for part in &snapshot.parts {
            let batch = &part.seg.batch;
            let m = mask(batch)?;
            if m.len() != batch.num_rows() {
                return Err(Error::invalid(format!(
                    "filter mask has {} rows, the segment {}",
                    m.len(),
                    batch.num_rows()
                )));
            }
            if m.null_count() == 0 && m.true_count() == m.len() {
                parts.push(None);
                continue;
            }
            let mut bits = Bitmap::new(m.len());
            for (row, v) in m.iter().enumerate() {
                if v == Some(true) {
                    bits.insert(row);
                }
            }
            parts.push(Some(bits));
        }
        Ok(Selection {
            version: snapshot.version,
            parts,
        })
    }

    /// The rows with these ids (in the collection's id type; ids not stored select nothing):
    /// a filter by id list, for callers without SQL conditions (the C ABI).
    pub fn from_ids(snapshot: &Snapshot, ids: &dyn Array) -> Result<Selection> {
        let ids = snapshot.layout.cast_ids(ids)?;
        let mut parts: Vec<Option<Bitmap>> = snapshot
            .parts
            .iter()
            .map(|p| Some(Bitmap::new(p.seg.rows())))
            .collect();
        for id in crate::ids::ids_of(ids.as_ref()) {
            if let Some((p, row)) = snapshot.locate(id) {
                if let Some(bits) = parts[p].as_mut() {
                    bits.insert(row);
                }
            }
        }
        Ok(Selection {
            version: snapshot.version,
            parts,
        })
    }

    /// Selected rows, deleted ones included.
    pub fn count(&self, snapshot: &Snapshot) -> usize {
        self.parts
            .iter()
            .zip(&snapshot.parts)
            .map(|(s, p)| s.as_ref().map_or(p.seg.rows(), Bitmap::count))
            .sum()
    }

    /// The selected rows that are live in `snapshot` (the one it was made from), by part:
    /// part → rows, parts with none left out.
    pub(crate) fn live_rows(&self, snapshot: &Snapshot) -> BTreeMap<usize, Vec<usize>> {
        let mut by_part = BTreeMap::new();
        for (p, (sel, part)) in self.parts.iter().zip(&snapshot.parts).enumerate() {
            let rows: Vec<usize> = match sel {
                Some(bits) => bits.iter().filter(|&r| !part.is_deleted(r)).collect(),
                None => (0..part.seg.rows())
                    .filter(|&r| !part.is_deleted(r))
                    .collect(),
            };
            if !rows.is_empty() {
                by_part.insert(p, rows);
            }
        }
        by_part
    }

    /// Refuses a selection made from another snapshot than `snapshot`.
    pub(super) fn check(&self, snapshot: &Snapshot) -> Result<()> {
        if self.version != snapshot.version || self.parts.len() != snapshot.parts.len() {
            return Err(Error::invalid(
                "the filter selection was made from another snapshot",
            ));
        }
        Ok(())
    }
}
