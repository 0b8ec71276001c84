//! The local cache of the files collections map: where it is, how large it may grow, and which
//! files leave it first. Cached files are committed files (written once, never changed), so a
//! copy is good until evicted; eviction removes the least recently used files while the cache
//! is over its size. A file mapped when it is evicted stays readable through its mapping (the
//! operating system frees it when the mapping goes); the next open downloads it again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use omendb::backend::STAGED_PREFIX;

/// Where a database on object storage caches its files, and how large the cache may grow.
#[derive(Debug, Clone, Default)]
pub struct Cache {
    /// The directory (default: one per URL under `omendb-cache` in the system temp dir).
    pub dir: Option<PathBuf>,
    /// The most bytes of files kept (default: no limit). The files one collection maps at
    /// once are downloaded whole, so a cache smaller than them is refilled at every open.
    pub max_bytes: Option<u64>,
}

impl Cache {
    /// The cache in `dir` (default when `None`), without a size limit.
    pub fn at(dir: Option<PathBuf>) -> Cache {
        Cache {
            dir,
            max_bytes: None,
        }
    }
}

/// Parses a size such as `500MB`, `20GiB`, `1.5G` or `1048576` (bytes): decimal units (KB, MB,
/// GB, TB) and binary ones (KiB, MiB, GiB, TiB; a bare K/M/G/T is binary too).
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size (a number, then an optional unit)"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "'{text}': unknown unit '{other}' (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            ))
        }
    };
    let bytes = number * scale as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("'{text}' is too large"));
    }
    Ok(bytes as u64)
}

/// The files in a cache directory with their sizes and order of use, shared by every
/// collection of a database; evicts past `limit`.
#[derive(Debug)]
pub(crate) struct Lru {
    limit: Option<u64>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    files: HashMap<PathBuf, Entry>,
    total: u64,
    clock: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    bytes: u64,
    used: u64,
}

impl Lru {
    /// The cache in `dir` (a directory per collection, files in each), with what an earlier
    /// process left there counted, oldest modification first.
    pub(crate) fn new(dir: &Path, limit: Option<u64>) -> Lru {
        let lru = Lru {
            limit,
            state: Mutex::default(),
        };
        if limit.is_none() {
            return lru;
        }
        let mut found = Vec::new();
        for collection in read_dir(dir) {
            for file in read_dir(&collection) {
                let staged = file
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(STAGED_PREFIX));
                match std::fs::metadata(&file) {
                    Ok(m) if m.is_file() && !staged => {
                        let at = m
                            .modified()
                            .ok()
                            .and_then(|t| t.duration_since(UNIX_EPOCH).ok());
                        found.push((at.unwrap_or_default(), file, m.len()));
                    }
                    _ => {}
                }
            }
        }
        found.sort();
        for (_, file, bytes) in found {
            lru.used(&file, bytes);
        }
        lru
    }

    /// Records a use of cached file `path` of `bytes` (just written, downloaded or mapped);
    /// then, over the limit, removes the least recently used other files.
    pub(crate) fn used(&self, path: &Path, bytes: u64) {
        let Some(limit) = self.limit else { return };
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.clock += 1;
        let used = s.clock;
        if let Some(old) = s.files.insert(path.to_path_buf(), Entry { bytes, used }) {
            s.total -= old.bytes;
        }
        s.total += bytes;
        while s.total > limit {
            let Some((oldest, entry)) = s
                .files
                .iter()
                .filter(|(p, _)| p.as_path() != path)
                .min_by_key(|(_, e)| e.used)
                .map(|(p, e)| (p.clone(), *e))
            else {
                break;
            };
            // A file that cannot be removed is forgotten: it is no longer counted against
            // the limit by this process.
            let _ = std::fs::remove_file(&oldest);
            s.files.remove(&oldest);
            s.total -= entry.bytes;
        }
    }

    /// Forgets `path` (removed from the cache, or renamed).
    pub(crate) fn removed(&self, path: &Path) {
        if self.limit.is_none() {
            return;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = s.files.remove(path) {
            s.total -= old.bytes;
        }
    }

    /// The bytes of files counted now.
    #[cfg(test)]
    fn total(&self) -> u64 {
        self.state.lock().unwrap().total
    }
}

fn read_dir(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_their_units_and_bad_ones_are_named() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size(" 2 kb "), Ok(2_000));
        assert!(parse_size("12 parsecs").unwrap_err().contains("parsecs"));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
    }

    #[test]
    fn the_least_recently_used_files_leave_first_and_earlier_ones_are_counted() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("docs");
        std::fs::create_dir_all(&dir).unwrap();
        let file = |n: &str| {
            let p = dir.join(n);
            std::fs::write(&p, vec![0u8; 100]).unwrap();
            p
        };
        let (a, b) = (file("a"), file("b"));
        let lru = Lru::new(tmp.path(), Some(250));
        assert_eq!(
            lru.total(),
            200,
            "what an earlier process cached is counted"
        );
        lru.used(&a, 100); // a is now more recent than b
        let c = file("c");
        lru.used(&c, 100);
        assert!(!b.exists(), "the least recently used file went");
        assert!(a.exists() && c.exists());
        assert_eq!(lru.total(), 200);
        // A file larger than the limit alone stays (it is in use); every other one goes.
        let d = file("d");
        lru.used(&d, 400);
        assert!(d.exists() && !a.exists() && !c.exists());
        lru.removed(&d);
        assert_eq!(lru.total(), 0);
    }
}
