//! On-disk files: segments (Arrow IPC files, memory-mapped), deletion bitmaps and the manifest.
//! Every file carries a CRC32 that the manifest (or the file itself) records, so damage is
//! reported as corruption naming the file.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::reader::{read_footer_length, FileDecoder};
use arrow_ipc::writer::{FileWriter, IpcWriteOptions};
use arrow_ipc::MetadataVersion;
use arrow_schema::{Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::distance::Metric;
use crate::{Error, Result};

/// Fsyncs a directory so that entries created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// A writer that counts bytes and computes their CRC32 as they pass.
struct Checksummed<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What writing a file produced: its size and CRC32.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub bytes: u64,
    pub crc32: u32,
}

/// Writes `batch` as a 64-byte-aligned Arrow IPC file at `path` and fsyncs it.
pub fn write_segment(path: &Path, batch: &RecordBatch) -> Result<Written> {
    let file = File::create_new(path).map_err(|e| Error::io(path, e))?;
    let mut out = Checksummed {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: crc32fast::Hasher::new(),
        bytes: 0,
    };
    let opts = IpcWriteOptions::try_new(64, false, MetadataVersion::V5)?;
    {
        let mut w = FileWriter::try_new_with_options(&mut out, &batch.schema(), opts)?;
        w.write(batch)?;
        w.finish()?;
    }
    let Checksummed {
        inner,
        hasher,
        bytes,
    } = out;
    let file = inner
        .into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(path, e))?;
    Ok(Written {
        bytes,
        crc32: hasher.finalize(),
    })
}

/// Maps the segment file at `path`, checks its size (and, if asked, its checksum) against the
/// manifest, and
/// decodes its single record batch zero-copy: the arrays point into the mapping.
pub fn open_segment(
    path: &Path,
    schema: &SchemaRef,
    meta: &SegmentMeta,
    verify_checksum: bool,
) -> Result<RecordBatch> {
    let buffer = map_file(path, meta.bytes, verify_checksum.then_some(meta.crc32))?;
    decode_single_batch(&buffer, schema).map_err(|e| Error::corrupt(path, e))
}

fn decode_single_batch(buffer: &Buffer, schema: &SchemaRef) -> Result<RecordBatch, String> {
    if buffer.len() < 10 {
        return Err("too short for an Arrow IPC file".into());
    }
    let trailer = buffer.len() - 10;
    let footer_len = read_footer_length(buffer[trailer..].try_into().expect("10 bytes"))
        .map_err(|e| e.to_string())?;
    if footer_len > trailer {
        return Err("footer length exceeds the file".into());
    }
    let footer = arrow_ipc::root_as_footer(&buffer[trailer - footer_len..trailer])
        .map_err(|e| format!("bad footer: {e}"))?;
    let file_schema = footer
        .schema()
        .map(arrow_ipc::convert::fb_to_schema)
        .ok_or("footer has no schema")?;
    if file_schema.fields() != schema.fields() {
        return Err(format!(
            "schema {file_schema:?} differs from the collection's {schema:?}"
        ));
    }
    let decoder = FileDecoder::new(schema.clone(), footer.version()).with_require_alignment(true);
    let blocks = footer.recordBatches().ok_or("no record batches")?;
    if blocks.len() != 1 || footer.dictionaries().is_some_and(|d| !d.is_empty()) {
        return Err("expected exactly one record batch and no dictionaries".into());
    }
    let block = blocks.get(0);
    let start = usize::try_from(block.offset()).map_err(|_| "negative block offset")?;
    let len = block.bodyLength() as usize + block.metaDataLength() as usize;
    if start.checked_add(len).is_none_or(|end| end > buffer.len()) {
        return Err("record batch block lies outside the file".into());
    }
    decoder
        .read_record_batch(block, &buffer.slice_with_length(start, len))
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "empty record batch block".to_string())
}

/// A set of row positions within one segment (deleted rows, or rows a filter selects).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bitmap {
    words: Vec<u64>,
    count: usize,
}

impl Bitmap {
    pub fn new(rows: usize) -> Self {
        Bitmap {
            words: vec![0; rows.div_ceil(64)],
            count: 0,
        }
    }
    #[inline]
    pub fn contains(&self, row: usize) -> bool {
        self.words
            .get(row / 64)
            .is_some_and(|w| w & (1 << (row % 64)) != 0)
    }
    /// Sets `row`; returns whether it was newly set.
    pub fn insert(&mut self, row: usize) -> bool {
        let (w, b) = (row / 64, 1u64 << (row % 64));
        let fresh = self.words[w] & b == 0;
        self.words[w] |= b;
        self.count += fresh as usize;
        fresh
    }
    pub fn count(&self) -> usize {
        self.count
    }
    /// The set rows, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &bits)| {
            let mut bits = bits;
            std::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let b = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    w * 64 + b
                })
            })
        })
    }

    const MAGIC: &'static [u8; 8] = b"OMENDEL1";

    /// Writes the bitmap to `path` (magic, words, CRC32 of all before it) and fsyncs it.
    pub fn write(&self, path: &Path) -> Result<Written> {
        let mut buf = Vec::with_capacity(16 + self.words.len() * 8);
        buf.extend_from_slice(Self::MAGIC);
        for w in &self.words {
            buf.extend_from_slice(&w.to_le_bytes());
        }
        let crc = crc32fast::hash(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        write_durable(path, &buf)?;
        Ok(Written {
            bytes: buf.len() as u64,
            crc32: crc,
        })
    }

    pub fn read(path: &Path, rows: usize) -> Result<Bitmap> {
        let buf = fs::read(path).map_err(|e| Error::io(path, e))?;
        let words = rows.div_ceil(64);
        if buf.len() != 12 + words * 8 || &buf[..8] != Self::MAGIC {
            return Err(Error::corrupt(path, "bad deletion bitmap header or size"));
        }
        let body = &buf[..buf.len() - 4];
        let crc = u32::from_le_bytes(buf[buf.len() - 4..].try_into().expect("4 bytes"));
        if crc32fast::hash(body) != crc {
            return Err(Error::corrupt(path, "deletion bitmap checksum mismatch"));
        }
        let words: Vec<u64> = body[8..]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let count = words.iter().map(|w| w.count_ones() as usize).sum();
        Ok(Bitmap { words, count })
    }
}

/// Maps a whole file read-only after checking its size (and CRC32, if given), for
/// zero-copy reading.
pub fn map_file(path: &Path, bytes: u64, crc32: Option<u32>) -> Result<Buffer> {
    let file = File::open(path).map_err(|e| missing_is_corrupt(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len != bytes {
        return Err(Error::corrupt(
            path,
            format!("size is {len} bytes, the manifest says {bytes} (truncated or overwritten)"),
        ));
    }
    // SAFETY: index and segment files are immutable once committed (written under a fresh
    // name, fsynced, never modified; only unlinked when no manifest names them), and the
    // mapping is read-only.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    if let Some(expected) = crc32 {
        let crc = crc32fast::hash(&map);
        if crc != expected {
            return Err(Error::corrupt(
                path,
                format!("checksum mismatch (crc32 {crc:08x}, manifest says {expected:08x})"),
            ));
        }
    }
    Ok(Buffer::from(bytes::Bytes::from_owner(map)))
}

/// A file the manifest names but that cannot be found is damage, not an I/O hiccup.
pub fn missing_is_corrupt(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::corrupt(path, "missing (the manifest names it)")
    } else {
        Error::io(path, e)
    }
}

/// Size and modification time of a file, as recorded when it was committed or mapped; a
/// change to either means someone else wrote the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub bytes: u64,
    pub mtime_ns: u64,
}

impl Stamp {
    pub fn of(path: &Path) -> Result<Stamp> {
        let m = fs::metadata(path).map_err(|e| missing_is_corrupt(path, e))?;
        let mtime_ns = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64);
        Ok(Stamp {
            bytes: m.len(),
            mtime_ns,
        })
    }
}

/// Writes `values` as a raw little-endian f32 file (fsynced).
pub fn write_f32s(path: &Path, values: &[f32]) -> Result<Written> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_durable(path, &bytes)?;
    Ok(Written {
        bytes: bytes.len() as u64,
        crc32: crc32fast::hash(&bytes),
    })
}

/// Maps a raw f32 file written by [`write_f32s`] (size and checksum checked against `meta`).
pub fn map_f32s(
    path: &Path,
    meta: &FileMeta,
    rows: usize,
) -> Result<arrow_buffer::ScalarBuffer<f32>> {
    if meta.bytes != rows as u64 * 4 {
        return Err(Error::corrupt(
            path,
            format!("holds {} bytes, {rows} rows need {}", meta.bytes, rows * 4),
        ));
    }
    let buffer = map_file(path, meta.bytes, Some(meta.crc32))?;
    if cfg!(target_endian = "big") {
        return Err(Error::invalid("big-endian hosts are not supported"));
    }
    Ok(arrow_buffer::ScalarBuffer::new(buffer, 0, rows))
}

/// Creates `path` with `bytes` and fsyncs it (the caller fsyncs the directory).
pub fn write_durable(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

/// A committed segment as the manifest records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SegmentMeta {
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
    /// The segment file's modification time when it was committed (0: not recorded). A file
    /// whose size and time still match is not re-hashed when the collection opens.
    #[serde(default)]
    pub mtime_ns: u64,
}

/// A plain derived file: its name, size and CRC32.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileMeta {
    pub file: String,
    pub bytes: u64,
    pub crc32: u32,
}

/// A segment's index file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexFileMeta {
    pub kind: String,
    pub file: String,
    pub bytes: u64,
    pub crc32: u32,
}

/// A collection's index parameters.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct IndexSettings {
    /// HNSW neighbours per node (layer 0 keeps 2m).
    pub m: usize,
    pub ef_construction: usize,
    /// The search beam width used when a query does not give one.
    pub ef_search: usize,
    /// A segment with at least this many rows gets an HNSW index automatically, built in the
    /// background after the append commits; smaller segments are searched exactly. 0 turns
    /// automatic indexing off (`build_index` still works).
    #[serde(default = "default_index_threshold")]
    pub threshold: usize,
}

impl IndexSettings {
    /// Refuses settings no graph can be built or searched with.
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

/// The default automatic-indexing threshold, in rows.
pub const DEFAULT_INDEX_THRESHOLD: usize = 10_000;

fn default_index_threshold() -> usize {
    DEFAULT_INDEX_THRESHOLD
}

impl Default for IndexSettings {
    fn default() -> Self {
        IndexSettings {
            m: 16,
            ef_construction: 200,
            ef_search: 64,
            threshold: DEFAULT_INDEX_THRESHOLD,
        }
    }
}

/// A segment's current deletion bitmap file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeletesMeta {
    pub file: String,
    pub count: u64,
}

/// One version of a collection's state: its definition and its live files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
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
    #[serde(default)]
    pub index: IndexSettings,
}

pub const MANIFEST: &str = "MANIFEST";
const MANIFEST_HEADER: &str = "omendb-manifest-v1 crc32=";

impl Manifest {
    /// Reads and verifies `dir/MANIFEST`.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST);
        let raw = fs::read(&path).map_err(|e| Error::io(&path, e))?;
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
            .strip_prefix(MANIFEST_HEADER)
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| Error::corrupt(&path, "bad header line"))?;
        if crc32fast::hash(body.as_bytes()) != crc {
            return Err(Error::corrupt(&path, "checksum mismatch"));
        }
        let m: Manifest = serde_json::from_str(body)
            .map_err(|e| Error::corrupt(&path, format!("unparseable: {e}")))?;
        if m.format != 1 {
            return Err(Error::corrupt(
                &path,
                format!("unknown format version {}", m.format),
            ));
        }
        Ok(m)
    }

    /// Commits this manifest as `dir/MANIFEST`: write a temporary file, fsync it, rename it over
    /// the old one, fsync the directory. A crash leaves either the old or the new version.
    pub fn commit(&self, dir: &Path) -> Result<()> {
        let body = serde_json::to_string_pretty(self).expect("manifest serializes");
        let text = format!(
            "{MANIFEST_HEADER}{:08x}\n{body}",
            crc32fast::hash(body.as_bytes())
        );
        let tmp = dir.join("MANIFEST.tmp");
        write_durable(&tmp, text.as_bytes())?;
        let path = dir.join(MANIFEST);
        fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        sync_dir(dir)
    }

    pub fn schema(&self, dir: &Path) -> Result<SchemaRef> {
        let path = dir.join(MANIFEST);
        let bytes = hex_decode(&self.schema_ipc)
            .ok_or_else(|| Error::corrupt(&path, "schema is not valid hex"))?;
        let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .map_err(|e| Error::corrupt(&path, format!("bad schema: {e}")))?;
        Ok(reader.schema())
    }

    pub fn encode_schema(schema: &Schema) -> Result<String> {
        let mut buf = Vec::new();
        {
            let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut buf, schema)?;
            w.finish()?;
        }
        Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Files this manifest references (besides itself).
    pub fn live_files(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().flat_map(|s| {
            std::iter::once(s.file.as_str())
                .chain(s.deletes.iter().map(|d| d.file.as_str()))
                .chain(s.index.iter().map(|i| i.file.as_str()))
                .chain(s.norms.iter().map(|n| n.file.as_str()))
        })
    }
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
