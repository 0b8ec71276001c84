//! `omendb import`: loads Parquet, CSV (vectors as a list column written like `[0.1, 0.2]`),
//! Arrow IPC (file or stream) and `.npy` files (float vectors, with ids from an optional
//! `.npy` of integers, else row numbers) into a collection, all files in one all-or-nothing
//! write: straight into a database directory (`--data`), or streamed to a server's `do_put`
//! (`--addr`). Progress (rows, rows/s, ETA) goes to standard error.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::FlightDescriptor;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, Float32Builder, Int64Array,
    ListBuilder, RecordBatch,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use futures::StreamExt;

use crate::cli::admin::{authorize, connect, Conn};
use crate::cli::progress::{ticking, Progress};

/// Rows per batch read from a file.
const BATCH_ROWS: usize = 8192;

/// `omendb import` arguments.
#[derive(clap::Args)]
pub(crate) struct ImportArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The collection to load into (created by the first import).
    #[arg(long)]
    pub collection: String,
    /// For .npy vectors: an .npy file of integer ids, one per row (default: row numbers from
    /// --first-id).
    #[arg(long)]
    pub ids: Option<PathBuf>,
    /// For .npy vectors without --ids: the id of the first row.
    #[arg(long, default_value_t = 0)]
    pub first_id: i64,
    /// A CSV column holding vectors as text like [0.1, 0.2] (default: every text column whose
    /// first value starts with '[').
    #[arg(long)]
    pub vector_text: Option<String>,
    /// A setting of a new collection, key=value (repeatable; the keys are listed below). An
    /// existing collection refuses settings other than its own.
    #[arg(long = "option")]
    pub options: Vec<String>,
    /// Replace stored rows with the same ids instead of refusing them.
    #[arg(long)]
    pub upsert: bool,
    /// Parquet (.parquet), CSV (.csv), Arrow IPC (.arrow, .arrows, .ipc, .feather) or .npy files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

type Batches = Box<dyn Iterator<Item = Result<RecordBatch, String>> + Send>;

/// One input file, opened: its batches and how far through it the reader is.
struct Source {
    batches: Batches,
    /// Bytes of the file read so far (for the ETA).
    read: Arc<AtomicU64>,
    bytes: u64,
}

/// A reader that counts the bytes passing through it.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn named(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

fn open(path: &Path, args: &ImportArgs) -> Result<Source, String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let bytes = std::fs::metadata(path).map_err(|e| named(path, e))?.len();
    let read = Arc::new(AtomicU64::new(0));
    let file = || File::open(path).map_err(|e| named(path, e));
    let counting = || -> Result<_, String> {
        Ok(BufReader::with_capacity(
            1 << 20,
            Counting {
                inner: file()?,
                read: read.clone(),
            },
        ))
    };
    let p = path.to_path_buf();
    let batches: Batches = match ext.as_str() {
        "parquet" => {
            let builder =
                ParquetRecordBatchReaderBuilder::try_new(file()?).map_err(|e| named(path, e))?;
            let rows = builder.metadata().file_metadata().num_rows().max(1) as u64;
            let reader = builder
                .with_batch_size(BATCH_ROWS)
                .build()
                .map_err(|e| named(path, e))?;
            let (read, mut done) = (read.clone(), 0u64);
            Box::new(reader.map(move |b| {
                let b = b.map_err(|e| named(&p, e))?;
                done += b.num_rows() as u64;
                read.store(bytes * done / rows, Ordering::Relaxed);
                Ok(b)
            }))
        }
        "csv" => {
            let mut f = file()?;
            let format = datafusion::arrow::csv::reader::Format::default().with_header(true);
            let (schema, _) = format
                .infer_schema(&mut f, Some(1000))
                .map_err(|e| named(path, e))?;
            f.rewind().map_err(|e| named(path, e))?;
            let reader = datafusion::arrow::csv::ReaderBuilder::new(Arc::new(schema))
                .with_header(true)
                .with_batch_size(BATCH_ROWS)
                .build(counting()?)
                .map_err(|e| named(path, e))?;
            let only = args.vector_text.clone();
            Box::new(reader.map(move |b| {
                let b = b.map_err(|e| named(&p, e))?;
                parse_vector_text(&b, only.as_deref()).map_err(|e| named(&p, e))
            }))
        }
        "arrow" | "arrows" | "ipc" | "feather" => {
            let stream = {
                let mut magic = [0u8; 6];
                let n = file()?.read(&mut magic).map_err(|e| named(path, e))?;
                n < 6 || &magic != b"ARROW1"
            };
            if stream {
                let reader =
                    datafusion::arrow::ipc::reader::StreamReader::try_new(counting()?, None)
                        .map_err(|e| named(path, e))?;
                Box::new(reader.map(move |b| b.map_err(|e| named(&p, e))))
            } else {
                let reader = datafusion::arrow::ipc::reader::FileReader::try_new(
                    BufReader::new(file()?),
                    None,
                )
                .map_err(|e| named(path, e))?;
                let (read, n) = (read.clone(), reader.num_batches().max(1) as u64);
                Box::new(reader.enumerate().map(move |(i, b)| {
                    read.store(bytes * (i as u64 + 1) / n, Ordering::Relaxed);
                    b.map_err(|e| named(&p, e))
                }))
            }
        }
        "npy" => npy(path, args, read.clone(), bytes)?,
        other => {
            return Err(named(
                path,
                format!(
                    "unknown file type '.{other}' (expected .parquet, .csv, .arrow, .arrows, \
                     .ipc, .feather or .npy)"
                ),
            ))
        }
    };
    Ok(Source {
        batches,
        read,
        bytes,
    })
}

/// Vectors from an .npy file as batches of `id` (Int64) and `vector` columns.
fn npy(
    path: &Path,
    args: &ImportArgs,
    read: Arc<AtomicU64>,
    bytes: u64,
) -> Result<Batches, String> {
    let vectors = omendb::npy::read_f32(path).map_err(|e| e.to_string())?;
    let ids: Vec<i64> = match &args.ids {
        Some(ids_path) => {
            let ids = omendb::npy::read_i64(ids_path).map_err(|e| e.to_string())?;
            if ids.data.len() != vectors.rows {
                return Err(format!(
                    "{} holds {} ids for the {} vectors of {}",
                    ids_path.display(),
                    ids.data.len(),
                    vectors.rows,
                    path.display()
                ));
            }
            ids.data
        }
        None => (0..vectors.rows as i64)
            .map(|i| args.first_id + i)
            .collect(),
    };
    let (rows, dim) = (vectors.rows, vectors.cols);
    let data = Arc::new(vectors.data);
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "vector",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, true)),
                dim as i32,
            ),
            false,
        ),
    ]));
    Ok(Box::new((0..rows).step_by(BATCH_ROWS).map(move |start| {
        let end = (start + BATCH_ROWS).min(rows);
        let values = Float32Array::from(data[start * dim..end * dim].to_vec());
        let item = Arc::new(Field::new("item", DataType::Float32, true));
        let list = FixedSizeListArray::try_new(item, dim as i32, Arc::new(values), None)
            .map_err(|e| e.to_string())?;
        read.store(bytes * end as u64 / rows.max(1) as u64, Ordering::Relaxed);
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids[start..end].to_vec())) as ArrayRef,
                Arc::new(list),
            ],
        )
        .map_err(|e| e.to_string())
    })))
}

/// Turns text columns holding vectors (`[0.1, 0.2, ...]`) into lists of float32: the column
/// `only`, or every text column whose first value starts with '['.
fn parse_vector_text(batch: &RecordBatch, only: Option<&str>) -> Result<RecordBatch, String> {
    let schema = batch.schema();
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let text = column.as_string_opt::<i32>();
        let pick = match (only, text) {
            (Some(name), _) => field.name() == name,
            (None, Some(t)) => t
                .iter()
                .flatten()
                .next()
                .is_some_and(|v| v.trim_start().starts_with('[')),
            (None, None) => false,
        };
        let Some(text) = text.filter(|_| pick) else {
            if only == Some(field.name().as_str()) {
                return Err(format!("column '{}' is not text", field.name()));
            }
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
            continue;
        };
        let mut list = ListBuilder::new(Float32Builder::new());
        for (row, value) in text.iter().enumerate() {
            let Some(value) = value else {
                list.append(false);
                continue;
            };
            let inner = value
                .trim()
                .strip_prefix('[')
                .and_then(|v| v.strip_suffix(']'))
                .ok_or_else(|| format!("column '{}', row {row}: not a [..] list", field.name()))?;
            for item in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let v: f32 = item.parse().map_err(|_| {
                    format!(
                        "column '{}', row {row}: '{item}' is not a number",
                        field.name()
                    )
                })?;
                list.values().append_value(v);
            }
            list.append(true);
        }
        let array = list.finish();
        fields.push(Field::new(
            field.name(),
            array.data_type().clone(),
            field.is_nullable(),
        ));
        columns.push(Arc::new(array) as ArrayRef);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
}

/// Reads every file in turn on this thread, handing each batch to `sink`, with progress.
fn read_all(
    args: &ImportArgs,
    mut sink: impl FnMut(RecordBatch) -> Result<(), String>,
) -> Result<u64, String> {
    let total: u64 = args
        .files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .map(|m| m.len())
                .map_err(|e| named(f, e))
        })
        .sum::<Result<u64, String>>()?;
    let mut progress = Progress::new(format!("import {}", args.collection), "rows");
    let (mut rows, mut before) = (0u64, 0u64);
    for path in &args.files {
        let source = open(path, args)?;
        for batch in source.batches {
            let batch = batch?;
            rows += batch.num_rows() as u64;
            sink(batch)?;
            let at = before + source.read.load(Ordering::Relaxed).min(source.bytes);
            progress.update(rows, (total > 0).then(|| at as f64 / total as f64));
        }
        before += source.bytes;
    }
    progress.finish(rows);
    Ok(rows)
}

/// Runs `omendb import`; prints a JSON summary.
pub(crate) async fn run(args: ImportArgs) -> Result<(), String> {
    let reply = match (&args.conn.data, &args.conn.addr) {
        (Some(dir), _) => {
            // A directory (created if missing) or object storage at a URL.
            let db = omendb_object::open(dir, &args.conn.storage_options, &Default::default())
                .map(Arc::new)
                .map_err(|e| e.to_string())?;
            tokio::task::spawn_blocking(move || local(&db, &args))
                .await
                .map_err(|e| e.to_string())??
        }
        (None, Some(addr)) => remote(addr.clone(), args).await?,
        (None, None) => return Err("give --data DIR or --addr URL".into()),
    };
    println!("{reply}");
    Ok(())
}

fn local(db: &Arc<omendb::Database>, args: &ImportArgs) -> Result<serde_json::Value, String> {
    let opts = omendb::CollectionOptions::parse(args.options.iter().map(String::as_str))
        .map_err(|e| e.to_string())?;
    let mode = if args.upsert {
        omendb::WriteMode::Upsert
    } else {
        omendb::WriteMode::CreateOrAppend
    };
    let mut ingest = db
        .ingest(&args.collection, mode, opts)
        .map_err(|e| e.to_string())?;
    let rows = read_all(args, |b| ingest.push(&b).map_err(|e| e.to_string()))?;
    ticking("commit", || ingest.commit()).map_err(|e| e.to_string())?;
    let c = db.collection(&args.collection).map_err(|e| e.to_string())?;
    // The directory is let go when the command ends: index builds run to completion first.
    ticking(&format!("index {}", args.collection), || {
        c.wait_for_indexing()
    });
    let stats = c.stats().map_err(|e| e.to_string())?;
    Ok(serde_json::json!({
        "collection": args.collection,
        "rows_imported": rows,
        "rows": stats.rows,
        "segments": stats.segments,
        "index_kinds": stats.index_kinds,
    }))
}

async fn remote(addr: String, args: ImportArgs) -> Result<serde_json::Value, String> {
    let mut client = connect(&addr).await?;
    let mut path = vec![args.collection.clone()];
    path.extend(args.options.iter().cloned());
    if args.upsert {
        path.push("mode=upsert".into());
    }
    let token = args.conn.token.clone();
    // Files are read on a blocking thread and streamed as they are read. A read error must
    // not end the upload cleanly (the server would commit what it has): the stream stalls and
    // the call is cancelled instead.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch, String>>(4);
    let reader = tokio::task::spawn_blocking(move || {
        let read = read_all(&args, |b| {
            tx.blocking_send(Ok(b))
                .map_err(|_| "the server stopped the upload".to_string())
        });
        if let Err(e) = &read {
            let _ = tx.blocking_send(Err(e.clone()));
        }
        read
    });
    let batches = futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Some(Ok(b)) => Some((Ok::<_, FlightError>(b), rx)),
            Some(Err(_)) => {
                futures::future::pending::<()>().await;
                None
            }
            None => None,
        }
    });
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(path)))
        .build(batches)
        .filter_map(|d| async move { d.ok() });
    let mut request = tonic::Request::new(data);
    authorize(&mut request, token.as_deref())?;
    let put = tokio::spawn(async move {
        let mut results = client
            .do_put(request)
            .await
            .map_err(|s| format!("import: {}", s.message()))?
            .into_inner();
        let mut server = serde_json::Value::Null;
        while let Some(r) = results.next().await {
            let r = r.map_err(|s| format!("import: {}", s.message()))?;
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.app_metadata) {
                server = v;
            }
        }
        Ok::<_, String>(server)
    });
    let rows = match reader.await.map_err(|e| e.to_string())? {
        Ok(rows) => rows,
        Err(e) => {
            // The server's own error, if it stopped the upload; else the reader's.
            put.abort();
            return Err(match put.await {
                Ok(Err(server)) => server,
                _ => e,
            });
        }
    };
    let server = put.await.map_err(|e| e.to_string())??;
    Ok(
        serde_json::json!({ "collection": server.get("collection"), "rows_imported": rows, "server": server }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;

    #[test]
    fn vector_text_becomes_float_lists() {
        let batch = RecordBatch::try_from_iter(vec![
            ("id", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
            (
                "v",
                Arc::new(StringArray::from(vec!["[1, 2.5]", " [3,4] "])) as ArrayRef,
            ),
            ("w", Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef),
        ])
        .unwrap();
        let out = parse_vector_text(&batch, None).unwrap();
        let list = out.column(1).as_list::<i32>();
        assert_eq!(
            list.value(0)
                .as_primitive::<datafusion::arrow::datatypes::Float32Type>()
                .values(),
            &[1.0, 2.5]
        );
        assert_eq!(out.column(2).data_type(), &DataType::Utf8);
        let bad = RecordBatch::try_from_iter(vec![(
            "v",
            Arc::new(StringArray::from(vec!["[1, x]"])) as ArrayRef,
        )])
        .unwrap();
        let err = parse_vector_text(&bad, None).unwrap_err();
        assert!(err.contains("'x' is not a number"), "{err}");
    }
}
