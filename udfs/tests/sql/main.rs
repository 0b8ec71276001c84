//! SQL over collections: knn() equals brute force, joins with CSV, distance functions, errors.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, ArrowPrimitiveType, AsArray, FixedSizeListBuilder, Float32Builder, Int64Array,
    RecordBatch, StringArray,
};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{Float32Type, Int64Type};
use datafusion::prelude::SessionContext;
use omendb::{CollectionOptions, Database, Metric};

const DIM: usize = 8;

fn vector(i: u64) -> Vec<f32> {
    omendb_testkit::vector_in_steps(i, DIM, 1000)
}

fn batch(ids: std::ops::Range<i64>) -> RecordBatch {
    let mut vb = FixedSizeListBuilder::new(Float32Builder::new(), DIM as i32);
    for i in ids.clone() {
        vb.values().append_slice(&vector(i as u64));
        vb.append(true);
    }
    omendb_testkit::id_vector_text_batch(ids, ("vec", Arc::new(vb.finish())), "tag", |i| {
        format!("t{}", i % 5)
    })
}

fn literal(v: &[f32]) -> String {
    format!(
        "[{}]",
        v.iter()
            .map(|x| format!("{x:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

async fn setup(metric: Metric) -> (tempfile::TempDir, SessionContext) {
    let tmp = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open(tmp.path()).unwrap());
    let c = db
        .create_collection(
            "docs",
            &batch(0..1).schema(),
            CollectionOptions {
                metric,
                ..Default::default()
            },
        )
        .unwrap();
    c.append(&[batch(0..600)]).unwrap();
    c.append(&[batch(600..1000)]).unwrap();
    c.delete(&Int64Array::from(vec![1, 2, 3])).unwrap();
    let ctx = omendb_datafusion::session(db).unwrap();
    (tmp, ctx)
}

async fn query(ctx: &SessionContext, sql: &str) -> RecordBatch {
    let df = ctx.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.unwrap();
    concat_batches(&schema, &batches).unwrap()
}

/// The values of primitive column `name` of `b`.
fn column<T: ArrowPrimitiveType>(b: &RecordBatch, name: &str) -> Vec<T::Native> {
    b.column_by_name(name)
        .unwrap()
        .as_primitive::<T>()
        .values()
        .to_vec()
}

fn int_column(b: &RecordBatch, name: &str) -> Vec<i64> {
    column::<Int64Type>(b, name)
}

fn float_column(b: &RecordBatch, name: &str) -> Vec<f32> {
    column::<Float32Type>(b, name)
}

fn brute_force(q: &[f32], k: usize, metric: Metric) -> Vec<i64> {
    brute_force_where(q, k, metric, |_| true)
}

/// The exact k nearest of the rows `setup` stores that `keep` accepts.
fn brute_force_where(q: &[f32], k: usize, metric: Metric, keep: impl Fn(i64) -> bool) -> Vec<i64> {
    let mut all: Vec<(f64, i64)> = (0..1000)
        .filter(|i| ![1, 2, 3].contains(i) && keep(*i))
        .map(|i| {
            let v = vector(i as u64);
            let dot: f64 = v.iter().zip(q).map(|(a, b)| *a as f64 * *b as f64).sum();
            let nv = v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
            let nq = q.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
            let l2: f64 = v
                .iter()
                .zip(q)
                .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
                .sum();
            let d = match metric {
                Metric::Cosine => 1.0 - dot / (nv * nq),
                Metric::L2 => l2,
                Metric::Dot => -dot,
            };
            (d, i)
        })
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    all.into_iter().take(k).map(|x| x.1).collect()
}

#[tokio::test]
async fn knn_equals_brute_force_for_every_metric() {
    for metric in [Metric::Cosine, Metric::L2, Metric::Dot] {
        let (_tmp, ctx) = setup(metric).await;
        for qi in 0..20 {
            let q = vector(50_000 + qi);
            let got = query(
                &ctx,
                &format!("SELECT id, _distance FROM knn('docs', {}, 7)", literal(&q)),
            )
            .await;
            assert_eq!(
                int_column(&got, "id"),
                brute_force(&q, 7, metric),
                "{metric} query {qi}"
            );
            let d = float_column(&got, "_distance");
            assert!(d.windows(2).all(|w| w[0] <= w[1]));
        }
    }
}

#[tokio::test]
async fn collections_are_tables_and_distance_functions_agree_with_knn() {
    let (_tmp, ctx) = setup(Metric::L2).await;
    let n = query(&ctx, "SELECT count(*) AS n FROM docs").await;
    assert_eq!(int_column(&n, "n"), vec![997]);
    let q = vector(77);
    for (f, metric) in [
        ("l2_distance", Metric::L2),
        ("cosine_distance", Metric::Cosine),
    ] {
        let got = query(
            &ctx,
            &format!(
                "SELECT id FROM docs ORDER BY {f}(vec, {}) LIMIT 5",
                literal(&q)
            ),
        )
        .await;
        assert_eq!(int_column(&got, "id"), brute_force(&q, 5, metric), "{f}");
    }
    let got = query(
        &ctx,
        &format!(
            "SELECT id FROM docs ORDER BY inner_product(vec, {}) DESC LIMIT 5",
            literal(&q)
        ),
    )
    .await;
    assert_eq!(int_column(&got, "id"), brute_force(&q, 5, Metric::Dot));
    let scalar = query(&ctx, "SELECT l2_distance([0.0, 3.0], [4.0, 0.0]) AS d").await;
    assert_eq!(float_column(&scalar, "d")[0], 5.0);
}

#[tokio::test]
async fn knn_joins_with_a_csv_table_and_aggregates() {
    let (tmp, ctx) = setup(Metric::Cosine).await;
    let csv = tmp.path().join("tags.csv");
    let rows: String = (0..5).map(|t| format!("t{t},{}\n", t * 10)).collect();
    std::fs::write(&csv, format!("tag,weight\n{rows}")).unwrap();
    ctx.register_csv("tags", csv.to_str().unwrap(), Default::default())
        .await
        .unwrap();
    let q = vector(5);
    let got = query(
        &ctx,
        &format!(
            "SELECT t.tag, count(*) AS n, sum(t.weight) AS w FROM knn('docs', {}, 40) k \
             JOIN tags t ON k.tag = t.tag GROUP BY t.tag ORDER BY t.tag",
            literal(&q)
        ),
    )
    .await;
    let nearest = brute_force(&q, 40, Metric::Cosine);
    let mut want = std::collections::BTreeMap::new();
    for id in nearest {
        let e = want.entry(format!("t{}", id % 5)).or_insert((0i64, 0i64));
        e.0 += 1;
        e.1 += (id % 5) * 10;
    }
    let tags: Vec<String> = got
        .column_by_name("tag")
        .map(|c| {
            datafusion::arrow::compute::cast(c, &datafusion::arrow::datatypes::DataType::Utf8)
                .unwrap()
        })
        .map(|c| {
            c.as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .iter()
                .map(|s| s.unwrap().to_string())
                .collect()
        })
        .unwrap();
    assert_eq!(tags, want.keys().cloned().collect::<Vec<_>>());
    assert_eq!(
        int_column(&got, "n"),
        want.values().map(|v| v.0).collect::<Vec<_>>()
    );
    let w = got.column_by_name("w").unwrap();
    let w = datafusion::arrow::compute::cast(w, &datafusion::arrow::datatypes::DataType::Int64)
        .unwrap();
    let w: Vec<i64> = w.as_primitive::<Int64Type>().values().to_vec();
    assert_eq!(w, want.values().map(|v| v.1).collect::<Vec<_>>());
}

#[tokio::test]
async fn knn_errors_name_the_problem() {
    let (_tmp, ctx) = setup(Metric::Cosine).await;
    let cases = [
        (
            "SELECT * FROM knn('nope', [1.0, 2.0], 3)",
            "collection 'nope'",
        ),
        ("SELECT * FROM knn('docs', [1.0, 2.0], 3)", "dimension 2"),
        ("SELECT * FROM knn('docs', 'x', 3)", "array of numbers"),
        (
            "SELECT * FROM knn('docs', [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], -1)",
            "non-negative integer",
        ),
        (
            "SELECT * FROM knn('docs', [1.0])",
            "expected 3 to 5 arguments",
        ),
        (
            "SELECT * FROM knn('../x', [1.0], 3)",
            "invalid collection name",
        ),
        (
            "SELECT * FROM knn('docs', [1.0], 3, fast => 'yes')",
            "fast must be true or false, got 'yes'",
        ),
        (
            "SELECT * FROM knn('docs', [1.0], 3, speed => 2)",
            "no argument is named speed (named arguments: ef, nprobe, fast)",
        ),
        (
            "SELECT * FROM knn('docs', [1.0], fast => true, 3)",
            "the positional argument 3 follows a named one",
        ),
        (
            "SELECT * FROM knn('docs', [1.0], 3, 40, ef => 50)",
            "ef is given twice, by position and by name",
        ),
    ];
    for (sql, needle) in cases {
        let err = match ctx.sql(sql).await {
            Ok(df) => df.collect().await.unwrap_err(),
            Err(e) => e,
        };
        assert!(err.to_string().contains(needle), "{sql}: {err}");
    }
    let err = ctx
        .sql("SELECT * FROM knn('nope', [1.0], 3)")
        .await
        .unwrap_err();
    assert!(
        matches!(
            omendb_datafusion::find_engine_error(&err),
            Some(omendb::Error::NotFound(_))
        ),
        "{err}"
    );
}

/// The rows `setup` stores (1,000 less ids 1, 2, 3) in one segment with an HNSW index.
fn indexed_setup() -> (tempfile::TempDir, SessionContext) {
    let tmp = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open(tmp.path()).unwrap());
    let c = db
        .create_collection("docs", &batch(0..1).schema(), CollectionOptions::default())
        .unwrap();
    c.append(&[batch(0..1000)]).unwrap();
    c.delete(&Int64Array::from(vec![1, 2, 3])).unwrap();
    assert_eq!(c.build_index(1).unwrap(), 1);
    let ctx = omendb_datafusion::session(db).unwrap();
    (tmp, ctx)
}

#[tokio::test]
async fn knn_uses_an_hnsw_index_with_a_per_query_ef() {
    let (_tmp, ctx) = indexed_setup();
    for qi in 0..10 {
        let q = vector(70_000 + qi);
        // A beam of 500 over 1,000 rows finds the exact neighbours.
        let got = query(
            &ctx,
            &format!("SELECT id FROM knn('docs', {}, 5, 500)", literal(&q)),
        )
        .await;
        assert_eq!(
            int_column(&got, "id"),
            brute_force(&q, 5, Metric::Cosine),
            "query {qi}"
        );
    }
    let err = ctx
        .sql("SELECT * FROM knn('docs', [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], 3, 0)")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("ef must be a positive integer"),
        "{err}"
    );
}

/// `fast => true` searches the indexed segments only (LanceDB's fast_search): rows not yet
/// indexed are not found, and EXPLAIN says so; options by name equal them by position.
#[tokio::test]
async fn knn_fast_searches_only_what_is_indexed() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open(tmp.path()).unwrap());
    // No merge folds the fresh row into the graph while the test runs.
    let mut options = CollectionOptions::default();
    options.index.compaction.enabled = false;
    let c = db
        .create_collection("docs", &batch(0..1).schema(), options)
        .unwrap();
    // Before any index, a fast search has nothing else to search: it searches everything.
    c.append(&[batch(0..1000)]).unwrap();
    let ctx = omendb_datafusion::session(db.clone()).unwrap();
    let q = vector(500);
    let sql = |options: &str| format!("SELECT id FROM knn('docs', {}, 5{options})", literal(&q));
    let all = int_column(&query(&ctx, &sql("")).await, "id");
    assert_eq!(all[0], 500);
    assert_eq!(
        int_column(&query(&ctx, &sql(", fast => true")).await, "id"),
        all
    );
    // Indexed, then a fresh segment holding the query's exact match.
    assert_eq!(c.build_index(1).unwrap(), 1);
    c.append(&[batch(5000..5001)]).unwrap();
    let target = vector(5000);
    let sql = |options: &str| {
        format!(
            "SELECT id FROM knn('docs', {}, 3{options})",
            literal(&target)
        )
    };
    let every = int_column(&query(&ctx, &sql("")).await, "id");
    assert_eq!(every[0], 5000);
    let fast = int_column(&query(&ctx, &sql(", fast => true")).await, "id");
    assert_eq!(fast.len(), 3);
    assert!(!fast.contains(&5000), "{fast:?}");
    for options in [", FAST => false, ef => 64", ", nprobe => 4"] {
        assert_eq!(int_column(&query(&ctx, &sql(options)).await, "id"), every);
    }
    assert_eq!(
        int_column(&query(&ctx, &sql(", ef => 500")).await, "id"),
        int_column(&query(&ctx, &sql(", 500")).await, "id")
    );
    let plan = query(&ctx, &format!("EXPLAIN {}", sql(", fast => true"))).await;
    let plan = datafusion::arrow::util::pretty::pretty_format_batches(&[plan])
        .unwrap()
        .to_string();
    assert!(plan.contains("fast (indexed segments only)"), "{plan}");
}

#[tokio::test]
async fn knn_takes_a_per_query_nprobe_on_an_ivf_index() {
    use datafusion::common::{ParamValues, ScalarValue};
    let tmp = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open(tmp.path()).unwrap());
    let mut options = CollectionOptions::default();
    options.index.kind = omendb::IndexKind::Ivf;
    options.index.quant = omendb::QuantKind::None;
    options.index.ivf.nlist = 20;
    options.index.ivf.nprobe = 1;
    let c = db
        .create_collection("docs", &batch(0..1).schema(), options)
        .unwrap();
    c.append(&[batch(0..1000)]).unwrap();
    assert_eq!(c.build_index(1).unwrap(), 1);
    let ctx = omendb_datafusion::session(db).unwrap();
    let (mut one, mut all) = (0, 0);
    for qi in 0..10 {
        let q = vector(90_000 + qi);
        let want = brute_force(&q, 10, Metric::Cosine);
        let found = |got: &RecordBatch| {
            int_column(got, "id")
                .iter()
                .filter(|id| want.contains(id))
                .count()
        };
        // Every list scanned exactly (no codes): the exact neighbours.
        let every = query(
            &ctx,
            &format!("SELECT id FROM knn('docs', {}, 10, 100, 20)", literal(&q)),
        )
        .await;
        assert_eq!(int_column(&every, "id"), want, "query {qi}");
        all += found(&every);
        one += found(
            &query(
                &ctx,
                &format!("SELECT id FROM knn('docs', {}, 10, 100)", literal(&q)),
            )
            .await,
        );
        // A bound nprobe reaches the search as a literal one does.
        let plan = ctx
            .state()
            .create_logical_plan("SELECT id FROM knn('docs', $1, 10, 100, $2)")
            .await
            .unwrap();
        let vector = list_param(&q);
        let bound = plan
            .with_param_values(ParamValues::List(vec![
                vector,
                ScalarValue::Int64(Some(20)).into(),
            ]))
            .unwrap();
        let df = ctx.execute_logical_plan(bound).await.unwrap();
        let schema = Arc::new(df.schema().as_arrow().clone());
        let got = concat_batches(&schema, &df.collect().await.unwrap()).unwrap();
        assert_eq!(got, every, "query {qi}, bound nprobe");
    }
    // The collection's nprobe of 1 scans one list of 20: most true neighbours are elsewhere.
    assert_eq!(all, 100);
    assert!(one < all, "nprobe 1 found {one} of {all}");
    // knn_join takes nprobe after ef too: every list scanned gives each query row its exact
    // neighbours; the collection's one list does not.
    let picks: Vec<u64> = (0..10).map(|qi| 90_000 + qi).collect();
    let mut vb = FixedSizeListBuilder::new(Float32Builder::new(), DIM as i32);
    for &p in &picks {
        vb.values().append_slice(&vector(p));
        vb.append(true);
    }
    let queries =
        RecordBatch::try_from_iter(vec![("vector", Arc::new(vb.finish()) as ArrayRef)]).unwrap();
    ctx.register_batch("queries", queries).unwrap();
    let join = |tail: &str| {
        format!("SELECT id FROM knn_join((SELECT * FROM queries), 'vector', 'docs', 10{tail})")
    };
    let want: Vec<i64> = picks
        .iter()
        .flat_map(|&p| brute_force(&vector(p), 10, Metric::Cosine))
        .collect();
    assert_eq!(
        int_column(&query(&ctx, &join(", 100, 20")).await, "id"),
        want
    );
    assert_ne!(int_column(&query(&ctx, &join(", 100")).await, "id"), want);
    let plan = explain(&ctx, &join(", 100, 7")).await;
    assert!(plan.contains("k=10, nprobe=7"), "{plan}");
    let err = ctx.sql(&join(", 100, 0")).await.unwrap_err().to_string();
    assert!(err.contains("nprobe must be a positive integer"), "{err}");
    let plan = explain(
        &ctx,
        &format!(
            "SELECT id FROM knn('docs', {}, 10, 100, 7)",
            literal(&vector(1))
        ),
    )
    .await;
    assert!(plan.contains("nprobe=7"), "{plan}");
    let err = ctx
        .sql(&format!(
            "SELECT * FROM knn('docs', {}, 3, 10, 0)",
            literal(&vector(1))
        ))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("nprobe must be a positive integer"),
        "{err}"
    );
}

#[tokio::test]
async fn where_on_knn_is_a_prefilter() {
    let (_tmp, ctx) = setup(Metric::Cosine).await;
    let q = vector(80_001);
    let lit = literal(&q);
    let check = |got: &RecordBatch, want: Vec<i64>, what: &str| {
        assert_eq!(int_column(got, "id"), want, "{what}");
    };
    // 10 rows come back although most of the 10 nearest rows have other tags.
    let got = query(
        &ctx,
        &format!("SELECT id, tag FROM knn('docs', {lit}, 10) WHERE tag = 't3'"),
    )
    .await;
    check(
        &got,
        brute_force_where(&q, 10, Metric::Cosine, |i| i % 5 == 3),
        "tag = 't3'",
    );
    // Several conditions; deleted rows stay out.
    let got = query(
        &ctx,
        &format!("SELECT id FROM knn('docs', {lit}, 10) WHERE id < 40 AND tag IN ('t1', 't2')"),
    )
    .await;
    check(
        &got,
        brute_force_where(&q, 10, Metric::Cosine, |i| {
            i < 40 && [1, 2].contains(&(i % 5))
        }),
        "id < 40 AND tag IN (..)",
    );
    // Fewer matches than k: all of them, nearest first.
    let got = query(
        &ctx,
        &format!("SELECT id FROM knn('docs', {lit}, 10) WHERE id IN (5, 600, 999, 2)"),
    )
    .await;
    check(
        &got,
        brute_force_where(&q, 10, Metric::Cosine, |i| [5, 600, 999].contains(&i)),
        "id IN (..)",
    );
    // A condition on _distance applies to the result, after the search.
    let all = query(
        &ctx,
        &format!("SELECT id, _distance FROM knn('docs', {lit}, 10)"),
    )
    .await;
    let d = float_column(&all, "_distance")[4];
    let got = query(
        &ctx,
        &format!("SELECT id FROM knn('docs', {lit}, 10) WHERE _distance <= {d:?}"),
    )
    .await;
    check(&got, brute_force(&q, 5, Metric::Cosine), "_distance <= d");
}

#[tokio::test]
async fn where_on_knn_through_an_index() {
    let (_tmp, ctx) = indexed_setup();
    for (cond, keep) in [
        ("tag <> 't0'", (|i: i64| i % 5 != 0) as fn(i64) -> bool),
        ("tag = 't4'", |i: i64| i % 5 == 4),
        ("id % 100 = 7", |i: i64| i % 100 == 7),
    ] {
        let q = vector(90_001);
        let got = query(
            &ctx,
            &format!(
                "SELECT id FROM knn('docs', {}, 10, 500) WHERE {cond}",
                literal(&q)
            ),
        )
        .await;
        assert_eq!(
            int_column(&got, "id"),
            brute_force_where(&q, 10, Metric::Cosine, keep),
            "{cond}"
        );
    }
    let err = ctx
        .sql("SELECT id FROM knn('docs', [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], 3) WHERE nope = 2")
        .await;
    let err = match err {
        Err(e) => e.to_string(),
        Ok(df) => df.collect().await.unwrap_err().to_string(),
    };
    assert!(err.contains("nope"), "{err}");
}

/// The text of an EXPLAIN's plans.
async fn explain(ctx: &SessionContext, sql: &str) -> String {
    explain_as(ctx, "EXPLAIN", sql).await
}

/// The text of `how` (EXPLAIN, EXPLAIN ANALYZE...) of `sql`.
async fn explain_as(ctx: &SessionContext, how: &str, sql: &str) -> String {
    let b = query(ctx, &format!("{how} {sql}")).await;
    datafusion::arrow::util::pretty::pretty_format_batches(&[b])
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn explain_shows_the_knn_exec_without_searching() {
    let (_tmp, ctx) = indexed_setup();
    let q = literal(&vector(77));
    // The filter is pushed into the scan of the call, and the search is a KnnExec.
    let cases = [
        (
            "EXPLAIN",
            format!("SELECT id FROM knn('docs', {q}, 5, 40) WHERE tag = 't2'"),
            &[
                "TableScan: knn() projection=[id], full_filters=[knn().tag = Utf8(\"t2\")]",
                "KnnExec: collection=docs, k=5, ef=40, metric=cosine, segments=[hnsw]",
                "filter=tag = Utf8(\"t2\")",
            ][..],
        ),
        // EXPLAIN ANALYZE runs it and reports what it did.
        (
            "EXPLAIN ANALYZE",
            format!("SELECT id FROM knn('docs', {q}, 5)"),
            &["segments=1", "segments_by_index=1", "rows_selected=997"],
        ),
        // A selective filter on the indexed segment is answered by an exact pass over its rows.
        (
            "EXPLAIN ANALYZE",
            format!("SELECT id FROM knn('docs', {q}, 5) WHERE id < 20"),
            &["segments_by_rows=1", "rows_scanned=17"],
        ),
    ];
    for (how, sql, wants) in cases {
        let text = explain_as(&ctx, how, &sql).await;
        for want in wants {
            assert!(text.contains(want), "{text}");
        }
    }
}

#[tokio::test]
async fn bound_parameters_reach_the_search() {
    use datafusion::common::ParamValues;
    use datafusion::common::ScalarValue;
    let (_tmp, ctx) = setup(Metric::Cosine).await;
    let q = vector(4242);
    let literal_rows = query(
        &ctx,
        &format!(
            "SELECT id, _distance FROM knn('docs', {}, 7) WHERE tag = 't3'",
            literal(&q)
        ),
    )
    .await;
    let as_list = list_param(&q);

    // Through the DataFrame API, as a Flight SQL server binds a prepared statement.
    let sql = "SELECT id, _distance FROM knn('docs', $1, $2) WHERE tag = 't3'";
    let plan = ctx.state().create_logical_plan(sql).await.unwrap();
    let types = plan.get_parameter_types().unwrap();
    assert_eq!(
        types.get("$1").cloned().flatten(),
        Some(datafusion::arrow::datatypes::DataType::List(Arc::new(
            datafusion::arrow::datatypes::Field::new(
                "item",
                datafusion::arrow::datatypes::DataType::Float32,
                true
            )
        ))),
        "{types:?}"
    );
    assert_eq!(
        types.get("$2").cloned().flatten(),
        Some(datafusion::arrow::datatypes::DataType::Int64)
    );
    let bound = plan
        .with_param_values(ParamValues::List(vec![
            as_list.clone(),
            ScalarValue::Int64(Some(7)).into(),
        ]))
        .unwrap();
    let df = ctx.execute_logical_plan(bound).await.unwrap();
    let schema = Arc::new(df.schema().as_arrow().clone());
    let got = concat_batches(&schema, &df.collect().await.unwrap()).unwrap();
    assert_eq!(got, literal_rows);

    // Through SQL PREPARE / EXECUTE.
    ctx.sql("PREPARE near(FLOAT[], BIGINT) AS SELECT id, _distance FROM knn('docs', $1, $2) WHERE tag = 't3'")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let got = query(&ctx, &format!("EXECUTE near({}, 7)", literal(&q))).await;
    assert_eq!(int_column(&got, "id"), int_column(&literal_rows, "id"));

    // A parameter left unbound, or of the wrong kind, is refused naming it.
    let err = ctx
        .sql("SELECT id FROM knn('docs', $1, 3)")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("parameter $1, which has no value"), "{err}");
    let plan = ctx
        .state()
        .create_logical_plan("SELECT id FROM knn('docs', $1, 3)")
        .await
        .unwrap()
        .with_param_values(ParamValues::List(vec![ScalarValue::Int64(Some(3)).into()]));
    let err = match plan {
        Err(e) => e.to_string(),
        Ok(p) => ctx
            .execute_logical_plan(p)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err()
            .to_string(),
    };
    assert!(
        err.contains("query vector must be an array of numbers"),
        "{err}"
    );
}

#[tokio::test]
async fn order_by_distance_limit_is_a_knn_search() {
    let flat = setup(Metric::Cosine).await;
    let indexed = indexed_setup();
    for (_tmp, ctx) in [&flat, &indexed] {
        for qi in 0..5 {
            let q = literal(&vector(90_000 + qi));
            let knn = query(
                ctx,
                &format!("SELECT id FROM knn('docs', {q}, 8, 400) WHERE tag <> 't1'"),
            )
            .await;
            let sql = format!(
                "SELECT id, cosine_distance(vec, {q}) AS d FROM docs WHERE tag <> 't1' \
                 ORDER BY d LIMIT 8"
            );
            let ordered = query(ctx, &sql).await;
            assert_eq!(
                int_column(&ordered, "id"),
                int_column(&knn, "id"),
                "query {qi}"
            );
            // The distance column is the user's expression, in ascending order.
            let d = float_column(&ordered, "d");
            assert!(d.windows(2).all(|w| w[0] <= w[1]), "{d:?}");
            let plan = explain(ctx, &sql).await;
            assert!(plan.contains("KnnExec: collection=docs, k=8"), "{plan}");
            assert!(plan.contains("filter=tag != Utf8(\"t1\")"), "{plan}");
        }
    }
    // The expression itself in ORDER BY, and SELECT *, rewrite too.
    let (_tmp, ctx) = &flat;
    let q = literal(&vector(123));
    let sql = format!("SELECT * FROM docs ORDER BY cosine_distance(vec, {q}) LIMIT 3");
    let got = query(ctx, &sql).await;
    assert_eq!(
        got.num_columns(),
        3,
        "no _distance column leaks into SELECT *"
    );
    assert_eq!(
        int_column(&got, "id"),
        brute_force(&vector(123), 3, Metric::Cosine)
    );
    assert!(explain(ctx, &sql).await.contains("KnnExec"));
    // A distance that is not the collection's metric stays a full sort, still correct.
    let sql = format!("SELECT id FROM docs ORDER BY l2_distance(vec, {q}) LIMIT 3");
    let plan = explain(ctx, &sql).await;
    assert!(
        !plan.contains("KnnExec") && plan.contains("SortExec"),
        "{plan}"
    );
    assert_eq!(
        int_column(&query(ctx, &sql).await, "id"),
        brute_force(&vector(123), 3, Metric::L2)
    );
}

#[tokio::test]
async fn order_by_inner_product_desc_and_a_bound_vector() {
    let (_tmp, ctx) = setup(Metric::Dot).await;
    let q = vector(555);
    let knn = query(
        &ctx,
        &format!("SELECT id FROM knn('docs', {}, 6)", literal(&q)),
    )
    .await;
    let sql = "SELECT id FROM docs ORDER BY inner_product(vec, $1) DESC LIMIT 6";
    let (got, shown) = run_omen_sql(&ctx, sql, vec![list_param(&q)]).await;
    assert!(shown.contains("KnnExec: collection=docs, k=6"), "{shown}");
    assert_eq!(int_column(&got, "id"), int_column(&knn, "id"));
    assert_eq!(int_column(&got, "id"), brute_force(&q, 6, Metric::Dot));
}

/// The single `count` value of a DML result.
async fn count_of(ctx: &SessionContext, sql: &str) -> u64 {
    let b = query(ctx, sql).await;
    b.column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::UInt64Array>()
        .unwrap_or_else(|| panic!("{sql}: {b:?}"))
        .value(0)
}

#[tokio::test]
async fn dml_creates_inserts_updates_deletes_and_drops() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open(tmp.path()).unwrap());
    let ctx = omendb_datafusion::session(db.clone()).unwrap();
    query(
        &ctx,
        "CREATE EXTERNAL TABLE notes (id BIGINT NOT NULL, vec FLOAT[4] NOT NULL, note VARCHAR) \
         STORED AS OMENDB LOCATION 'notes' OPTIONS ('metric' 'l2', 'index_threshold' '0')",
    )
    .await;
    assert_eq!(db.collection("notes").unwrap().metric(), Metric::L2);
    let n = count_of(
        &ctx,
        "INSERT INTO notes VALUES (1, [1.0, 0.0, 0.0, 0.0], 'a'), (2, [0.0, 1.0, 0.0, 0.0], 'b')",
    )
    .await;
    assert_eq!(n, 2);
    let near = |q: &'static str| {
        let ctx = ctx.clone();
        async move {
            int_column(
                &query(&ctx, &format!("SELECT id FROM knn('notes', {q}, 1)")).await,
                "id",
            )
        }
    };
    assert_eq!(near("[0.9, 0.1, 0.0, 0.0]").await, vec![1]);
    assert_eq!(
        count_of(
            &ctx,
            "INSERT INTO notes SELECT id + 10, vec, note FROM notes"
        )
        .await,
        2
    );
    // A duplicate id is refused and nothing of the statement is written.
    let err = ctx
        .sql("INSERT INTO notes VALUES (3, [0.0, 0.0, 1.0, 0.0], 'c'), (1, [0.0, 0.0, 0.0, 1.0], 'd')")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("duplicate id 1"), "{err}");
    assert_eq!(db.collection("notes").unwrap().count(), 4);
    // DELETE with a predicate.
    assert_eq!(count_of(&ctx, "DELETE FROM notes WHERE id > 10").await, 2);
    assert_eq!(db.collection("notes").unwrap().count(), 2);
    // UPDATE keeps one row per id, with the new value, and moves a vector.
    assert_eq!(
        count_of(
            &ctx,
            "UPDATE notes SET note = 'z', vec = [0.0, 0.0, 0.0, 1.0] WHERE id = 1"
        )
        .await,
        1
    );
    let got = query(&ctx, "SELECT id, note FROM notes ORDER BY id").await;
    assert_eq!(int_column(&got, "id"), vec![1, 2]);
    let notes = got
        .column_by_name("note")
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .map(|a| a.iter().map(|v| v.unwrap().to_string()).collect::<Vec<_>>())
        .unwrap_or_default();
    assert_eq!(notes, vec!["z", "b"]);
    assert_eq!(near("[0.0, 0.0, 0.1, 0.9]").await, vec![1]);
    // DROP TABLE drops the collection.
    query(&ctx, "DROP TABLE notes").await;
    assert!(!db.exists("notes"));
}

#[tokio::test]
async fn the_query_vector_can_come_from_a_subquery() {
    let (_tmp, ctx) = setup(Metric::Cosine).await;
    let sql = "SELECT id FROM knn('docs', (SELECT vec FROM docs WHERE id = 42), 5) WHERE id <> 42";
    let got = query(&ctx, sql).await;
    let want: Vec<i64> = brute_force(&vector(42), 6, Metric::Cosine)
        .into_iter()
        .filter(|&i| i != 42)
        .take(5)
        .collect();
    assert_eq!(int_column(&got, "id"), want);
    assert!(explain(&ctx, sql).await.contains("query=from its input"));
    // Not exactly one row: refused, saying so.
    for (sql, needle) in [
        (
            "SELECT id FROM knn('docs', (SELECT vec FROM docs WHERE id < 10), 5)",
            "exactly one row, it returned 7",
        ),
        (
            "SELECT id FROM knn('docs', (SELECT vec FROM docs WHERE id = -1), 5)",
            "exactly one row, it returned 0",
        ),
    ] {
        let err = ctx
            .sql(sql)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{sql}: {err}");
    }
}

#[tokio::test]
async fn knn_join_searches_every_row_of_a_query_table() {
    let (_tmp, ctx) = setup(Metric::Cosine).await;
    let picks = [5_000u64, 5_001, 5_002];
    let mut vb = FixedSizeListBuilder::new(Float32Builder::new(), DIM as i32);
    for &p in &picks {
        vb.values().append_slice(&vector(p));
        vb.append(true);
    }
    let queries = RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(Int64Array::from(vec![100, 101, 102])) as ArrayRef,
        ),
        ("vector", Arc::new(vb.finish()) as ArrayRef),
    ])
    .unwrap();
    ctx.register_batch("queries", queries).unwrap();
    let got = query(
        &ctx,
        "SELECT query_id, id, _distance FROM knn_join((SELECT * FROM queries), 'vector', 'docs', 4)",
    )
    .await;
    assert_eq!(got.num_rows(), 12);
    let qids = int_column(&got, "query_id");
    let ids = int_column(&got, "id");
    for (i, &p) in picks.iter().enumerate() {
        assert!(qids[i * 4..(i + 1) * 4]
            .iter()
            .all(|&q| q == 100 + i as i64));
        assert_eq!(
            &ids[i * 4..(i + 1) * 4],
            brute_force(&vector(p), 4, Metric::Cosine).as_slice()
        );
    }
    let plan = explain(
        &ctx,
        "SELECT * FROM knn_join((SELECT * FROM queries), 'vector', 'docs', 4)",
    )
    .await;
    assert!(
        plan.contains("KnnJoinExec: collection=docs, query column=vector, k=4"),
        "{plan}"
    );
    let err = ctx
        .sql("SELECT * FROM knn_join((SELECT * FROM queries), 'nope', 'docs', 4)")
        .await
        .unwrap_err()
        .to_string();
    // knn_join's own usage follows, not knn()'s.
    assert!(
        err.contains("knn_join(): the query table has no column 'nope' (it has id, vector)")
            && err.contains("usage: knn_join((SELECT")
            && !err.contains("knn():"),
        "{err}"
    );
}

fn list_param(q: &[f32]) -> datafusion::common::metadata::ScalarAndMetadata {
    datafusion::common::ScalarValue::List(Arc::new(
        datafusion::arrow::array::ListArray::from_iter_primitive::<
            datafusion::arrow::datatypes::Float32Type,
            _,
            _,
        >([Some(q.iter().map(|v| Some(*v)))]),
    ))
    .into()
}

async fn run_prepared(
    p: &omendb_datafusion::Prepared,
    values: Vec<datafusion::common::metadata::ScalarAndMetadata>,
) -> datafusion::error::Result<RecordBatch> {
    use futures::TryStreamExt;
    let stream = p
        .execute(datafusion::common::ParamValues::List(values))
        .await?;
    let batches: Vec<RecordBatch> = stream.try_collect().await?;
    Ok(concat_batches(&p.schema(), &batches).unwrap())
}

#[tokio::test]
async fn a_prepared_search_binds_again_without_planning() {
    use datafusion::common::ScalarValue;
    let (_tmp, ctx) = setup(Metric::Cosine).await;
    let sql = "SELECT id, _distance FROM knn('docs', $1, $2) WHERE tag <> 't1' ORDER BY _distance";
    let p = omendb_datafusion::Prepared::new(&ctx, sql).await.unwrap();
    assert!(p.binds_planned_searches());
    // Each run equals the literal form, with other vectors and other k.
    for (i, k) in [(11_u64, 5_i64), (4242, 9), (77, 1), (11, 0)] {
        let q = vector(i);
        let got = run_prepared(&p, vec![list_param(&q), ScalarValue::Int64(Some(k)).into()])
            .await
            .unwrap();
        let want = query(
            &ctx,
            &format!(
                "SELECT id, _distance FROM knn('docs', {}, {k}) WHERE tag <> 't1' ORDER BY _distance",
                literal(&q)
            ),
        )
        .await;
        assert_eq!(got, want, "vector {i}, k {k}");
        let exact = brute_force_where(&q, k as usize, Metric::Cosine, |id| id % 5 != 1);
        assert_eq!(int_column(&got, "id"), exact);
    }
    // Bad values are refused on every run, naming what is wrong.
    let q = vector(6);
    let err = run_prepared(
        &p,
        vec![list_param(&q[..3]), ScalarValue::Int64(Some(3)).into()],
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("query vector has dimension 3"), "{err}");
    let err = run_prepared(
        &p,
        vec![list_param(&q), ScalarValue::Int64(Some(1_000_000)).into()],
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("exceeds the limit of 10000 rows (max_k)"),
        "{err}"
    );
    let err = run_prepared(&p, vec![list_param(&q)])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("No value found for placeholder with id $2"),
        "{err}"
    );

    // Statements the planned search cannot stand for are planned each run, still correct.
    for sql in [
        "SELECT id FROM docs ORDER BY cosine_distance(vec, $1) LIMIT 3",
        "SELECT id FROM knn('docs', $1, 3) WHERE id > 0 AND random() >= 0",
        "SELECT k.id FROM knn('docs', $1, 3) k JOIN docs d ON k.id = d.id",
    ] {
        let p = omendb_datafusion::Prepared::new(&ctx, sql).await.unwrap();
        assert!(!p.binds_planned_searches(), "{sql}");
        for i in [8_u64, 9] {
            let q = vector(i);
            let got = run_prepared(&p, vec![list_param(&q)]).await.unwrap();
            let mut ids = int_column(&got, "id");
            ids.sort();
            let mut want: Vec<i64> = brute_force(&q, 3, Metric::Cosine);
            want.sort();
            assert_eq!(ids, want, "{sql}");
        }
    }

    // Rows written after the first run are searched by later runs (a fresh snapshot each).
    let q = vector(5000);
    query(
        &ctx,
        &format!("INSERT INTO docs VALUES (5000, {}, 't0')", literal(&q)),
    )
    .await;
    let got = run_prepared(&p, vec![list_param(&q), ScalarValue::Int64(Some(3)).into()])
        .await
        .unwrap();
    assert_eq!(int_column(&got, "id")[0], 5000);
}

/// The rows of `sql` parsed as every OmenDB front end parses it (pgvector's operators
/// included), with `values` bound, and the physical plan that ran.
async fn run_omen_sql(
    ctx: &SessionContext,
    sql: &str,
    values: Vec<datafusion::common::metadata::ScalarAndMetadata>,
) -> (RecordBatch, String) {
    let plan = omendb_datafusion::sql::logical_plan(&ctx.state(), sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .with_param_values(datafusion::common::ParamValues::List(values))
        .unwrap();
    let df = ctx.execute_logical_plan(plan).await.unwrap();
    let physical = df.clone().create_physical_plan().await.unwrap();
    let shown = datafusion::physical_plan::displayable(physical.as_ref())
        .indent(false)
        .to_string();
    let schema = Arc::new(df.schema().as_arrow().clone());
    let got = concat_batches(&schema, &df.collect().await.unwrap()).unwrap();
    (got, shown)
}

#[tokio::test]
async fn pgvector_operators_are_distances_searched_on_the_index() {
    for (metric, op, alias) in [
        (Metric::Cosine, "<=>", "array_cosine_distance"),
        (Metric::L2, "<->", "array_distance"),
        (Metric::Dot, "<#>", "array_negative_inner_product"),
    ] {
        let (_tmp, ctx) = setup(metric).await;
        let q = vector(321);
        let want = brute_force(&q, 6, metric);
        for sql in [
            format!("SELECT id FROM docs ORDER BY vec {op} $1 LIMIT 6"),
            format!("SELECT id FROM docs ORDER BY vec{op}$1 LIMIT 6"),
            format!("SELECT id, vec {op} $1 AS d FROM docs ORDER BY d LIMIT 6"),
            format!("SELECT id FROM docs ORDER BY {alias}(vec, $1) LIMIT 6"),
        ] {
            let (got, plan) = run_omen_sql(&ctx, &sql, vec![list_param(&q)]).await;
            assert!(
                plan.contains("KnnExec: collection=docs, k=6"),
                "{sql}: {plan}"
            );
            assert_eq!(int_column(&got, "id"), want, "{sql}");
        }
        // A literal vector, and the operator's value equals the named function's.
        let sql = format!(
            "SELECT id, vec {op} {q} AS a, {alias}(vec, {q}) AS b FROM docs ORDER BY a LIMIT 4",
            q = literal(&q)
        );
        let (got, plan) = run_omen_sql(&ctx, &sql, vec![]).await;
        assert!(plan.contains("KnnExec"), "{sql}: {plan}");
        assert_eq!(got.column_by_name("a"), got.column_by_name("b"));
        assert_eq!(int_column(&got, "id"), brute_force(&q, 4, metric));
    }
}

#[tokio::test]
async fn pgvector_operators_bind_tighter_than_comparisons_and_spaceship_stays_on_scalars() {
    let (_tmp, ctx) = setup(Metric::L2).await;
    let q = vector(5);
    // `a <-> b < r` compares the distance; `<=>` of two scalars is null-safe equality.
    let sql = format!(
        "SELECT count(*) AS n FROM docs WHERE vec <-> {} < 0.000001",
        literal(&q)
    );
    let (got, _) = run_omen_sql(&ctx, &sql, vec![]).await;
    assert_eq!(int_column(&got, "n")[0], 1);
    let (got, _) = run_omen_sql(&ctx, "SELECT 1 <=> 1 AS same, NULL <=> 1 AS other", vec![]).await;
    let flags = got
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::BooleanArray>();
    assert_eq!(flags.map(|b| b.value(0)), Some(true));
    // Each statement is planned on its own; two are refused by a one-statement front end.
    let err = omendb_datafusion::sql::logical_plan(&ctx.state(), "SELECT 1; SELECT 2")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected one SQL statement, got 2"), "{err}");
}
