//! Garbage collection: files of a collection that its manifest does not name are leftovers of
//! writes that crashed before their commit (or of versions replaced since), and are removed
//! when the collection opens, with the manifests of older versions.

use std::collections::HashSet;

use super::manifest::{self, Manifest};
use super::{FileKind, Store};
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
