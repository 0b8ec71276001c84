//! The manifest's stored form of a collection's settings. The field names and the defaults
//! of fields older manifests lack belong to the file format, not to the API: renaming a field
//! of `IndexSettings` changes nothing on disk, and a manifest written before a setting existed
//! reads as it always did (`tests/fixtures/format-1`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::options::{
    Backpressure, CompactionPolicy, GraphSettings, IndexKind, IndexSettings, IvfSettings, QuantKind,
};

/// `IndexSettings` as the manifest stores it.
#[derive(Serialize, Deserialize)]
struct Stored {
    /// Manifests from before the choice of index were HNSW.
    #[serde(default = "hnsw")]
    kind: IndexKind,
    /// Manifests from before the choice of codes traversed 4-bit codes.
    #[serde(default = "sq4")]
    quant: QuantKind,
    m: usize,
    ef_construction: usize,
    ef_search: usize,
    #[serde(default = "index_threshold")]
    threshold: usize,
    #[serde(default = "on")]
    compaction: bool,
    #[serde(default = "merge_factor")]
    merge_factor: usize,
    #[serde(default = "max_segment_rows")]
    max_segment_rows: usize,
    #[serde(default = "idle_ms")]
    compaction_idle_ms: u64,
    #[serde(default = "ivf_threshold")]
    ivf_threshold: usize,
    #[serde(default)]
    nlist: usize,
    #[serde(default = "nprobe")]
    nprobe: usize,
    #[serde(default = "max_unindexed_rows")]
    max_unindexed_rows: usize,
    #[serde(default = "write_stall_ms")]
    write_stall_ms: u64,
}

fn hnsw() -> IndexKind {
    IndexKind::Hnsw
}
fn sq4() -> QuantKind {
    QuantKind::Sq4
}
fn index_threshold() -> usize {
    10_000
}
fn on() -> bool {
    true
}
fn merge_factor() -> usize {
    10
}
fn max_segment_rows() -> usize {
    4_000_000
}
fn idle_ms() -> u64 {
    1000
}
fn ivf_threshold() -> usize {
    1_000_000
}
fn nprobe() -> usize {
    32
}
fn max_unindexed_rows() -> usize {
    20_000
}
fn write_stall_ms() -> u64 {
    10_000
}

/// Writes `settings` in the stored form (`#[serde(with = "...")]` on the manifest's field).
pub(crate) fn serialize<S: Serializer>(s: &IndexSettings, out: S) -> Result<S::Ok, S::Error> {
    Stored {
        kind: s.kind,
        quant: s.quant,
        m: s.graph.m,
        ef_construction: s.graph.ef_construction,
        ef_search: s.graph.ef_search,
        threshold: s.threshold,
        compaction: s.compaction.enabled,
        merge_factor: s.compaction.merge_factor,
        max_segment_rows: s.compaction.max_segment_rows,
        compaction_idle_ms: s.compaction.idle_ms,
        ivf_threshold: s.ivf_threshold,
        nlist: s.ivf.nlist,
        nprobe: s.ivf.nprobe,
        max_unindexed_rows: s.backpressure.max_unindexed_rows,
        write_stall_ms: s.backpressure.stall_ms,
    }
    .serialize(out)
}

/// Reads the stored form.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IndexSettings, D::Error> {
    let s = Stored::deserialize(d)?;
    Ok(IndexSettings {
        kind: s.kind,
        quant: s.quant,
        threshold: s.threshold,
        ivf_threshold: s.ivf_threshold,
        graph: GraphSettings {
            m: s.m,
            ef_construction: s.ef_construction,
            ef_search: s.ef_search,
        },
        ivf: IvfSettings {
            nlist: s.nlist,
            nprobe: s.nprobe,
        },
        compaction: CompactionPolicy {
            enabled: s.compaction,
            merge_factor: s.merge_factor,
            max_segment_rows: s.max_segment_rows,
            idle_ms: s.compaction_idle_ms,
        },
        backpressure: Backpressure {
            max_unindexed_rows: s.max_unindexed_rows,
            stall_ms: s.write_stall_ms,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Holder(#[serde(with = "super")] IndexSettings);

    #[test]
    fn old_manifests_read_with_defaults() {
        let Holder(s) =
            serde_json::from_str(r#"{"m":16,"ef_construction":200,"ef_search":64}"#).unwrap();
        // Collections made before `index=auto` existed were graphs.
        assert_eq!(
            s,
            IndexSettings {
                kind: IndexKind::Hnsw,
                ..IndexSettings::default()
            }
        );
    }

    #[test]
    fn settings_round_trip_through_the_stored_form() {
        let s = IndexSettings {
            kind: IndexKind::Ivf,
            quant: QuantKind::RaBitQ(2),
            ivf: IvfSettings {
                nlist: 77,
                nprobe: 5,
            },
            ..IndexSettings::default()
        };
        let text = serde_json::to_string(&Holder(s)).unwrap();
        assert_eq!(serde_json::from_str::<Holder>(&text).unwrap().0, s);
    }
}
