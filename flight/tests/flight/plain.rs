//! The Flight service over a real socket, with arrow-flight's client.

use super::common::*;
use std::sync::Arc;

use arrow_flight::{FlightClient, FlightDescriptor};
use datafusion::arrow::array::{Float64Builder, ListBuilder, RecordBatch, StringArray};
use futures::StreamExt;
use tonic::Code;

async fn start() -> (
    tempfile::TempDir,
    FlightClient,
    tokio::sync::oneshot::Sender<()>,
) {
    let (tmp, addr, stop) = serve_in_process().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (tmp, FlightClient::new(channel), stop)
}

/// Rows with float64 list vectors, the way pandas sends them.
fn batch(ids: std::ops::Range<i64>, dim: usize) -> RecordBatch {
    let mut lb = ListBuilder::new(Float64Builder::new());
    for i in ids.clone() {
        lb.values().append_slice(
            &(0..dim)
                .map(|j| ((i * 31 + j as i64) % 17) as f64 - 8.0)
                .collect::<Vec<_>>(),
        );
        lb.append(true);
    }
    omendb_testkit::id_vector_text_batch(ids, ("embedding", Arc::new(lb.finish())), "title", |i| {
        format!("doc {i}")
    })
}

/// Asserts that each put of `cases` (path, batches, needle), in turn, is refused as
/// INVALID_ARGUMENT with a message containing its needle.
async fn refused<const N: usize>(
    client: &mut FlightClient,
    cases: [(&[&str], Vec<RecordBatch>, &str); N],
) {
    for (path, batches, needle) in cases {
        let err = put(client, path, batches).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(needle), "{}", err.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_query_describe_and_error_codes() {
    let (_tmp, mut client, _stop) = start().await;
    let meta = put(
        &mut client,
        &["docs", "metric=l2"],
        vec![batch(0..50, 4), batch(50..100, 4)],
    )
    .await
    .unwrap();
    assert_eq!(meta, r#"{"collection":"docs","mode":"append","rows":100}"#);

    // knn over SQL: the nearest row to row 42's own vector is row 42 (l2 distance 0).
    let q: Vec<String> = (0..4)
        .map(|j| format!("{}.0", ((42 * 31 + j) % 17) - 8))
        .collect();
    let got = sql(
        &mut client,
        &format!(
            "SELECT id, title, _distance FROM knn('docs', [{}], 3)",
            q.join(",")
        ),
    )
    .await
    .unwrap();
    let ids = int64s(&got[0], 0);
    assert_eq!(ids.value(0) % 17, 42 % 17); // ids ≡ 42 mod 17 share the vector
    assert_eq!(got.iter().map(|b| b.num_rows()).sum::<usize>(), 3);

    let infos: Vec<_> = flights(&mut client).await;
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].total_records, 100);
    let info = client
        .get_flight_info(FlightDescriptor::new_path(vec!["docs".into()]))
        .await
        .unwrap();
    let schema = info.try_decode_schema().unwrap();
    assert_eq!(
        schema.field(1).data_type().to_string(),
        "FixedSizeList(4 x Float32)"
    );
    let info = client
        .get_flight_info(FlightDescriptor::new_cmd("SELECT count(*) AS n FROM docs"))
        .await
        .unwrap();
    assert_eq!(info.try_decode_schema().unwrap().field(0).name(), "n");

    // Errors map to gRPC codes and name the problem; refused writes change nothing.
    refused(
        &mut client,
        [
            (&["docs"], vec![batch(100..102, 5)], "wrong dimension 5"),
            (&["docs"], vec![batch(10..12, 4)], "duplicate id 10"),
        ],
    )
    .await;
    let err = put(&mut client, &["a/b"], vec![batch(0..1, 4)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = put(
        &mut client,
        &["docs", "metric=hamming"],
        vec![batch(0..1, 4)],
    )
    .await
    .unwrap_err();
    assert!(
        err.message().contains("unknown metric"),
        "{}",
        err.message()
    );
    let err = sql(&mut client, "SELECT * FROM knn('missing', [1.0], 1)")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = sql(&mut client, "SELECT * FROM missing").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = sql(&mut client, "SELEC oops").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client
        .get_flight_info(FlightDescriptor::new_path(vec!["missing".into()]))
        .await
        .unwrap_err();
    assert_eq!(status(err).code(), Code::NotFound);
    let n = sql(&mut client, "SELECT count(*) AS n FROM docs")
        .await
        .unwrap();
    assert_eq!(int64s(&n[0], 0).value(0), 100);

    // Actions: build_index, stats and drop.
    action_reports(
        &mut client,
        &[
            ("build_index", "docs", &[r#""indexes_built":1"#]),
            ("stats", "docs", &[r#""rows":100"#, r#""segments":1"#]),
        ],
    )
    .await;
    let _ = client
        .do_action(arrow_flight::Action::new("drop_collection", "docs"))
        .await
        .unwrap()
        .collect::<Vec<_>>()
        .await;
    assert_eq!(
        sql(&mut client, "SELECT * FROM docs")
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
}

/// Runs action `kind` with `body`; its one result as text.
async fn action(
    client: &mut FlightClient,
    kind: &str,
    body: &str,
) -> Result<String, tonic::Status> {
    let results: Vec<_> = client
        .do_action(arrow_flight::Action::new(kind, body.to_string()))
        .await
        .map_err(status)?
        .collect::<Vec<_>>()
        .await;
    let first = results
        .into_iter()
        .next()
        .expect("one result")
        .map_err(status)?;
    Ok(String::from_utf8(first.to_vec()).unwrap())
}

/// Runs each action of `cases` (kind, body, needles) in turn; each must succeed with a text
/// that contains every one of its needles.
async fn action_reports(client: &mut FlightClient, cases: &[(&str, &str, &[&str])]) {
    for (kind, body, needles) in cases {
        let text = action(client, kind, body).await.unwrap();
        for needle in *needles {
            assert!(text.contains(needle), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_puts_compaction_and_settings_over_flight() {
    let (_tmp, mut client, _stop) = start().await;
    let batches = (0..50).step_by(5).map(|start| batch(start..start + 5, 4));
    put_each(&mut client, &["docs", "metric=l2"], batches).await;
    // Rows 40..60: 40..50 replace stored rows (new titles), 50..60 are new.
    let renamed = |b: RecordBatch| {
        let titles = StringArray::from_iter_values(
            int64s(&b, 0).values().iter().map(|i| format!("new {i}")),
        );
        let mut cols = b.columns().to_vec();
        cols[2] = Arc::new(titles);
        RecordBatch::try_new(b.schema(), cols).unwrap()
    };
    let meta = put(
        &mut client,
        &["docs", "mode=upsert"],
        vec![renamed(batch(40..60, 4))],
    )
    .await
    .unwrap();
    assert_eq!(meta, r#"{"collection":"docs","mode":"upsert","rows":20}"#);
    assert_eq!(count(&mut client, "SELECT count(*) FROM docs").await, 60);
    assert_eq!(
        count(
            &mut client,
            "SELECT count(*) FROM docs WHERE title LIKE 'new %'"
        )
        .await,
        20
    );
    assert_eq!(
        count(&mut client, "SELECT count(*) FROM docs WHERE id = 45").await,
        1
    );
    let got = sql(
        &mut client,
        "SELECT title FROM docs WHERE id IN (30, 45) ORDER BY id",
    )
    .await
    .unwrap();
    assert_eq!(strings(&got[0], 0).value(0), "doc 30");
    assert_eq!(strings(&got[0], 0).value(1), "new 45");
    // An upsert still refuses an id sent twice, and a bad mode; nothing changes.
    refused(
        &mut client,
        [
            (
                &["docs", "mode=upsert"],
                vec![batch(1..3, 4), batch(2..3, 4)],
                "duplicate id 2",
            ),
            (
                &["docs", "mode=merge"],
                vec![batch(0..1, 4)],
                "unknown write mode 'merge'",
            ),
        ],
    )
    .await;
    assert_eq!(count(&mut client, "SELECT count(*) FROM docs").await, 60);

    // Settings change after creation; bad ones are refused whole.
    action_reports(
        &mut client,
        &[(
            "alter",
            "docs ef_search=99 compaction=off",
            &[r#""ef_search":99"#, r#""compaction":false"#],
        )],
    )
    .await;
    let err = action(&mut client, "alter", "docs ef_search=7 m=1")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("m must be between 2 and 256"),
        "{}",
        err.message()
    );
    let err = action(&mut client, "alter", "docs").await.unwrap_err();
    assert!(
        err.message().contains("name at least one setting"),
        "{}",
        err.message()
    );
    action_reports(&mut client, &[("stats", "docs", &[r#""ef_search":99"#])]).await;

    // Compaction on request: one segment, the replaced rows gone for good.
    action_reports(
        &mut client,
        &[
            ("compact", "docs", &[r#""segments":1"#, r#""rows":60"#]),
            ("stats", "docs", &[r#""deleted_rows":0"#, r#""segments":1"#]),
        ],
    )
    .await;
    assert_eq!(
        count(
            &mut client,
            "SELECT count(*) FROM docs WHERE title LIKE 'new %'"
        )
        .await,
        20
    );
    let err = action(&mut client, "compact", "missing").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

/// The one integer `text` returns.
async fn count(client: &mut FlightClient, text: &str) -> i64 {
    int64s(&sql(client, text).await.unwrap()[0], 0).value(0)
}
