//! knn() joined with analytics data from a CSV file, then aggregated, in one SQL statement.
//!
//! cargo run -p omendb-datafusion --example join_analytics -- [../shared/datasets/minilm-words]
//!
//! Loads 20,000 word embeddings into a collection, writes a CSV of per-word page views, and asks:
//! among the 100 words nearest to a query word, how many start with each letter, and how many
//! views do they get?

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, FixedSizeListBuilder, Float32Builder, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::util::pretty::print_batches;
use omendb::{CollectionOptions, Database, Metric};
use omendb_testkit::npy;

const ROWS: usize = 20_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dataset = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "../shared/datasets/minilm-words".into());
    let dataset = std::path::Path::new(&dataset);
    let base = npy::read_f32(dataset.join("base.npy"))?;
    let queries = npy::read_f32(dataset.join("queries.npy"))?;
    let words: Vec<String> = std::fs::read_to_string(dataset.join("base_words.txt"))?
        .lines()
        .take(ROWS)
        .map(str::to_string)
        .collect();
    let query_word = std::fs::read_to_string(dataset.join("query_words.txt"))?
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let dim = base.cols;

    let tmp = std::env::temp_dir().join(format!("omendb-join-example-{}", std::process::id()));
    let db = Arc::new(Database::open(&tmp)?);
    let mut vectors = FixedSizeListBuilder::new(Float32Builder::new(), dim as i32);
    vectors.values().append_slice(&base.data[..ROWS * dim]);
    for _ in 0..ROWS {
        vectors.append(true);
    }
    let batch = RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(Int64Array::from_iter_values(0..ROWS as i64)) as ArrayRef,
        ),
        (
            "word",
            Arc::new(StringArray::from_iter_values(&words)) as ArrayRef,
        ),
        ("vector", Arc::new(vectors.finish()) as ArrayRef),
    ])?;
    let words_collection = db.create_collection(
        "words",
        &batch.schema(),
        CollectionOptions {
            metric: Metric::Cosine,
            ..Default::default()
        },
    )?;
    words_collection.append(&[batch])?;

    // Analytics from elsewhere: page views per word, as a CSV file.
    let csv = tmp.join("views.csv");
    let mut text = String::from("word,views\n");
    for (i, w) in words.iter().enumerate() {
        text.push_str(&format!("{w},{}\n", (i * 7919) % 1000));
    }
    std::fs::write(&csv, text)?;

    let ctx = omendb_datafusion::session(db)?;
    ctx.register_csv(
        "views",
        csv.to_str().ok_or("non-UTF-8 temp path")?,
        Default::default(),
    )
    .await?;
    let q: Vec<String> = queries.data[..dim].iter().map(|v| v.to_string()).collect();
    let sql = format!(
        "SELECT substr(k.word, 1, 1) AS letter, count(*) AS words, sum(v.views) AS views, \
                round(avg(k._distance), 3) AS avg_distance \
         FROM knn('words', [{}], 100) AS k JOIN views AS v ON k.word = v.word \
         GROUP BY letter ORDER BY words DESC, letter LIMIT 10",
        q.join(",")
    );
    println!("the 100 words nearest to '{query_word}', by first letter:");
    print_batches(&ctx.sql(&sql).await?.collect().await?)?;
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
}
