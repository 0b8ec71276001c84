//! Collections: their handles, counts, writes, deletes and indexing.

use std::sync::Arc;

use arrow_array::ffi::{FFI_ArrowArray, FFI_ArrowSchema};
use arrow_array::{
    new_null_array, ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch,
};
use arrow_schema::{DataType, Field};

use crate::args::{packed_len, put, put_unless_null, values};
use crate::arrow::import_batch;
use crate::error::{call, invalid, Outcome};
use crate::handles::{collection_of, insert, remove, Object};
use crate::objects::{CollectionRef, OpenDb};
use crate::{omendb_collection, omendb_status};

/// Issues a handle to collection `name` of `db` into `out`.
///
/// # Safety
/// `out` is null or writable.
pub(crate) unsafe fn collection_handle(
    db: Arc<OpenDb>,
    name: &str,
    out: *mut omendb_collection,
) -> Outcome {
    if out.is_null() {
        return Err(invalid("out is null"));
    }
    let id = insert(Object::Collection(Arc::new(CollectionRef {
        db,
        name: name.to_string(),
    })));
    // SAFETY: the caller's contract above.
    unsafe { put(out, omendb_collection { id }, "out") }
}

/// Frees a collection handle (the collection stays in the database).
#[no_mangle]
pub extern "C" fn omendb_collection_free(collection: omendb_collection) -> omendb_status {
    call(|| {
        remove(collection.id, "collection", |o| {
            matches!(o, Object::Collection(_))
        })
        .map(drop)
    })
}

/// The collection's live rows.
///
/// # Safety
/// `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn omendb_count(
    collection: omendb_collection,
    out: *mut u64,
) -> omendb_status {
    call(|| {
        let n = collection_of(collection)?.with(|c| Ok(c.count()))?;
        // SAFETY: the caller's contract above.
        unsafe { put(out, n as u64, "out") }
    })
}

/// The collection's vector dimension.
///
/// # Safety
/// `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn omendb_dim(collection: omendb_collection, out: *mut u32) -> omendb_status {
    call(|| {
        let n = collection_of(collection)?.with(|c| Ok(c.dim()))?;
        // SAFETY: the caller's contract above.
        unsafe { put(out, n as u32, "out") }
    })
}

/// Appends `n` rows in one commit: `ids[i]` and the `dim` floats at `vectors + i * dim` (the
/// collection's id column must be Int64; other columns are left null and must be nullable).
/// A refused append (duplicate id, NaN, ...) writes nothing.
///
/// # Safety
/// `ids` points to `n` values and `vectors` to `n * dim` values; `written` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn omendb_add(
    collection: omendb_collection,
    ids: *const i64,
    vectors: *const f32,
    n: usize,
    written: *mut u64,
) -> omendb_status {
    call(|| {
        let rows = collection_of(collection)?.with(|c| {
            let len = packed_len(n, c.dim(), "rows")?;
            // SAFETY: the caller's contract above.
            let ids = unsafe { values(ids, n, "ids") }?;
            // SAFETY: the caller's contract above.
            let vectors = unsafe { values(vectors, len, "vectors") }?;
            let batch = plain_batch(c, ids, vectors)?;
            Ok(c.append(&[batch])?)
        })?;
        // SAFETY: the caller's contract above.
        unsafe { put_unless_null(written, rows as u64) }
    })
}

/// A batch of `c`'s schema from Int64 ids and packed vectors, other columns null.
fn plain_batch(c: &omendb::Collection, ids: &[i64], vectors: &[f32]) -> Outcome<RecordBatch> {
    let schema = c.schema();
    let dim = c.dim();
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| -> Outcome<ArrayRef> {
            if i == c.id_index() {
                if f.data_type() != &DataType::Int64 {
                    return Err(invalid(format!(
                        "collection '{}' has {} ids; add them through omendb_add_arrow",
                        c.name(),
                        f.data_type()
                    )));
                }
                Ok(Arc::new(Int64Array::from(ids.to_vec())))
            } else if i == c.vector_index() {
                let item = Arc::new(Field::new_list_field(DataType::Float32, true));
                Ok(Arc::new(FixedSizeListArray::try_new(
                    item,
                    dim as i32,
                    Arc::new(Float32Array::from(vectors.to_vec())),
                    None,
                )?))
            } else {
                Ok(new_null_array(f.data_type(), ids.len()))
            }
        })
        .collect::<Outcome<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// Appends (or with `upsert` non-zero, inserts or replaces by id) the rows of an Arrow record
/// batch exported as a struct array, in one commit. The array is taken over (released by
/// OmenDB); the schema stays the caller's.
///
/// # Safety
/// `array` and `schema` point to valid Arrow C Data Interface structs; `written` is null or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn omendb_add_arrow(
    collection: omendb_collection,
    array: *mut FFI_ArrowArray,
    schema: *const FFI_ArrowSchema,
    upsert: i32,
    written: *mut u64,
) -> omendb_status {
    call(|| {
        let c = collection_of(collection)?;
        // SAFETY: the caller's contract above.
        let batch = unsafe { import_batch(array, schema) }?;
        let rows = c.with(|c| {
            Ok(if upsert != 0 {
                c.upsert(&[batch])?
            } else {
                c.append(&[batch])?
            })
        })?;
        // SAFETY: the caller's contract above.
        unsafe { put_unless_null(written, rows as u64) }
    })
}

/// Deletes the rows with these `n` Int64 ids; `deleted` (unless null) gets how many were
/// stored.
///
/// # Safety
/// `ids` points to `n` values; `deleted` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn omendb_delete(
    collection: omendb_collection,
    ids: *const i64,
    n: usize,
    deleted: *mut u64,
) -> omendb_status {
    call(|| {
        // SAFETY: the caller's contract above.
        let ids = Int64Array::from(unsafe { values(ids, n, "ids") }?.to_vec());
        let rows = collection_of(collection)?.with(|c| Ok(c.delete(&ids)?))?;
        // SAFETY: the caller's contract above.
        unsafe { put_unless_null(deleted, rows as u64) }
    })
}

/// Indexes every unindexed segment now (not in the background); `built` (unless null) gets
/// how many indexes were built.
///
/// # Safety
/// `built` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn omendb_build_index(
    collection: omendb_collection,
    built: *mut u64,
) -> omendb_status {
    call(|| {
        let n = collection_of(collection)?.with(|c| Ok(c.build_index(0)?))?;
        // SAFETY: the caller's contract above.
        unsafe { put_unless_null(built, n as u64) }
    })
}

/// Waits until the collection's background index builds and merges have finished (returns
/// at once when none is running).
#[no_mangle]
pub extern "C" fn omendb_wait_for_indexing(collection: omendb_collection) -> omendb_status {
    call(|| {
        collection_of(collection)?.with(|c| {
            c.wait_for_indexing();
            Ok(())
        })
    })
}
