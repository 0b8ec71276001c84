//! OmenDB as a plugin of a DataFusion application's own `SessionContext`: the app has its own
//! tables (here a Parquet file of prices it wrote), registers a database's collections,
//! `knn()` and the distance functions onto the same context, and joins a vector search with
//! its data in one statement.
//!
//! cargo run -p omendb-datafusion --example datafusion_plugin

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, FixedSizeListBuilder, Float32Builder, Float64Array, Int64Array, RecordBatch,
    StringArray,
};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use omendb::{CollectionOptions, Database};

const ROWS: i64 = 2_000;
const DIM: usize = 8;

/// Row `i`'s vector: a point on a curve through 8 dimensions (a deterministic stand-in for
/// product embeddings).
fn vector(i: i64) -> [f32; DIM] {
    let t = i as f32 / 50.0;
    std::array::from_fn(|j| ((j as f32 + 1.0) * t).sin() + j as f32 * 0.1)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;

    // The application's session and its own data: product prices, written as Parquet.
    let ctx = SessionContext::new();
    let prices = RecordBatch::try_from_iter(vec![
        (
            "product",
            Arc::new(Int64Array::from_iter_values(0..ROWS)) as ArrayRef,
        ),
        (
            "price",
            Arc::new(Float64Array::from_iter_values(
                (0..ROWS).map(|i| 5.0 + (i % 97) as f64),
            )),
        ),
    ])?;
    let parquet = dir.path().join("prices.parquet");
    ctx.read_batch(prices)?
        .write_parquet(
            parquet.to_str().expect("a UTF-8 path"),
            DataFrameWriteOptions::new(),
            None,
        )
        .await?;
    ctx.register_parquet(
        "prices",
        parquet.to_str().expect("a UTF-8 path"),
        ParquetReadOptions::default(),
    )
    .await?;

    // A database with one collection of product embeddings.
    let db = Arc::new(Database::open(dir.path().join("db"))?);
    let mut vectors = FixedSizeListBuilder::new(Float32Builder::new(), DIM as i32);
    for i in 0..ROWS {
        vectors.values().append_slice(&vector(i));
        vectors.append(true);
    }
    let items = RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(Int64Array::from_iter_values(0..ROWS)) as ArrayRef,
        ),
        ("embedding", Arc::new(vectors.finish()) as ArrayRef),
        (
            "name",
            Arc::new(StringArray::from_iter_values(
                (0..ROWS).map(|i| format!("product {i}")),
            )),
        ),
    ])?;
    let products =
        db.create_collection("products", &items.schema(), CollectionOptions::default())?;
    products.append(&[items])?;

    // The plugin: collections, knn() and the distance functions join the app's tables.
    omendb_datafusion::register(&ctx, db.clone())?;

    let query: Vec<String> = vector(1_234).iter().map(|v| v.to_string()).collect();
    let sql = format!(
        "SELECT k.id, k.name, p.price, round(k._distance, 4) AS distance \
         FROM knn('products', [{}], 5) k JOIN prices p ON p.product = k.id \
         WHERE p.price < 60 ORDER BY k._distance",
        query.join(", ")
    );
    let found = ctx.sql(&sql).await?.collect().await?;
    println!("{}", pretty_format_batches(&found)?);
    let rows: usize = found.iter().map(RecordBatch::num_rows).sum();
    // The app's own table is still there, beside the collection.
    let tables = ctx
        .sql("SELECT count(*) FROM prices")
        .await?
        .collect()
        .await?;
    println!("{}", pretty_format_batches(&tables)?);
    if rows == 0 {
        return Err("the join found no rows".into());
    }
    Ok(())
}
