//! Arrow across the C Data Interface: record batches and schemas in, record batches out.

use arrow_array::ffi::{from_ffi, FFI_ArrowArray, FFI_ArrowSchema};
use arrow_array::{Array, RecordBatch, StructArray};
use arrow_schema::{DataType, Schema};

use crate::error::{invalid, Outcome};

/// Imports an Arrow C struct array (taking it over: its release callback is called) as a
/// record batch.
///
/// # Safety
/// `array` and `schema` point to valid Arrow C structs; `array` is moved out of.
pub(crate) unsafe fn import_batch(
    array: *mut FFI_ArrowArray,
    schema: *const FFI_ArrowSchema,
) -> Outcome<RecordBatch> {
    if array.is_null() || schema.is_null() {
        return Err(invalid("array or schema is null"));
    }
    // SAFETY: non-null and valid (the caller's contract); `from_raw` moves the struct out and
    // marks the caller's copy released, as the C Data Interface's move semantics say.
    let array = unsafe { FFI_ArrowArray::from_raw(array) };
    // SAFETY: `array` is valid and `schema` describes it (the caller's contract).
    let data = unsafe { from_ffi(array, &*schema) }?;
    if !matches!(data.data_type(), DataType::Struct(_)) {
        return Err(invalid(format!(
            "expected a struct array (a record batch), got {}",
            data.data_type()
        )));
    }
    Ok(RecordBatch::from(StructArray::from(data)))
}

/// Reads an Arrow C schema (it stays the caller's to release).
///
/// # Safety
/// `schema` is null or points to a valid `ArrowSchema`.
pub(crate) unsafe fn import_schema(schema: *const FFI_ArrowSchema) -> Outcome<Schema> {
    if schema.is_null() {
        return Err(invalid("schema is null"));
    }
    // SAFETY: non-null, and the caller promises a valid ArrowSchema; it is only read.
    Ok(Schema::try_from(unsafe { &*schema })?)
}

/// Exports `batch` as an Arrow C struct array and its schema, moved into `array` and
/// `schema`; the caller releases both.
///
/// # Safety
/// `array` and `schema` are null or writable.
pub(crate) unsafe fn export_batch(
    batch: RecordBatch,
    array: *mut FFI_ArrowArray,
    schema: *mut FFI_ArrowSchema,
) -> Outcome {
    let data = StructArray::from(batch).into_data();
    let ffi_schema = FFI_ArrowSchema::try_from(data.data_type())?;
    let ffi_array = FFI_ArrowArray::new(&data);
    if array.is_null() || schema.is_null() {
        return Err(invalid("array or schema is null"));
    }
    // SAFETY: non-null, and the caller promises both are writable; the structs are moved
    // in, and the caller's release callbacks free them.
    unsafe {
        array.write(ffi_array);
        schema.write(ffi_schema);
    }
    Ok(())
}
