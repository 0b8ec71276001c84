//! The one table of a collection's settings, with their docs: parsing, errors, `--help`, the
//! Python docstrings and the docs' table are made from it.

/// One setting of a collection, as options, `alter` and `--help` name it.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The key, in `key=value`.
    pub key: &'static str,
    /// Whether `alter` changes it after the collection is created.
    pub alterable: bool,
    /// What it is and the values it takes.
    pub about: &'static str,
}

const fn setting(key: &'static str, alterable: bool, about: &'static str) -> Setting {
    Setting {
        key,
        alterable,
        about,
    }
}

/// Every setting of a collection: the one table that parsing, errors and the command line's
/// help are made from. The alterable ones are [`IndexSettings`](super::IndexSettings), in its
/// `entries` order.
pub const SETTINGS: [Setting; 19] = [
    setting("metric", false, "cosine, l2 or dot"),
    setting(
        "id",
        false,
        "the primary-key column (Utf8 or Int64; default id)",
    ),
    setting(
        "vector",
        false,
        "the vector column (default: the one list-of-floats column)",
    ),
    setting(
        "vector_type",
        false,
        "float32 or float16, the precision vectors are stored in",
    ),
    setting("index", true, "auto, hnsw, ivf or flat"),
    setting(
        "quantization",
        true,
        "sq4, sq8, rabitq1 to rabitq9, binary or none",
    ),
    setting("m", true, "graph neighbours per node (16)"),
    setting(
        "ef_construction",
        true,
        "beam width while building a graph (200)",
    ),
    setting(
        "ef_search",
        true,
        "beam width of a search that gives none (64)",
    ),
    setting(
        "index_threshold",
        true,
        "rows from which a segment is indexed (10000; 0: never)",
    ),
    setting("compaction", true, "on or off: background merges"),
    setting(
        "merge_factor",
        true,
        "segments of a size that merge together (10)",
    ),
    setting(
        "max_segment_rows",
        true,
        "the most rows a merge makes (4000000)",
    ),
    setting(
        "compaction_idle_ms",
        true,
        "quiet time before fresh rows fold into the graph (1000)",
    ),
    setting(
        "ivf_threshold",
        true,
        "rows from which index=auto builds IVF (1000000)",
    ),
    setting(
        "nlist",
        true,
        "IVF lists per segment (0: about 4 times the square root of rows)",
    ),
    setting(
        "nprobe",
        true,
        "IVF lists a search scans when it gives none (32)",
    ),
    setting(
        "max_unindexed_rows",
        true,
        "rows not yet indexed past which writes wait (20000, at least twice index_threshold; 0: no bound)",
    ),
    setting(
        "write_stall_ms",
        true,
        "how long a write waits for indexing before it is refused (10000)",
    ),
];

/// `keys` as a list: "a, b or c".
fn listed<'a>(keys: impl Iterator<Item = &'a str>) -> String {
    let keys: Vec<&str> = keys.collect();
    match keys.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// The keys `alter` (and `IndexSettings::set`) takes.
pub fn setting_keys() -> String {
    listed(SETTINGS.iter().filter(|s| s.alterable).map(|s| s.key))
}

/// The keys a new collection's options take.
pub(crate) fn option_keys() -> String {
    listed(SETTINGS.iter().map(|s| s.key))
}

/// One line per setting, `key: about`, the alterable ones only when `alterable_only`.
pub fn settings_help(alterable_only: bool) -> String {
    SETTINGS
        .iter()
        .filter(|s| s.alterable || !alterable_only)
        .map(|s| format!("  {}: {}", s.key, s.about))
        .collect::<Vec<_>>()
        .join("\n")
}
