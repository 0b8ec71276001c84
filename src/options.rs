//! How a collection is defined beyond its schema: its metric, its key and vector columns, and
//! its index settings (`IndexKind`, `QuantKind` and their parameters, stored in the manifest).
//! `CollectionOptions::set` is the one parser of `key=value` options, shared by Flight
//! descriptors today and SQL, Python and C later.

use serde::{Deserialize, Serialize};

use crate::distance::Metric;
use crate::{Error, Result};

/// Which index a segment gets once it reaches the collection's threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    /// No index: every segment is searched exactly.
    Flat,
    /// A hierarchical navigable small-world graph.
    Hnsw,
}

impl IndexKind {
    /// The kind's name, as options and statistics spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            IndexKind::Flat => "flat",
            IndexKind::Hnsw => "hnsw",
        }
    }
}

impl std::str::FromStr for IndexKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        parse_name(
            "index kind",
            s,
            &[IndexKind::Flat, IndexKind::Hnsw],
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
}

impl QuantKind {
    /// The kind's name, as options spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            QuantKind::None => "none",
            QuantKind::Sq8 => "sq8",
        }
    }
}

impl std::str::FromStr for QuantKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        parse_name(
            "quantization",
            s,
            &[QuantKind::None, QuantKind::Sq8],
            QuantKind::as_str,
        )
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

/// A collection's index settings.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct IndexSettings {
    /// The index segments get past the threshold.
    #[serde(default = "default_kind")]
    pub kind: IndexKind,
    /// The codes graph search traverses.
    #[serde(default = "default_quant")]
    pub quant: QuantKind,
    /// HNSW neighbours per node (layer 0 keeps 2m).
    pub m: usize,
    /// The beam width while building.
    pub ef_construction: usize,
    /// The search beam width used when a query does not give one.
    pub ef_search: usize,
    /// A segment with at least this many rows gets an index automatically, built in the
    /// background after the append commits; smaller segments are searched exactly. 0 turns
    /// automatic indexing off (`build_index` still works).
    #[serde(default = "default_index_threshold")]
    pub threshold: usize,
}

/// The default automatic-indexing threshold, in rows.
pub const DEFAULT_INDEX_THRESHOLD: usize = 10_000;

fn default_index_threshold() -> usize {
    DEFAULT_INDEX_THRESHOLD
}
fn default_kind() -> IndexKind {
    IndexKind::Hnsw
}
fn default_quant() -> QuantKind {
    QuantKind::Sq8
}

impl Default for IndexSettings {
    fn default() -> Self {
        IndexSettings {
            kind: IndexKind::Hnsw,
            quant: QuantKind::Sq8,
            m: 16,
            ef_construction: 200,
            ef_search: 64,
            threshold: DEFAULT_INDEX_THRESHOLD,
        }
    }
}

impl IndexSettings {
    /// Refuses settings no index can be built or searched with.
    pub fn check(&self) -> Result<()> {
        if !(2..=256).contains(&self.m) {
            return Err(Error::invalid(format!(
                "index setting m must be between 2 and 256, got {}",
                self.m
            )));
        }
        for (name, v) in [
            ("ef_construction", self.ef_construction),
            ("ef_search", self.ef_search),
        ] {
            if !(1..=100_000).contains(&v) {
                return Err(Error::invalid(format!(
                    "index setting {name} must be between 1 and 100000, got {v}"
                )));
            }
        }
        Ok(())
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
    /// Index kind, quantization and parameters.
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

/// The option keys `CollectionOptions::set` knows.
pub const OPTION_KEYS: &str =
    "metric, id, vector, index, quantization, m, ef_construction, ef_search or index_threshold";

impl CollectionOptions {
    /// Sets one option from its text form: `metric` (cosine, l2, dot), `id` and `vector`
    /// (column names), `index` (flat, hnsw), `quantization` (none, sq8), and the integers `m`,
    /// `ef_construction`, `ef_search`, `index_threshold`. Values are checked when the options
    /// are used ([`IndexSettings::check`]).
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let int = || -> Result<usize> {
            value.parse().map_err(|_| {
                Error::invalid(format!(
                    "option '{key}' must be a non-negative integer, got '{value}'"
                ))
            })
        };
        match key {
            "metric" => self.metric = value.parse()?,
            "id" => self.id_column = value.to_string(),
            "vector" => self.vector_column = Some(value.to_string()),
            "index" => self.index.kind = value.parse()?,
            "quantization" => self.index.quant = value.parse()?,
            "m" => self.index.m = int()?,
            "ef_construction" => self.index.ef_construction = int()?,
            "ef_search" => self.index.ef_search = int()?,
            "index_threshold" => self.index.threshold = int()?,
            other => {
                return Err(Error::invalid(format!(
                    "unknown option '{other}' (expected {OPTION_KEYS})"
                )))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_refuse() {
        let o = CollectionOptions::parse(["metric=l2", "m=8", "index=flat", "quantization=none"])
            .unwrap();
        assert_eq!(o.metric, Metric::L2);
        assert_eq!(o.index.m, 8);
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
    fn old_manifests_read_with_defaults() {
        let s: IndexSettings =
            serde_json::from_str(r#"{"m":16,"ef_construction":200,"ef_search":64}"#).unwrap();
        assert_eq!(s, IndexSettings::default());
    }
}
