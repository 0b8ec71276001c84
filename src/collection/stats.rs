//! A collection's stats: counts, sizes, settings and what maintenance is doing.

use super::Collection;
use crate::options::{Backpressure, IndexKind};
use crate::stats::{IndexParams, Stats};
use crate::writer::backpressure::unindexed_rows;
use crate::Result;

impl Collection {
    /// Counts, sizes and settings.
    pub fn stats(&self) -> Result<Stats> {
        let report = self.maintenance.report();
        let worker = report.worker;
        let manifest = self.lock_writer().clone();
        let snapshot = self.snapshot();
        let mut bytes = self.store.stamp(&manifest.file(&*self.store))?.bytes;
        for s in &manifest.segments {
            bytes += s.checksummed_bytes();
            if let Some(d) = &s.deletes {
                bytes += self.store.stamp(&d.file)?.bytes;
            }
        }
        let settings = manifest.index;
        let stalls = self.room.stalls();
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
            index_bytes: manifest
                .segments
                .iter()
                .filter_map(|s| s.index.as_ref().map(|i| i.bytes))
                .sum(),
            id_column: self
                .layout
                .schema
                .field(self.layout.id_index)
                .name()
                .clone(),
            vector_column: self
                .layout
                .schema
                .field(self.layout.vector_index)
                .name()
                .clone(),
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
                m: settings.graph.m,
                ef_construction: settings.graph.ef_construction,
                ef_search: settings.graph.ef_search,
                index_threshold: settings.threshold,
                ivf_threshold: settings.ivf_threshold,
                nlist: settings.ivf.nlist,
                nprobe: settings.ivf.nprobe,
            },
            indexing: worker.running,
            merges_running: report.merges_running,
            index_builds_running: report.builds_running,
            index_build: report.index_build,
            index_error: worker.last_error,
            repairs: worker.repairs,
            unindexed_rows: unindexed_rows(&snapshot),
            max_unindexed_rows: Backpressure::limit(&settings).unwrap_or(0),
            writes_stalled: stalls.waited,
            writes_refused: stalls.refused,
            write_stall_ms: stalls.wait_ms,
        })
    }
}
