//! Segment files: one record batch as a 64-byte-aligned Arrow IPC file, decoded zero-copy from
//! its mapping; and the raw little-endian f32 files of per-row values written beside them.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_buffer::{Buffer, ScalarBuffer};
use arrow_data::ArrayData;
use arrow_ipc::reader::{read_footer_length, FileDecoder};
use arrow_ipc::writer::{FileWriter, IpcWriteOptions};
use arrow_ipc::MetadataVersion;
use arrow_schema::SchemaRef;

use super::manifest::FileMeta;
use super::{map_committed, Store, Written};
use crate::{Error, Result};

/// Writes `batch` as a 64-byte-aligned Arrow IPC file `name`, durably.
pub(crate) fn write_segment(store: &dyn Store, name: &str, batch: &RecordBatch) -> Result<Written> {
    store.write(name, &mut |out| {
        let opts = IpcWriteOptions::try_new(64, false, MetadataVersion::V5)?;
        let mut w = FileWriter::try_new_with_options(out, &batch.schema(), opts)?;
        w.write(batch)?;
        w.finish()?;
        Ok(())
    })
}

/// Maps segment file `name`, checks its size (and, with `verify_checksum`, its CRC32) against
/// `meta`, and decodes its single record batch zero-copy: the arrays point into the mapping.
pub(crate) fn open_segment(
    store: &dyn Store,
    meta: &FileMeta,
    schema: &SchemaRef,
    verify_checksum: bool,
) -> Result<RecordBatch> {
    let buffer = store.map(
        &meta.file,
        meta.bytes,
        verify_checksum.then_some(meta.crc32),
    )?;
    decode_single_batch(&buffer, schema).map_err(|e| Error::corrupt(store.path(&meta.file), e))
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
    let batch = decoder
        .read_record_batch(block, &buffer.slice_with_length(start, len))
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "empty record batch block".to_string())?;
    let columns = batch
        .columns()
        .iter()
        .map(|c| arrow_array::make_array(own_sizes(c.to_data())))
        .collect();
    RecordBatch::try_new(batch.schema(), columns).map_err(|e| e.to_string())
}

/// The same array with each buffer reporting its own length as its size. Decoded from one
/// mapping, every buffer would otherwise report the whole file (`Buffer::capacity`), so a query
/// reading one column of many segments would count each file once per buffer against its
/// memory limit and fail far below it.
fn own_sizes(data: ArrayData) -> ArrayData {
    let rewrap = |b: &Buffer| -> Buffer {
        let Some(ptr) = std::ptr::NonNull::new(b.as_ptr() as *mut u8) else {
            return b.clone();
        };
        let owner: Arc<dyn arrow_buffer::alloc::Allocation> =
            Arc::new(std::panic::AssertUnwindSafe(b.clone()));
        // SAFETY: `ptr` points at `b.len()` initialized, immutable bytes of the read-only
        // mapping, which `owner` (a clone of `b`) keeps alive for as long as the new buffer.
        unsafe { Buffer::from_custom_allocation(ptr, b.len(), owner) }
    };
    let buffers = data.buffers().iter().map(rewrap).collect();
    let children = data.child_data().iter().cloned().map(own_sizes).collect();
    let nulls = data.nulls().map(|n| {
        let bits = n.inner();
        let inner =
            arrow_buffer::BooleanBuffer::new(rewrap(bits.inner()), bits.offset(), bits.len());
        // SAFETY: the same bits as `n`, so the same null count.
        unsafe { arrow_buffer::NullBuffer::new_unchecked(inner, n.null_count()) }
    });
    let builder = data
        .into_builder()
        .buffers(buffers)
        .child_data(children)
        .nulls(nulls);
    // SAFETY: the layout, lengths, offsets and contents are those of `data`, which the IPC
    // decoder built and validated; only the buffers' owners changed.
    unsafe { builder.build_unchecked() }
}

/// Writes `values` as raw little-endian f32 file `name`, durably.
pub(crate) fn write_f32s(store: &dyn Store, name: &str, values: &[f32]) -> Result<Written> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    store.put(name, &bytes)
}

/// Maps a raw f32 file written by [`write_f32s`] holding one value per row (size checked
/// against `meta`, and the checksum unless the file is unchanged since its commit).
pub(crate) fn map_f32s(
    store: &dyn Store,
    meta: &FileMeta,
    rows: usize,
) -> Result<ScalarBuffer<f32>> {
    if meta.bytes != rows as u64 * 4 {
        return Err(Error::corrupt(
            store.path(&meta.file),
            format!("holds {} bytes, {rows} rows need {}", meta.bytes, rows * 4),
        ));
    }
    if cfg!(target_endian = "big") {
        return Err(Error::invalid("big-endian hosts are not supported"));
    }
    let buffer = map_committed(store, &meta.file, meta.bytes, meta.crc32, meta.mtime_ns)?;
    Ok(ScalarBuffer::new(buffer, 0, rows))
}
