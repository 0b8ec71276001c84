//! Databases: opening and closing them, and creating, opening and dropping their
//! collections.

use std::ffi::c_char;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use arrow_array::ffi::FFI_ArrowSchema;
use arrow_schema::{DataType, Field, Schema};
use omendb::CollectionOptions;

use crate::args::{optional_text, put, text, values};
use crate::arrow::import_schema;
use crate::collection::collection_handle;
use crate::error::{call, invalid, Outcome};
use crate::handles::{db_of, insert, remove, Object};
use crate::objects::OpenDb;
use crate::{omendb_collection, omendb_db, omendb_status};

/// Opens (creating if needed) the database at `path`: a directory, or object storage as a URL
/// (`s3://bucket/prefix`, `gs://`, `az://`, `file:///dir`, `memory://`) whose client reads
/// the standard environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`). Any number of
/// databases may be open at once, each on its own directory or prefix.
///
/// # Safety
/// `path` is a NUL-terminated string; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn omendb_open(path: *const c_char, out: *mut omendb_db) -> omendb_status {
    // SAFETY: the caller's contract above; no options, the default cache directory.
    unsafe { omendb_open_with_options(path, std::ptr::null(), 0, std::ptr::null(), out) }
}

/// Opens the database at `path` as `omendb_open` does, with `n_options` object storage client
/// options at `options`, each a `key=value` string (the `object_store` builders' keys, as
/// `--storage-option` takes them; they win over the environment), and the files it maps
/// cached under directory `cache_dir` (null: under the system temp dir). A local directory
/// takes no options.
///
/// # Safety
/// `path` is a NUL-terminated string; `options` is null (with `n_options` 0) or points to
/// `n_options` NUL-terminated strings; `cache_dir` is null or a NUL-terminated string; `out`
/// is writable.
#[no_mangle]
pub unsafe extern "C" fn omendb_open_with_options(
    path: *const c_char,
    options: *const *const c_char,
    n_options: usize,
    cache_dir: *const c_char,
    out: *mut omendb_db,
) -> omendb_status {
    call(|| {
        // SAFETY: the caller's contract above.
        let path = unsafe { text(path, "path") }?;
        // SAFETY: the caller's contract above.
        let raw = unsafe { values(options, n_options, "options") }?;
        let mut pairs = Vec::with_capacity(raw.len());
        for (i, &option) in raw.iter().enumerate() {
            // SAFETY: the caller's contract above: each is a NUL-terminated string.
            let option = unsafe { text(option, &format!("options[{i}]")) }?;
            pairs.push(
                omendb_object::parse_option(option)
                    .map_err(|e| invalid(format!("options[{i}]: {e}")))?,
            );
        }
        // SAFETY: the caller's contract above.
        let cache_dir = unsafe { optional_text(cache_dir, "cache_dir") }?.map(PathBuf::from);
        if out.is_null() {
            return Err(invalid("out is null"));
        }
        let db = omendb_object::open(path, &pairs, &omendb_object::Cache::at(cache_dir))?;
        let id = insert(Object::Db(Arc::new(OpenDb {
            path: path.to_string(),
            db: RwLock::new(Some(Arc::new(db))),
        })));
        // SAFETY: the caller's contract above.
        unsafe { put(out, omendb_db { id }, "out") }
    })
}

/// Closes a database: waits for calls in flight and background index builds, then releases
/// the directory. The handle and its collections' handles are dead afterwards.
#[no_mangle]
pub extern "C" fn omendb_close(db: omendb_db) -> omendb_status {
    call(|| {
        let Object::Db(open) = remove(db.id, "database", |o| matches!(o, Object::Db(_)))? else {
            unreachable!("remove checked the kind")
        };
        let mut guard = open.db.write().unwrap_or_else(|e| e.into_inner());
        if let Some(db) = guard.take() {
            db.close(true);
        }
        Ok(())
    })
}

/// Creates collection `name` with an Int64 `id` column and a `vector` column of `dim`
/// float32 values; `metric` is `cosine`, `l2` or `dot` (null: cosine).
///
/// # Safety
/// `name` and `metric` (unless null) are NUL-terminated strings; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn omendb_create_collection(
    db: omendb_db,
    name: *const c_char,
    dim: u32,
    metric: *const c_char,
    out: *mut omendb_collection,
) -> omendb_status {
    call(|| {
        // SAFETY: the caller's contract above.
        let (open, name) = unsafe { db_and_name(db, name) }?;
        let mut opts = CollectionOptions::default();
        // SAFETY: the caller's contract above.
        if let Some(metric) = unsafe { optional_text(metric, "metric") }? {
            opts.set("metric", metric)?;
        }
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(
                "vector",
                DataType::new_fixed_size_list(DataType::Float32, dim as i32, true),
                false,
            ),
        ]);
        // SAFETY: the caller's contract above.
        unsafe { create(open, name, &schema, opts, out) }
    })
}

/// Creates collection `name` from an Arrow schema (an id column, Int64 or Utf8, a
/// `FixedSizeList<Float32, d>` vector column and any metadata columns); `options` is null or
/// `key=value` pairs separated by commas (`metric=l2,index=hnsw,m=16`). The schema stays the
/// caller's to release.
///
/// # Safety
/// `schema` points to a valid `ArrowSchema`; `name` and `options` (unless null) are
/// NUL-terminated strings; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn omendb_create_collection_arrow(
    db: omendb_db,
    name: *const c_char,
    schema: *const FFI_ArrowSchema,
    options: *const c_char,
    out: *mut omendb_collection,
) -> omendb_status {
    call(|| {
        // SAFETY: the caller's contract above.
        let (open, name) = unsafe { db_and_name(db, name) }?;
        // SAFETY: the caller's contract above.
        let schema = unsafe { import_schema(schema) }?;
        // SAFETY: the caller's contract above.
        let opts = match unsafe { optional_text(options, "options") }? {
            None => CollectionOptions::default(),
            Some(text) => {
                CollectionOptions::parse(text.split(',').map(str::trim).filter(|s| !s.is_empty()))?
            }
        };
        // SAFETY: the caller's contract above.
        unsafe { create(open, name, &schema, opts, out) }
    })
}

/// Opens existing collection `name`.
///
/// # Safety
/// `name` is a NUL-terminated string; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn omendb_open_collection(
    db: omendb_db,
    name: *const c_char,
    out: *mut omendb_collection,
) -> omendb_status {
    call(|| {
        // SAFETY: the caller's contract above.
        let (open, name) = unsafe { db_and_name(db, name) }?;
        open.with(|d| Ok(d.collection(name).map(drop)?))?;
        // SAFETY: the caller's contract above.
        unsafe { collection_handle(open, name, out) }
    })
}

/// Drops collection `name` and its files; handles to it fail afterwards.
///
/// # Safety
/// `name` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn omendb_drop_collection(
    db: omendb_db,
    name: *const c_char,
) -> omendb_status {
    call(|| {
        // SAFETY: the caller's contract above.
        let (open, name) = unsafe { db_and_name(db, name) }?;
        open.with(|d| Ok(d.drop_collection(name)?))
    })
}

/// The open database of handle `db` and the collection name `name`.
///
/// # Safety
/// `name` is null or a NUL-terminated string that stays valid during the call.
unsafe fn db_and_name<'a>(db: omendb_db, name: *const c_char) -> Outcome<(Arc<OpenDb>, &'a str)> {
    let open = db_of(db)?;
    // SAFETY: the caller's contract above.
    let name = unsafe { text(name, "name") }?;
    Ok((open, name))
}

/// Creates collection `name` of `schema` under `opts` in `open`, and issues a handle to it
/// into `out`.
///
/// # Safety
/// `out` is null or writable.
unsafe fn create(
    open: Arc<OpenDb>,
    name: &str,
    schema: &Schema,
    opts: CollectionOptions,
    out: *mut omendb_collection,
) -> Outcome {
    open.with(|d| Ok(d.create_collection(name, schema, opts).map(drop)?))?;
    // SAFETY: the caller's contract above.
    unsafe { collection_handle(open, name, out) }
}
