//! Garbage collection: files of a collection that its manifest does not name are leftovers of
//! writes that crashed before their commit (or of versions replaced since), and are removed
//! when the collection opens, with the manifests of older versions. On shared storage (where
//! other servers may be writing, or reading an older version) nothing is removed at open;
//! `remove_unreachable` removes what no version of the last `retain` names, on request.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::manifest::{self, Manifest};
use super::{FileKind, Stamp, Store};
use crate::Result;

/// Removes every collection file `manifest` (the newest version) does not name, and the
/// manifests of older versions.
pub(crate) fn remove_garbage(store: &dyn Store, manifest: &Manifest) -> Result<()> {
    let live: HashSet<&str> = manifest.live_files().collect();
    let names = store.list()?;
    let newest = manifest::newest(&names).map(str::to_string);
    for name in &names {
        let older_manifest = manifest::is_manifest(name) && Some(name) != newest.as_ref();
        if older_manifest || (FileKind::is_collection_file(name) && !live.contains(name.as_str())) {
            store.delete(name)?;
        }
    }
    Ok(())
}

/// Removes from shared storage what no reader can still need: the manifests of versions that
/// were replaced more than `retain` ago, and the collection files that no kept version names
/// and that are older than `retain` (a younger one may be another server's write in
/// progress). A version stays readable while the one after it is younger than `retain`: a
/// reader may have opened it just before that commit. Returns the files and bytes removed.
pub(crate) fn remove_unreachable(store: &dyn Store, retain: Duration) -> Result<(usize, u64)> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    // An unknown modification time (0) reads as very old.
    let age = |s: &Stamp| Duration::from_nanos(now.saturating_sub(s.mtime_ns));
    let files = store.list_stamped()?;
    let mut versions: Vec<(u64, &str, Duration)> = files
        .iter()
        .filter_map(|(n, s)| Some((manifest::manifest_version(n)?, n.as_str(), age(s))))
        .collect();
    versions.sort_unstable();
    if versions.is_empty() {
        return Ok((0, 0)); // not a collection of versioned manifests: nothing is known
    }
    let mut kept = HashSet::new();
    let mut live: HashSet<String> = HashSet::new();
    for (i, &(_, name, _)) in versions.iter().enumerate() {
        let replaced_for = versions.get(i + 1).map(|&(_, _, age)| age);
        if replaced_for.is_none_or(|a| a < retain) {
            kept.insert(name);
            live.extend(
                Manifest::read(store, name)?
                    .live_files()
                    .map(str::to_string),
            );
        }
    }
    let mut garbage: Vec<(&str, u64)> = Vec::new();
    // Manifests first: a version whose files are going is never left to be opened.
    for (name, stamp) in &files {
        if manifest::is_manifest(name) && !kept.contains(name.as_str()) {
            garbage.push((name, stamp.bytes));
        }
    }
    for (name, stamp) in &files {
        if FileKind::is_collection_file(name) && !live.contains(name) && age(stamp) >= retain {
            garbage.push((name, stamp.bytes));
        }
    }
    let mut removed = (0, 0);
    for (name, bytes) in garbage {
        store.delete(name)?;
        removed.0 += 1;
        removed.1 += bytes;
    }
    Ok(removed)
}
