//! Searches and their results.

use std::sync::Arc;

use arrow_array::ffi::{FFI_ArrowArray, FFI_ArrowSchema};
use arrow_array::{Array, Float32Array, Int64Array};
use omendb::{SearchRequest, Selection};

use crate::args::{packed_len, put, values};
use crate::arrow::export_batch;
use crate::error::{call, invalid, Failure, Outcome};
use crate::handles::{collection_of, insert, remove, result_of, Object};
use crate::objects::Found;
use crate::omendb_status::*;
use crate::{omendb_collection, omendb_result, omendb_status};

/// Searches for the `k` nearest rows to each of `nq` queries (`nq * dim` floats at `queries`),
/// nearest first. With `filter_ids` non-null, only the rows with those `n_filter` Int64 ids
/// are candidates (and k rows come back when k of them exist). `ef` 0 takes the collection's
/// default beam. The result is read with `omendb_result_*` and freed with
/// `omendb_result_free`.
///
/// # Safety
/// `queries` points to `nq * dim` values, `filter_ids` is null or points to `n_filter`
/// values, `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn omendb_search(
    collection: omendb_collection,
    queries: *const f32,
    nq: usize,
    k: usize,
    ef: usize,
    filter_ids: *const i64,
    n_filter: usize,
    out: *mut omendb_result,
) -> omendb_status {
    call(|| {
        if out.is_null() {
            return Err(invalid("out is null"));
        }
        let found = collection_of(collection)?.with(|c| {
            let len = packed_len(nq, c.dim(), "queries")?;
            // SAFETY: the caller's contract above.
            let q = unsafe { values(queries, len, "queries") }?;
            let snap = c.snapshot();
            let filter = if filter_ids.is_null() {
                None
            } else {
                // SAFETY: the caller's contract above.
                let ids = unsafe { values(filter_ids, n_filter, "filter_ids") }?;
                Some(Selection::from_ids(&snap, &Int64Array::from(ids.to_vec()))?)
            };
            let req = SearchRequest::new(q, k)
                .ef((ef > 0).then_some(ef))
                .filter(filter.as_ref());
            let found = snap.search_rows(&req)?;
            let mut starts = Vec::with_capacity(found.per_query().len() + 1);
            starts.push(0);
            for n in found.per_query() {
                starts.push(starts.last().copied().unwrap_or(0) + n);
            }
            let batch = found.numbered()?;
            Ok(Found {
                batch,
                id_column: c.id_index() + 1,
                starts,
            })
        })?;
        let id = insert(Object::Result(Arc::new(found)));
        // SAFETY: checked non-null above; the caller promises it is writable.
        unsafe { put(out, omendb_result { id }, "out") }
    })
}

/// How many rows answer query `query` of a result.
///
/// # Safety
/// `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn omendb_result_len(
    result: omendb_result,
    query: usize,
    out: *mut usize,
) -> omendb_status {
    call(|| {
        let r = result_of(result)?;
        let n = query_range(&r, query)?.len();
        // SAFETY: the caller's contract above.
        unsafe { put(out, n, "out") }
    })
}

fn query_range(r: &Found, query: usize) -> Outcome<std::ops::Range<usize>> {
    let queries = r.starts.len() - 1;
    if query >= queries {
        return Err(invalid(format!(
            "query {query} is out of range: the result answers {queries} queries"
        )));
    }
    Ok(r.starts[query]..r.starts[query + 1])
}

/// Copies up to `cap` hits of query `query`, nearest first: Int64 ids into `ids` and
/// distances into `distances` (either may be null); `n` gets how many were copied.
///
/// # Safety
/// `ids` and `distances` are null or writable for `cap` values; `n` is writable.
#[no_mangle]
pub unsafe extern "C" fn omendb_result_hits(
    result: omendb_result,
    query: usize,
    ids: *mut i64,
    distances: *mut f32,
    cap: usize,
    n: *mut usize,
) -> omendb_status {
    call(|| {
        let r = result_of(result)?;
        let range = query_range(&r, query)?;
        let take = range.len().min(cap);
        let rows = r.batch.slice(range.start, take);
        if !ids.is_null() {
            let id_col = rows
                .column(r.id_column)
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| {
                    invalid(
                        "the collection's ids are not Int64: read them through omendb_result_arrow",
                    )
                })?;
            // SAFETY: non-null; the caller promises room for `cap >= take` values.
            let out = unsafe { std::slice::from_raw_parts_mut(ids, take) };
            out.copy_from_slice(&id_col.values()[..take]);
        }
        if !distances.is_null() {
            let d = rows
                .column(rows.num_columns() - 1)
                .as_any()
                .downcast_ref::<Float32Array>()
                .ok_or_else(|| {
                    Failure(
                        OMENDB_ERR_INTERNAL,
                        "internal error: no _distance column".into(),
                    )
                })?;
            // SAFETY: non-null; the caller promises room for `cap >= take` values.
            let out = unsafe { std::slice::from_raw_parts_mut(distances, take) };
            out.copy_from_slice(&d.values()[..take]);
        }
        // SAFETY: the caller's contract above.
        unsafe { put(n, take, "n") }
    })
}

/// Exports a result's rows (a leading Int32 `_query`, the collection's columns, `_distance`)
/// as an Arrow C struct array and its schema; the caller releases both.
///
/// # Safety
/// `array` and `schema` are writable.
#[no_mangle]
pub unsafe extern "C" fn omendb_result_arrow(
    result: omendb_result,
    array: *mut FFI_ArrowArray,
    schema: *mut FFI_ArrowSchema,
) -> omendb_status {
    call(|| {
        let r = result_of(result)?;
        // SAFETY: the caller's contract above.
        unsafe { export_batch(r.batch.clone(), array, schema) }
    })
}

/// Frees a result.
#[no_mangle]
pub extern "C" fn omendb_result_free(result: omendb_result) -> omendb_status {
    call(|| remove(result.id, "result", |o| matches!(o, Object::Result(_))).map(drop))
}
