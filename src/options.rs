//! How a collection is defined beyond its schema: its metric, its key and vector columns, and
//! its index settings (`IndexKind`, `QuantKind` and their parameters, stored in the manifest).
//! `CollectionOptions::set` is the one parser of `key=value` options, shared by Flight
//! descriptors today and SQL, Python and C later.

use serde::{Deserialize, Serialize};

use crate::distance::Metric;
use crate::schema::VectorType;
use crate::{Error, Result};

mod keys;

use keys::option_keys;
pub use keys::{setting_keys, settings_help, Setting, SETTINGS};

/// Which index a segment gets once it reaches the collection's threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    /// No index: every segment is searched exactly.
    Flat,
    /// A hierarchical navigable small-world graph.
    Hnsw,
    /// Inverted lists around k-means centroids, scanned `nprobe` lists at a time.
    Ivf,
    /// Chosen by the segment's size when it is indexed (a setting, never an index file's
    /// kind): a graph below `ivf_threshold` rows, IVF from there on.
    Auto,
}

impl IndexKind {
    /// The kind's name, as options and statistics spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            IndexKind::Flat => "flat",
            IndexKind::Hnsw => "hnsw",
            IndexKind::Ivf => "ivf",
            IndexKind::Auto => "auto",
        }
    }
}

impl std::str::FromStr for IndexKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        parse_name(
            "index kind",
            s,
            &[
                IndexKind::Auto,
                IndexKind::Flat,
                IndexKind::Hnsw,
                IndexKind::Ivf,
            ],
            IndexKind::as_str,
        )
    }
}

/// How an index compresses the vectors it traverses (exact distances re-rank its candidates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantKind {
    /// The float vectors themselves.
    None,
    /// 8-bit scalar codes, one range per dimension: a quarter of the bytes.
    Sq8,
    /// 4-bit scalar codes, one range per dimension: an eighth of the bytes.
    Sq4,
    /// RaBitQ codes of 1 to 9 bits per dimension (rotated offsets from a centre, unbiased
    /// distance estimates): `bits / 32` of the bytes.
    #[serde(rename = "rabitq")]
    RaBitQ(u8),
    /// The sign of each dimension, 1 bit: a thirty-second of the bytes.
    Binary,
}

const RABITQ_NAMES: [&str; 9] = [
    "rabitq1", "rabitq2", "rabitq3", "rabitq4", "rabitq5", "rabitq6", "rabitq7", "rabitq8",
    "rabitq9",
];

impl QuantKind {
    /// The kind's name, as options spell it (`rabitq4` for 4-bit RaBitQ).
    pub fn as_str(self) -> &'static str {
        match self {
            QuantKind::None => "none",
            QuantKind::Sq8 => "sq8",
            QuantKind::Sq4 => "sq4",
            QuantKind::Binary => "binary",
            QuantKind::RaBitQ(b) => RABITQ_NAMES
                .get(usize::from(b).wrapping_sub(1))
                .copied()
                .unwrap_or("rabitq?"),
        }
    }

    /// Every kind, as options name them.
    fn all() -> Vec<QuantKind> {
        let mut all = vec![
            QuantKind::None,
            QuantKind::Sq8,
            QuantKind::Sq4,
            QuantKind::Binary,
        ];
        all.extend((1..=9).map(QuantKind::RaBitQ));
        all
    }
}

impl std::str::FromStr for QuantKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        QuantKind::all()
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown quantization '{s}' (expected none, sq8, sq4, binary or rabitq1 to rabitq9)"
                ))
            })
    }
}

/// The one of `all` whose name (as `name` gives it) is `s`, ignoring case.
fn parse_name<T: Copy>(what: &str, s: &str, all: &[T], name: fn(T) -> &'static str) -> Result<T> {
    all.iter()
        .copied()
        .find(|&k| name(k).eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|&k| name(k)).collect();
            Error::invalid(format!(
                "unknown {what} '{s}' (expected {})",
                names.join(" or ")
            ))
        })
}

/// A collection's index settings: which index a segment gets and when, the codes it
/// traverses, each index's parameters and the compaction policy. The manifest keeps them in a
/// stored form of its own (`storage::settings`), so this type is the API only (serialized
/// flat, by the keys `set` takes, for replies; never read back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IndexSettings {
    /// The index segments get past the threshold.
    pub kind: IndexKind,
    /// The codes an index traverses.
    pub quant: QuantKind,
    /// A segment with at least this many rows gets an index automatically, built in the
    /// background after the append commits; smaller segments are searched exactly. 0 turns
    /// automatic indexing off (`build_index` still works).
    pub threshold: usize,
    /// With `index=auto`, segments of at least this many rows get IVF instead of a graph.
    pub ivf_threshold: usize,
    /// The graph's parameters.
    #[serde(flatten)]
    pub graph: GraphSettings,
    /// IVF's parameters.
    #[serde(flatten)]
    pub ivf: IvfSettings,
    /// When segments merge.
    #[serde(flatten)]
    pub compaction: CompactionPolicy,
    /// How far writes may run ahead of the background indexing.
    #[serde(flatten)]
    pub backpressure: Backpressure,
}

/// How far writes may run ahead of the background indexing: the rows not yet in an index are
/// searched exactly by every query, so past a bound a write waits for the indexing to catch up
/// and, failing that, is refused (the way RocksDB stalls writes) rather than letting searches
/// slow without limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Backpressure {
    /// A write waits while more rows than this (or than twice `index_threshold`, whichever is
    /// more: the background merges gather that many before indexing them) are not yet indexed;
    /// 0 turns the bound off. Applies only where background work drains those rows (an index
    /// kind other than flat, a non-zero threshold).
    pub max_unindexed_rows: usize,
    /// How long a write waits for room before it is refused with `ResourceExhausted`
    /// (nothing written).
    #[serde(rename = "write_stall_ms")]
    pub stall_ms: u64,
}

impl Backpressure {
    /// The bound in force for `settings` (`None`: writes never wait).
    pub(crate) fn limit(settings: &IndexSettings) -> Option<usize> {
        let b = settings.backpressure;
        let drained = settings.kind != IndexKind::Flat && settings.threshold > 0;
        (drained && b.max_unindexed_rows > 0).then(|| {
            b.max_unindexed_rows
                .max(settings.threshold.saturating_mul(2))
        })
    }
}

/// The HNSW graph's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GraphSettings {
    /// Neighbours per node (layer 0 keeps 2m).
    pub m: usize,
    /// The beam width while building.
    pub ef_construction: usize,
    /// The search beam width used when a query does not give one.
    pub ef_search: usize,
}

/// IVF's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IvfSettings {
    /// Lists per segment (0: about 4·√rows).
    pub nlist: usize,
    /// Lists scanned when a query does not say.
    pub nprobe: usize,
}

/// When the background workers merge segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CompactionPolicy {
    /// Whether the background workers merge segments (`Collection::compact` works either
    /// way).
    #[serde(rename = "compaction")]
    pub enabled: bool,
    /// Segments of about the same size merge once this many of them exist; the fresh rows
    /// of unindexed segments merge once they add up to the index threshold.
    pub merge_factor: usize,
    /// Merges never make a segment of more rows than this.
    pub max_segment_rows: usize,
    /// After this long without a write, the fresh unindexed rows are merged into the indexed
    /// segment (inserted into its graph), so a quiet collection is searched as one graph.
    #[serde(rename = "compaction_idle_ms")]
    pub idle_ms: u64,
}

/// Segments of this many rows or more get IVF rather than a graph under `index=auto`. On
/// minilm-phrases 500K the graph is level with IVF or ahead at every recall; at 1M IVF (with
/// second lists) is level at 0.90 and ahead above, and builds in a third of the time.
pub(crate) const DEFAULT_IVF_THRESHOLD: usize = 1_000_000;

/// The default automatic-indexing threshold, in rows.
pub(crate) const DEFAULT_INDEX_THRESHOLD: usize = 10_000;

/// The default bound on rows not yet indexed: an exact scan of 20,000 rows of 384 floats reads
/// 31 MB, a few milliseconds a query.
pub(crate) const DEFAULT_MAX_UNINDEXED_ROWS: usize = 20_000;

/// How long a write waits for the indexing to make room, by default.
pub(crate) const DEFAULT_WRITE_STALL_MS: u64 = 10_000;

impl Default for Backpressure {
    fn default() -> Self {
        Backpressure {
            max_unindexed_rows: DEFAULT_MAX_UNINDEXED_ROWS,
            stall_ms: DEFAULT_WRITE_STALL_MS,
        }
    }
}

impl Default for GraphSettings {
    fn default() -> Self {
        GraphSettings {
            m: 16,
            ef_construction: 200,
            ef_search: 64,
        }
    }
}

impl Default for IvfSettings {
    fn default() -> Self {
        IvfSettings {
            nlist: 0,
            nprobe: 32,
        }
    }
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            enabled: true,
            merge_factor: 10,
            max_segment_rows: 4_000_000,
            idle_ms: 1000,
        }
    }
}

impl Default for IndexSettings {
    fn default() -> Self {
        IndexSettings {
            kind: IndexKind::Auto,
            quant: QuantKind::Sq4,
            threshold: DEFAULT_INDEX_THRESHOLD,
            ivf_threshold: DEFAULT_IVF_THRESHOLD,
            graph: GraphSettings::default(),
            ivf: IvfSettings::default(),
            compaction: CompactionPolicy::default(),
            backpressure: Backpressure::default(),
        }
    }
}

impl IndexSettings {
    /// The index a segment of `rows` rows gets (`auto` resolved by size).
    pub fn kind_for(&self, rows: usize) -> IndexKind {
        match self.kind {
            IndexKind::Auto if rows >= self.ivf_threshold => IndexKind::Ivf,
            IndexKind::Auto => IndexKind::Hnsw,
            kind => kind,
        }
    }

    /// Refuses settings no index can be built or searched with.
    pub fn check(&self) -> Result<()> {
        if !(2..=256).contains(&self.graph.m) {
            return Err(Error::invalid(format!(
                "index setting m must be between 2 and 256, got {}",
                self.graph.m
            )));
        }
        for (name, v) in [
            ("ef_construction", self.graph.ef_construction),
            ("ef_search", self.graph.ef_search),
        ] {
            if !(1..=100_000).contains(&v) {
                return Err(Error::invalid(format!(
                    "index setting {name} must be between 1 and 100000, got {v}"
                )));
            }
        }
        if !(1..=1 << 20).contains(&self.ivf.nprobe) || self.ivf.nlist > 1 << 20 {
            return Err(Error::invalid(format!(
                "index settings nprobe (1 to 1048576) and nlist (0 for automatic, up to \
                 1048576) out of range: nprobe {}, nlist {}",
                self.ivf.nprobe, self.ivf.nlist
            )));
        }
        if let QuantKind::RaBitQ(b) = self.quant {
            if !(1..=9).contains(&b) {
                return Err(Error::invalid(format!(
                    "quantization rabitq takes 1 to 9 bits, got {b}"
                )));
            }
        }
        if !(2..=1000).contains(&self.compaction.merge_factor) {
            return Err(Error::invalid(format!(
                "setting merge_factor must be between 2 and 1000, got {}",
                self.compaction.merge_factor
            )));
        }
        if !(1..=u32::MAX as usize).contains(&self.compaction.max_segment_rows) {
            return Err(Error::invalid(format!(
                "setting max_segment_rows must be between 1 and {}, got {}",
                u32::MAX,
                self.compaction.max_segment_rows
            )));
        }
        Ok(())
    }

    /// Sets one of the settings that may change after a collection is created (they apply to
    /// what is indexed or compacted afterwards): `index`, `quantization`, `m`,
    /// `ef_construction`, `ef_search`, `index_threshold`, `compaction` (on, off),
    /// `merge_factor`, `max_segment_rows`, `compaction_idle_ms`, `ivf_threshold`, `nlist`,
    /// `nprobe`, `max_unindexed_rows`, `write_stall_ms`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let int = || -> Result<usize> {
            value.parse().map_err(|_| {
                Error::invalid(format!(
                    "setting '{key}' must be a non-negative integer, got '{value}'"
                ))
            })
        };
        match key {
            "index" => self.kind = value.parse()?,
            "quantization" => self.quant = value.parse()?,
            "m" => self.graph.m = int()?,
            "ef_construction" => self.graph.ef_construction = int()?,
            "ef_search" => self.graph.ef_search = int()?,
            "index_threshold" => self.threshold = int()?,
            "merge_factor" => self.compaction.merge_factor = int()?,
            "max_segment_rows" => self.compaction.max_segment_rows = int()?,
            "compaction_idle_ms" => self.compaction.idle_ms = int()? as u64,
            "ivf_threshold" => self.ivf_threshold = int()?,
            "nlist" => self.ivf.nlist = int()?,
            "nprobe" => self.ivf.nprobe = int()?,
            "max_unindexed_rows" => self.backpressure.max_unindexed_rows = int()?,
            "write_stall_ms" => self.backpressure.stall_ms = int()? as u64,
            "compaction" => {
                self.compaction.enabled = match value {
                    "on" | "true" => true,
                    "off" | "false" => false,
                    _ => {
                        return Err(Error::invalid(format!(
                            "setting 'compaction' must be on or off, got '{value}'"
                        )))
                    }
                }
            }
            fixed if SETTINGS.iter().any(|s| s.key == fixed && !s.alterable) => {
                return Err(Error::invalid(format!(
                    "setting '{key}' is fixed when a collection is created and cannot be \
                     altered (the settings alter changes: {})",
                    setting_keys()
                )))
            }
            other => {
                return Err(Error::invalid(format!(
                    "unknown setting '{other}' (expected {})",
                    setting_keys()
                )))
            }
        }
        Ok(())
    }
}

impl IndexSettings {
    /// Each setting's key, as `set` takes it, and its value in text.
    pub fn entries(&self) -> [(&'static str, String); 15] {
        let on = |b: bool| if b { "on" } else { "off" }.to_string();
        [
            ("index", self.kind.as_str().to_string()),
            ("quantization", self.quant.as_str().to_string()),
            ("m", self.graph.m.to_string()),
            ("ef_construction", self.graph.ef_construction.to_string()),
            ("ef_search", self.graph.ef_search.to_string()),
            ("index_threshold", self.threshold.to_string()),
            ("compaction", on(self.compaction.enabled)),
            ("merge_factor", self.compaction.merge_factor.to_string()),
            (
                "max_segment_rows",
                self.compaction.max_segment_rows.to_string(),
            ),
            ("compaction_idle_ms", self.compaction.idle_ms.to_string()),
            ("ivf_threshold", self.ivf_threshold.to_string()),
            ("nlist", self.ivf.nlist.to_string()),
            ("nprobe", self.ivf.nprobe.to_string()),
            (
                "max_unindexed_rows",
                self.backpressure.max_unindexed_rows.to_string(),
            ),
            ("write_stall_ms", self.backpressure.stall_ms.to_string()),
        ]
    }
}

/// How a new collection is defined beyond its schema.
#[derive(Debug, Clone)]
pub struct CollectionOptions {
    /// The distance rows are ranked by.
    pub metric: Metric,
    /// The primary-key column (Utf8 or Int64). Default `id`.
    pub id_column: String,
    /// The vector column; by default the one FixedSizeList<Float32, d> column.
    pub vector_column: Option<String>,
    /// The precision vectors are stored in; by default float16 for vectors that arrive (or
    /// are declared) as float16 and float32 for any other.
    pub vector_type: Option<VectorType>,
    /// Index kind, quantization and parameters.
    pub index: IndexSettings,
}

impl Default for CollectionOptions {
    fn default() -> Self {
        CollectionOptions {
            metric: Metric::Cosine,
            id_column: "id".into(),
            vector_column: None,
            vector_type: None,
            index: IndexSettings::default(),
        }
    }
}

impl CollectionOptions {
    /// Sets one option from its text form: `metric` (cosine, l2, dot), `id` and `vector`
    /// (column names), `vector_type` (float32, float16), `index` (auto, flat, hnsw, ivf),
    /// `quantization` (none, sq8, sq4, binary, rabitq1 to rabitq9), and the integers `m`, `ef_construction`, `ef_search`,
    /// `index_threshold`, `ivf_threshold`, `nlist`, `nprobe`. Values are checked when the options
    /// are used ([`IndexSettings::check`]).
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "metric" => self.metric = value.parse()?,
            "id" => self.id_column = value.to_string(),
            "vector" => self.vector_column = Some(value.to_string()),
            "vector_type" => self.vector_type = Some(value.parse()?),
            _ => {
                self.index.set(key, value).map_err(|e| match e {
                    Error::InvalidInput(m) if m.starts_with("unknown setting") => Error::invalid(
                        format!("unknown option '{key}' (expected {})", option_keys()),
                    ),
                    e => e,
                })?;
            }
        }
        Ok(())
    }

    /// Sets every `key=value` of `options` (see [`CollectionOptions::set`]).
    pub fn parse<'a>(options: impl IntoIterator<Item = &'a str>) -> Result<CollectionOptions> {
        let mut opts = CollectionOptions::default();
        for option in options {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| Error::invalid(format!("option '{option}' is not key=value")))?;
            opts.set(key.trim(), value.trim())?;
        }
        Ok(opts)
    }
}

impl CollectionOptions {
    /// Refuses options that an append to an existing collection cannot honour: each option
    /// set away from its default that differs from the collection's (`metric`, `metric_now`,
    /// and so on for the columns and settings), named with what to do instead. The metric,
    /// columns and vector type are fixed when a collection is created; index settings change
    /// with `alter`.
    pub(crate) fn refuse_changes(
        &self,
        collection: &str,
        metric: Metric,
        id_column: &str,
        vector_column: &str,
        vector_type: crate::schema::VectorType,
        settings: &IndexSettings,
    ) -> Result<()> {
        let defaults = CollectionOptions::default();
        let mut fixed = Vec::new();
        if self.metric != defaults.metric && self.metric != metric {
            fixed.push(format!("metric={} (it is {metric})", self.metric));
        }
        if self.id_column != defaults.id_column && self.id_column != id_column {
            fixed.push(format!("id={} (it is {id_column})", self.id_column));
        }
        if let Some(v) = self
            .vector_column
            .as_deref()
            .filter(|v| *v != vector_column)
        {
            fixed.push(format!("vector={v} (it is {vector_column})"));
        }
        if let Some(t) = self.vector_type.filter(|t| *t != vector_type) {
            fixed.push(format!(
                "vector_type={} (it is {})",
                t.as_str(),
                vector_type.as_str()
            ));
        }
        let mut alterable = Vec::new();
        let ours = self.index.entries();
        let default = defaults.index.entries();
        for ((key, mine), ((_, theirs), (_, dflt))) in ours
            .iter()
            .zip(settings.entries().iter().zip(default.iter()))
        {
            if mine != dflt && mine != theirs {
                alterable.push(format!("{key}={mine} (it is {theirs})"));
            }
        }
        if fixed.is_empty() && alterable.is_empty() {
            return Ok(());
        }
        let mut why = format!(
            "collection '{collection}' exists with other settings than this write asks for: {}",
            fixed
                .iter()
                .chain(&alterable)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !fixed.is_empty() {
            why.push_str("; the metric, columns and vector type are fixed when a collection is created (write to a new collection, or replace this one)");
        }
        if !alterable.is_empty() {
            why.push_str(&format!(
                "; change index settings with alter (`omendb alter {collection} KEY=VALUE`)"
            ));
        }
        Err(Error::invalid(why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_refuse() {
        let o = CollectionOptions::parse(["metric=l2", "m=8", "index=flat", "quantization=none"])
            .unwrap();
        assert_eq!(o.metric, Metric::L2);
        assert_eq!(o.index.graph.m, 8);
        assert_eq!(o.index.kind, IndexKind::Flat);
        assert_eq!(o.index.quant, QuantKind::None);
        let err = CollectionOptions::parse(["m=-1"]).unwrap_err().to_string();
        assert!(err.contains("non-negative integer"), "{err}");
        let err = CollectionOptions::parse(["colour=red"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown option 'colour'"), "{err}");
        assert!(CollectionOptions::parse(["metric"]).is_err());
    }

    #[test]
    fn the_settings_table_is_what_set_and_entries_know() {
        let alterable: Vec<&str> = SETTINGS
            .iter()
            .filter(|s| s.alterable)
            .map(|s| s.key)
            .collect();
        let entries = IndexSettings::default().entries();
        assert_eq!(alterable, entries.iter().map(|e| e.0).collect::<Vec<_>>());
        // Every alterable key sets its own value back; the fixed ones are refused by alter.
        for (key, value) in entries {
            let mut s = IndexSettings::default();
            s.set(key, &value).unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_eq!(s, IndexSettings::default(), "{key}");
        }
        for s in SETTINGS.iter().filter(|s| !s.alterable) {
            let err = IndexSettings::default()
                .set(s.key, "x")
                .unwrap_err()
                .to_string();
            assert!(err.contains("fixed when a collection is created"), "{err}");
        }
        assert!(setting_keys().ends_with("max_unindexed_rows or write_stall_ms"));
        assert!(option_keys().starts_with("metric, id, vector, vector_type, index"));
    }

    #[test]
    fn quantizations_parse_and_round_trip() {
        for (text, kind) in [
            ("rabitq4", QuantKind::RaBitQ(4)),
            ("RaBitQ1", QuantKind::RaBitQ(1)),
            ("rabitq9", QuantKind::RaBitQ(9)),
            ("binary", QuantKind::Binary),
        ] {
            let k: QuantKind = text.parse().unwrap();
            assert_eq!(k, kind);
            assert_eq!(k.as_str(), text.to_ascii_lowercase());
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(serde_json::from_str::<QuantKind>(&json).unwrap(), k);
        }
        for bad in ["rabitq0", "rabitq10", "rabitq", "pq"] {
            let err = bad.parse::<QuantKind>().unwrap_err().to_string();
            assert!(err.contains("rabitq1 to rabitq9"), "{err}");
        }
        let o = CollectionOptions::parse(["index=ivf", "nlist=100", "nprobe=7"]).unwrap();
        assert_eq!(
            (o.index.kind, o.index.ivf.nlist, o.index.ivf.nprobe),
            (IndexKind::Ivf, 100, 7)
        );
        assert_eq!(IndexSettings::default().kind, IndexKind::Auto);
    }

    #[test]
    fn the_settings_table_in_the_docs_is_this_table() {
        // docs/indexes.md lists every setting, in order, saying which ones `alter` changes.
        let rows: Vec<(String, bool)> = include_str!("../docs/indexes.md")
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
                let key = cells[0].trim_matches('`').to_string();
                (key, cells[3].starts_with("yes"))
            })
            .collect();
        let want: Vec<(String, bool)> = SETTINGS
            .iter()
            .map(|s| (s.key.to_string(), s.alterable))
            .collect();
        assert_eq!(
            rows, want,
            "docs/indexes.md's settings table drifted from SETTINGS"
        );
    }
}
