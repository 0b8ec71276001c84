//! The manifest: one version of a collection's state (its definition and its live files), as
//! a checksummed JSON document. Each version is a file of its own (`manifest-{version}.json`),
//! created once and never rewritten: a commit creates the next version's file with a
//! create-only put (`Store::create`), so of two writers committing on the same version one
//! wins and the other learns it lost (`CommitError::Conflict`), on a local disk and on an
//! object store alike, and a crash leaves the previous or the next version, never a mix. The
//! newest version is the highest number. Collections written before versioned manifests hold
//! one `MANIFEST` file, read while no versioned one exists.

use arrow_schema::{Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use super::Store;
use crate::distance::Metric;
use crate::options::{IndexKind, IndexSettings};
use crate::{Error, Result};

/// The one manifest of a collection written before versioned manifests.
pub(crate) const MANIFEST: &str = "MANIFEST";
/// The name such a manifest was written under before it was renamed into place.
pub(crate) const MANIFEST_TMP: &str = "MANIFEST.tmp";
const PREFIX: &str = "manifest-";
const SUFFIX: &str = ".json";

/// The file name of version `version`'s manifest (names sort by version).
pub fn manifest_name(version: u64) -> String {
    format!("{PREFIX}{version:020}{SUFFIX}")
}

/// The version a versioned manifest's file name holds.
pub fn manifest_version(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Whether `name` is a manifest (versioned, or the one of the older layout).
pub fn is_manifest(name: &str) -> bool {
    name == MANIFEST || manifest_version(name).is_some()
}

/// The newest manifest among `names`: the highest versioned one, else the older layout's.
pub(crate) fn newest(names: &[String]) -> Option<&str> {
    names
        .iter()
        .filter_map(|n| Some((manifest_version(n)?, n.as_str())))
        .max()
        .map(|(_, n)| n)
        .or_else(|| names.iter().map(String::as_str).find(|n| *n == MANIFEST))
}

const HEADER: &str = "omendb-manifest-v1 crc32=";
/// The format version this engine writes and reads.
const FORMAT: u32 = 1;

/// Why a manifest commit failed.
#[derive(Debug)]
pub(crate) enum CommitError {
    /// Before the new manifest was put in place: the previous version stands.
    Failed(Error),
    /// After: the new manifest is in place, but syncing the directory failed.
    Unsynced(Error),
    /// Another writer committed this version first: nothing was changed.
    Conflict(Error),
}

impl CommitError {
    /// The error, whichever step failed (for a collection being created, whose directory is
    /// removed either way).
    pub(crate) fn into_error(self) -> Error {
        match self {
            CommitError::Failed(e) | CommitError::Unsynced(e) | CommitError::Conflict(e) => e,
        }
    }
}

impl From<Error> for CommitError {
    fn from(e: Error) -> Self {
        CommitError::Failed(e)
    }
}

/// A plain file: its name, size and CRC32.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct FileMeta {
    pub file: String,
    pub bytes: u64,
    pub crc32: u32,
    /// The file's modification time when it was committed (0: not recorded). A file whose
    /// size and time still match is mapped without re-hashing it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mtime_ns: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A committed segment as the manifest records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct SegmentMeta {
    pub id: u64,
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    pub crc32: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletes: Option<DeletesMeta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<IndexFileMeta>,
    /// What the metric needs per row, derived when the segment was written (cosine: 1/|v|,
    /// l2: |v|²), so opening computes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub norms: Option<FileMeta>,
    /// The primary-key index (`pk::PkIndex`), so opening builds no id lookup table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pk: Option<FileMeta>,
    /// The segment file's modification time when it was committed (0: not recorded). A file
    /// whose size and time still match is not re-hashed when the collection opens.
    #[serde(default)]
    pub mtime_ns: u64,
}

impl SegmentMeta {
    /// Every file of the segment: its rows, norms, primary-key index, index and deletions.
    pub(crate) fn files(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.file.as_str())
            .chain(self.norms.iter().map(|n| n.file.as_str()))
            .chain(self.pk.iter().map(|n| n.file.as_str()))
            .chain(self.index.iter().map(|i| i.file.as_str()))
            .chain(self.deletes.iter().map(|d| d.file.as_str()))
    }

    /// Bytes of the segment's checksummed files: rows, index, norms, primary-key index.
    pub(crate) fn checksummed_bytes(&self) -> u64 {
        self.bytes
            + self.index.as_ref().map_or(0, |i| i.bytes)
            + self.norms.as_ref().map_or(0, |n| n.bytes)
            + self.pk.as_ref().map_or(0, |n| n.bytes)
    }

    /// The segment file itself.
    pub(crate) fn segment_file(&self) -> FileMeta {
        FileMeta {
            file: self.file.clone(),
            bytes: self.bytes,
            crc32: self.crc32,
            mtime_ns: self.mtime_ns,
        }
    }
}

/// A segment's index file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct IndexFileMeta {
    pub kind: IndexKind,
    pub file: String,
    pub bytes: u64,
    pub crc32: u32,
    /// As `FileMeta::mtime_ns`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mtime_ns: u64,
}

/// A segment's current deletion bitmap file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct DeletesMeta {
    pub file: String,
    pub count: u64,
}

/// One version of a collection's state: its definition and its live files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Manifest {
    pub format: u32,
    pub version: u64,
    pub name: String,
    pub id_column: String,
    pub vector_column: String,
    pub dim: usize,
    pub metric: Metric,
    /// The Arrow schema as an IPC stream (schema message only), hex-encoded.
    pub schema_ipc: String,
    pub next_file_id: u64,
    pub segments: Vec<SegmentMeta>,
    /// Stored in the format's own form (`storage::settings`).
    #[serde(default, with = "super::settings")]
    pub index: IndexSettings,
}

impl Manifest {
    /// The first version of a collection.
    pub(crate) fn first(
        name: &str,
        schema: &Schema,
        id_column: &str,
        vector_column: &str,
        dim: usize,
        metric: Metric,
        index: IndexSettings,
    ) -> Result<Manifest> {
        Ok(Manifest {
            format: FORMAT,
            version: 1,
            name: name.to_string(),
            id_column: id_column.to_string(),
            vector_column: vector_column.to_string(),
            dim,
            metric,
            schema_ipc: encode_schema(schema)?,
            next_file_id: 1,
            segments: Vec::new(),
            index,
        })
    }

    /// Reads and verifies the newest manifest of `store`.
    pub(crate) fn load(store: &dyn Store) -> Result<Manifest> {
        let names = store.manifests(None)?;
        Manifest::read(store, newest(&names).unwrap_or(MANIFEST))
    }

    /// Reads and verifies the newest manifest of `store` if it is newer than `after`.
    pub(crate) fn load_newer(store: &dyn Store, after: u64) -> Result<Option<Manifest>> {
        let names = store.manifests(Some(after))?;
        newest(&names)
            .map(|name| Manifest::read(store, name))
            .transpose()
    }

    /// Reads and verifies the manifest `name`.
    pub(crate) fn read(store: &dyn Store, name: &str) -> Result<Manifest> {
        let path = store.path(name);
        let raw = store.read(name)?;
        let text = String::from_utf8(raw).map_err(|e| {
            Error::corrupt(
                &path,
                format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
            )
        })?;
        let (header, body) = text
            .split_once('\n')
            .ok_or_else(|| Error::corrupt(&path, "no header line"))?;
        let crc = header
            .strip_prefix(HEADER)
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| Error::corrupt(&path, "bad header line"))?;
        if crc32fast::hash(body.as_bytes()) != crc {
            return Err(Error::corrupt(&path, "checksum mismatch"));
        }
        let m: Manifest = serde_json::from_str(body)
            .map_err(|e| Error::corrupt(&path, format!("unparseable: {e}")))?;
        if m.format != FORMAT {
            return Err(Error::corrupt(
                &path,
                format!("unknown format version {}", m.format),
            ));
        }
        if manifest_version(name).is_some_and(|v| v != m.version) {
            return Err(Error::corrupt(
                &path,
                format!("holds version {}, not the one its name says", m.version),
            ));
        }
        Ok(m)
    }

    /// Commits this manifest: create its version's file (create-only, durably), then sync the
    /// directory. `Conflict` when another writer created that version first (nothing
    /// changed); an error from the last step is `Unsynced`: the new manifest is in place but
    /// may not survive a crash, so the caller must not treat it as absent.
    pub(crate) fn commit(&self, store: &dyn Store) -> std::result::Result<(), CommitError> {
        let body = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Internal(format!("manifest does not serialize: {e}")))?;
        let text = format!("{HEADER}{:08x}\n{body}", crc32fast::hash(body.as_bytes()));
        let name = manifest_name(self.version);
        if store.create(&name, text.as_bytes())?.is_none() {
            return Err(CommitError::Conflict(Error::Conflict(format!(
                "collection '{}': version {} was committed by another writer meanwhile ({}); \
                 nothing was written by this one",
                self.name,
                self.version,
                store.path(&name).display()
            ))));
        }
        store.sync().map_err(CommitError::Unsynced)
    }

    /// The file this manifest was committed as: its version's, or the older layout's.
    pub(crate) fn file(&self, store: &dyn Store) -> String {
        let name = manifest_name(self.version);
        if store.stamp(&name).is_ok() {
            name
        } else {
            MANIFEST.to_string()
        }
    }

    /// The collection's Arrow schema.
    pub(crate) fn schema(&self, store: &dyn Store) -> Result<SchemaRef> {
        let path = store.path(&manifest_name(self.version));
        let bytes = hex_decode(&self.schema_ipc)
            .ok_or_else(|| Error::corrupt(&path, "schema is not valid hex"))?;
        let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .map_err(|e| Error::corrupt(&path, format!("bad schema: {e}")))?;
        Ok(reader.schema())
    }

    /// Files this manifest names (besides itself).
    pub(crate) fn live_files(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().flat_map(SegmentMeta::files)
    }

    /// Hands out the next file id.
    pub(crate) fn take_file_id(&mut self) -> u64 {
        let id = self.next_file_id;
        self.next_file_id += 1;
        id
    }

    /// The position of segment `id`.
    pub(crate) fn position(&self, id: u64) -> Option<usize> {
        self.segments.iter().position(|s| s.id == id)
    }
}

fn encode_schema(schema: &Schema) -> Result<String> {
    let mut buf = Vec::new();
    {
        let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut buf, schema)?;
        w.finish()?;
    }
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
