//! Garbage collection: files of a collection that its manifest does not name are leftovers of
//! writes that crashed before their commit (or of versions replaced since), and are removed
//! when the collection opens.

use std::collections::HashSet;

use super::manifest::Manifest;
use super::{FileKind, Store};
use crate::Result;

/// Removes every collection file `manifest` does not name.
pub(crate) fn remove_garbage(store: &dyn Store, manifest: &Manifest) -> Result<()> {
    let live: HashSet<&str> = manifest.live_files().collect();
    for name in store.list()? {
        if FileKind::is_collection_file(&name) && !live.contains(name.as_str()) {
            store.delete(&name)?;
        }
    }
    Ok(())
}
