//! End-to-end latency of knn() through the SQL layer against the engine's own search, on
//! the first 100,000 rows of minilm-words with an HNSW index: one query at a time, p50 and
//! p99 over the dataset's queries. Prints one JSON object per measurement.
//!
//! cargo bench --workspace --bench sql_latency

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch,
};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{ParamValues, ScalarValue};
use futures::TryStreamExt;
use omendb::{CollectionOptions, Database, SearchRequest};

fn percentiles(mut us: Vec<f64>) -> (f64, f64) {
    us.sort_by(f64::total_cmp);
    (us[us.len() / 2], us[us.len() * 99 / 100])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let data = omendb_testkit::dataset("minilm-words");
    let dim = data.base.cols;
    let n = data.base.rows.min(100_000);
    let tmp = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open(tmp.path()).unwrap());
    let vectors = FixedSizeListArray::new(
        Arc::new(Field::new("item", DataType::Float32, true)),
        dim as i32,
        Arc::new(Float32Array::from(data.base.data[..n * dim].to_vec())),
        None,
    );
    let batch = RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(Int64Array::from_iter_values(0..n as i64)) as ArrayRef,
        ),
        ("vector", Arc::new(vectors) as ArrayRef),
    ])
    .unwrap();
    let c = db
        .create_collection("bench", &batch.schema(), CollectionOptions::default())
        .unwrap();
    c.append(&[batch]).unwrap();
    c.wait_for_indexing();
    assert_eq!(c.stats().unwrap().index_kinds, ["hnsw"]);
    let ctx = omendb_datafusion::session(db.clone()).unwrap();
    let queries: Vec<&[f32]> = data.queries.data.chunks(dim).take(1000).collect();
    let snapshot = c.snapshot();

    let mut engine = Vec::new();
    for q in &queries {
        let t = Instant::now();
        let hits = snapshot.search(&SearchRequest::new(q, 10)).unwrap();
        snapshot.hits_to_batch(&hits[0]).unwrap();
        engine.push(t.elapsed().as_secs_f64() * 1e6);
    }

    // Bound: prepared once, as a server prepares a statement; each query binds and runs.
    let prepared = omendb_datafusion::Prepared::new(&ctx, "SELECT * FROM knn('bench', $1, 10)")
        .await
        .unwrap();
    assert!(prepared.binds_planned_searches());
    let mut bound = Vec::new();
    for q in &queries {
        let t = Instant::now();
        let list = ScalarValue::List(Arc::new(
            datafusion::arrow::array::ListArray::from_iter_primitive::<
                datafusion::arrow::datatypes::Float32Type,
                _,
                _,
            >([Some(q.iter().map(|v| Some(*v)))]),
        ));
        let rows: Vec<RecordBatch> = prepared
            .execute(ParamValues::List(vec![list.into()]))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(rows.iter().map(RecordBatch::num_rows).sum::<usize>(), 10);
        bound.push(t.elapsed().as_secs_f64() * 1e6);
    }

    // Literal: the vector pasted into the SQL text, parsed and planned every time.
    let mut literal = Vec::new();
    for q in &queries {
        let text: Vec<String> = q.iter().map(|v| v.to_string()).collect();
        let sql = format!("SELECT * FROM knn('bench', [{}], 10)", text.join(", "));
        let t = Instant::now();
        ctx.sql(&sql).await.unwrap().collect().await.unwrap();
        literal.push(t.elapsed().as_secs_f64() * 1e6);
    }

    let (e50, e99) = percentiles(engine);
    for (name, us) in [
        ("engine_search", None),
        ("sql_bound", Some(bound)),
        ("sql_literal", Some(literal)),
    ] {
        let (p50, p99) = match us {
            None => (e50, e99),
            Some(us) => percentiles(us),
        };
        println!(
            "{{\"bench\":\"{name}\",\"rows\":{n},\"queries\":{},\"p50_us\":{p50:.1},\"p99_us\":{p99:.1},\"p50_over_engine_us\":{:.1}}}",
            queries.len(),
            p50 - e50
        );
    }
}
