//! Where a collection's files live, behind one synchronous trait (`Store`): write a file
//! durably, map it, rename it atomically, list, delete, sync. `LocalStore` is today's local
//! directory; an object-store backend implements the same trait, and nothing above this module
//! touches a file system. The formats written through it: segments (`segment_file`), deletion
//! bitmaps (`deletes`), the manifest (`manifest`), and garbage collection (`gc`). File names
//! come from `FileKind`, in one place.

pub(crate) mod checksum;
pub(crate) mod deletes;
#[cfg(feature = "faults")]
pub(crate) mod faults;
pub(crate) mod gc;
pub(crate) mod local;
pub(crate) mod manifest;
pub mod npy;
pub(crate) mod root;
pub(crate) mod segment_file;
pub(crate) mod settings;

use std::fmt;
use std::io::Write;
use std::path::PathBuf;

use arrow_buffer::Buffer;

use crate::options::IndexKind;
use crate::{Error, Result};

/// What writing a file produced: its size and CRC32.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    /// The file's size.
    pub bytes: u64,
    /// The CRC32 of its bytes.
    pub crc32: u32,
}

/// Size and modification time of a file, as recorded when it was committed or mapped; a
/// change to either means someone else wrote the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The file's size.
    pub bytes: u64,
    /// Its modification time, in nanoseconds since the Unix epoch (0: unknown).
    pub mtime_ns: u64,
}

impl Stamp {
    /// Whether the file still has the size and modification time recorded when it was
    /// committed (`mtime_ns` 0: not recorded, so never).
    pub(crate) fn unchanged_since(&self, bytes: u64, mtime_ns: u64) -> bool {
        mtime_ns != 0 && *self == Stamp { bytes, mtime_ns }
    }
}

/// Maps committed file `name`: checked against `crc32` unless its size and modification time
/// still match those recorded when it was committed (`mtime_ns`; 0 when not recorded), so
/// opening stays instant however large the file. A file changed since is re-hashed.
pub(crate) fn map_committed(
    store: &dyn Store,
    name: &str,
    bytes: u64,
    crc32: u32,
    mtime_ns: u64,
) -> Result<Buffer> {
    let unchanged = store
        .stamp(name)
        .is_ok_and(|s| s.unchanged_since(bytes, mtime_ns));
    store.map(name, bytes, (!unchanged).then_some(crc32))
}

/// The files of one collection. Names are plain file names (no separators). Implemented by
/// the local directory (`LocalStore`) and by storage backends outside the engine (object
/// storage, in `omendb-object`).
pub trait Store: Send + Sync + fmt::Debug {
    /// Where `name` lives, for messages.
    fn path(&self, name: &str) -> PathBuf;
    /// Creates (or replaces) `name` with what `fill` writes and makes it durable before
    /// returning its size and CRC32. The name becomes durable with the next `sync`.
    fn write(
        &self,
        name: &str,
        fill: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    ) -> Result<Written>;
    /// Maps `name` whole, read-only, after checking its size (and CRC32, if given). A file
    /// that cannot be found is `Corrupt`: only files a manifest names are mapped.
    fn map(&self, name: &str, bytes: u64, crc32: Option<u32>) -> Result<Buffer>;
    /// Reads `name` whole.
    fn read(&self, name: &str) -> Result<Vec<u8>>;
    /// Renames `from` to `to`, replacing `to` atomically.
    fn rename(&self, from: &str, to: &str) -> Result<()>;
    /// Moves `name` from `from` (a store of the same backend) into this one.
    fn adopt(&self, from: &dyn Store, name: &str) -> Result<()>;
    /// The names of every file.
    fn list(&self) -> Result<Vec<String>>;
    /// Every file with its size and modification time (a file removed meanwhile is left out).
    fn list_stamped(&self) -> Result<Vec<(String, Stamp)>> {
        Ok(self
            .list()?
            .into_iter()
            .filter_map(|n| self.stamp(&n).ok().map(|s| (n, s)))
            .collect())
    }
    /// The names of the manifests: the versioned ones newer than version `after`, or with
    /// `None` every one (the older layout's `MANIFEST` included). Object storage lists only
    /// those names, not every file.
    fn manifests(&self, after: Option<u64>) -> Result<Vec<String>> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|n| match after {
                None => manifest::is_manifest(n),
                Some(a) => manifest::manifest_version(n).is_some_and(|v| v > a),
            })
            .collect())
    }
    /// Removes `name`.
    fn delete(&self, name: &str) -> Result<()>;
    /// Makes the names created, renamed and removed so far durable.
    fn sync(&self) -> Result<()>;
    /// The size and modification time of `name`.
    fn stamp(&self, name: &str) -> Result<Stamp>;
    /// Creates `name` holding `bytes`, durably, only if no file of that name exists: `None`
    /// (and nothing changed) when one does. Atomic: another writer's create of the same name
    /// either wins or loses whole, and a crash leaves the file absent or complete. Commits
    /// put their manifest this way (a compare-and-swap that object stores offer too, as a
    /// create-only put).
    fn create(&self, name: &str, bytes: &[u8]) -> Result<Option<Written>>;
    /// Puts a durable copy of committed file `name` into store `to` under the same name: a
    /// hard link where both are local and the file system allows one (committed files are
    /// never modified), else a copy. Returns whether it linked.
    fn export(&self, name: &str, to: &dyn Store) -> Result<bool>;

    /// Whether other processes may read and write these files at the same time (servers
    /// over one bucket). Then files no manifest names may be another writer's work in
    /// progress, and replaced files may still be read by a server on an older version: they
    /// are left for a garbage collection that waits out a grace period, not removed at open
    /// or right after the commit that replaced them.
    fn shared(&self) -> bool {
        false
    }

    /// Whether files are local files at the paths [`Store::path`] names (the local
    /// directory): then [`Store::export`] between two such stores links or copies files.
    fn local(&self) -> bool {
        false
    }

    /// Writes `bytes` as `name`, durably.
    fn put(&self, name: &str, bytes: &[u8]) -> Result<Written> {
        self.write(name, &mut |w| {
            w.write_all(bytes)
                .map_err(|e| Error::io(self.path(name), e))
        })
    }
}

/// The kinds of file a collection holds, and their names. `id` is the file id the manifest
/// hands out (`next_file_id`); `seg` the id of the segment a file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// An Arrow IPC file holding one segment's rows.
    Segment,
    /// A segment's per-row norms (raw f32).
    Norms,
    /// A segment's primary-key index (`pk`).
    Pk,
    /// One version of a segment's deletion bitmap.
    Deletes,
    /// One version of a segment's index.
    Index(IndexKind),
}

impl FileKind {
    /// A new committed name for a file of this kind: written once, never reused, even by
    /// another writer that takes the same ids from the same version (so a writer that loses
    /// a commit race removes only its own files).
    pub(crate) fn name(self, seg: u64, id: u64) -> String {
        let u = unique();
        match self {
            FileKind::Segment => format!("seg-{seg:010}-{u}.arrow"),
            FileKind::Norms => format!("nrm-{seg:010}-{u}.f32"),
            FileKind::Pk => format!("pk-{seg:010}-{u}.bin"),
            FileKind::Deletes => format!("del-{seg:010}-{id:010}-{u}.bin"),
            FileKind::Index(kind) => format!("idx-{seg:010}-{id:010}-{u}.{}", kind.as_str()),
        }
    }

    /// Whether `name` is one of the files a collection directory holds (other than its
    /// manifest): committed files of every kind and the temporary files of unfinished writes.
    pub(crate) fn is_collection_file(name: &str) -> bool {
        (name.starts_with("seg-") && name.ends_with(".arrow"))
            || (name.starts_with("nrm-") && name.ends_with(".f32"))
            || (name.starts_with("pk-") && name.ends_with(".bin"))
            || (name.starts_with("del-") && name.ends_with(".bin"))
            || (name.starts_with("idx-") && (name.ends_with(".hnsw") || name.ends_with(".ivf")))
            || name.starts_with(STAGED_PREFIX)
            || name == manifest::MANIFEST_TMP
    }
}

/// Files written by a write that has not committed yet start with this.
pub const STAGED_PREFIX: &str = "stage-";

/// Whether `name` is one of the files a collection holds besides its manifests (committed
/// files of every kind and the temporary files of unfinished writes).
pub fn is_collection_file(name: &str) -> bool {
    FileKind::is_collection_file(name)
}

/// A name part no other write of this process or another uses.
pub fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "{}-{t}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
