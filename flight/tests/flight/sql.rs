//! Flight SQL over a real socket, with arrow-flight's `FlightSqlServiceClient`: statements,
//! prepared statements with bound vectors, updates, ingest modes, metadata, and handles that
//! stay in their session.

use super::common::{int64s, serve_in_process, status, strings};
use std::sync::Arc;

use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    CommandGetDbSchemas, CommandGetTables, CommandStatementIngest, SqlInfo, TableDefinitionOptions,
    TableExistsOption, TableNotExistOption,
};
use arrow_flight::FlightInfo;
use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, Float32Builder, Int64Array, ListBuilder, RecordBatch,
};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field};
use futures::TryStreamExt;
use tonic::transport::Channel;
use tonic::Code;

type Client = FlightSqlServiceClient<Channel>;

/// A client on its own connection (so its own session).
async fn connect(addr: std::net::SocketAddr) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightSqlServiceClient::new(channel)
}

const DIM: usize = 4;

fn vector(i: i64) -> Vec<f32> {
    (0..DIM as i64)
        .map(|j| ((i * 37 + j * 11) % 23) as f32 - 11.0)
        .collect()
}

fn vector_list(vs: impl IntoIterator<Item = Vec<f32>>) -> ArrayRef {
    let mut lb = ListBuilder::new(Float32Builder::new());
    for v in vs {
        lb.values().append_slice(&v);
        lb.append(true);
    }
    Arc::new(lb.finish())
}

fn rows(ids: std::ops::Range<i64>) -> RecordBatch {
    let vectors = vector_list(ids.clone().map(vector));
    omendb_testkit::id_vector_text_batch(ids, ("vector", vectors), "tag", |i| format!("t{}", i % 3))
}

/// Every row the endpoints of `info` return.
async fn fetch(client: &mut Client, info: FlightInfo) -> RecordBatch {
    let schema = Arc::new(info.clone().try_decode_schema().unwrap());
    let mut all = Vec::new();
    for endpoint in info.endpoint {
        let stream = client.do_get(endpoint.ticket.unwrap()).await.unwrap();
        let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
        for b in &batches {
            assert_eq!(
                b.schema(),
                schema,
                "every batch has the FlightInfo's schema"
            );
        }
        all.extend(batches);
    }
    concat_batches(&schema, &all).unwrap()
}

async fn query(client: &mut Client, sql: &str) -> RecordBatch {
    let info = client.execute(sql.to_string(), None).await.unwrap();
    fetch(client, info).await
}

fn ids(b: &RecordBatch) -> Vec<i64> {
    int64s(b, b.schema().index_of("id").unwrap())
        .values()
        .to_vec()
}

fn ingest(
    table: &str,
    if_exists: TableExistsOption,
    if_missing: TableNotExistOption,
) -> CommandStatementIngest {
    CommandStatementIngest {
        table_definition_options: Some(TableDefinitionOptions {
            if_not_exist: if_missing as i32,
            if_exists: if_exists as i32,
        }),
        table: table.into(),
        options: [("metric".to_string(), "l2".to_string())].into(),
        ..Default::default()
    }
}

async fn ingest_rows(
    client: &mut Client,
    cmd: CommandStatementIngest,
    batches: Vec<RecordBatch>,
) -> Result<i64, tonic::Status> {
    client
        .execute_ingest(cmd, futures::stream::iter(batches.into_iter().map(Ok)))
        .await
        .map_err(status)
}

/// A server in this process, a client of it, and collection `docs` made of `rows(ids)` by
/// ingest.
async fn serve_docs(
    ids: std::ops::Range<i64>,
) -> (
    tempfile::TempDir,
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    Client,
) {
    let (tmp, addr, stop) = serve_in_process().await;
    let mut c = connect(addr).await;
    let cmd = ingest("docs", TableExistsOption::Fail, TableNotExistOption::Create);
    ingest_rows(&mut c, cmd, vec![rows(ids)]).await.unwrap();
    (tmp, addr, stop, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_modes_statements_and_updates() {
    let (_tmp, addr, _stop) = serve_in_process().await;
    let mut c = connect(addr).await;
    use TableExistsOption as E;
    use TableNotExistOption as M;

    // create, then create again is refused; append adds; a refused batch writes nothing.
    assert_eq!(
        ingest_rows(
            &mut c,
            ingest("docs", E::Fail, M::Create),
            vec![rows(0..60)]
        )
        .await
        .unwrap(),
        60
    );
    let err = ingest_rows(
        &mut c,
        ingest("docs", E::Fail, M::Create),
        vec![rows(100..101)],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err}");
    assert_eq!(
        ingest_rows(
            &mut c,
            ingest("docs", E::Append, M::Fail),
            vec![rows(60..80), rows(80..100)]
        )
        .await
        .unwrap(),
        40
    );
    let err = ingest_rows(
        &mut c,
        ingest("docs", E::Append, M::Fail),
        vec![rows(100..110), rows(5..6)],
    )
    .await
    .unwrap_err();
    assert!(err.message().contains("id 5"), "{err}");
    let err = ingest_rows(&mut c, ingest("nope", E::Append, M::Fail), vec![rows(0..1)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let n = query(&mut c, "SELECT count(*) AS n FROM docs").await;
    assert_eq!(int64s(&n, 0).value(0), 100);

    // replace: the collection is what the stream holds, with the stream's metric.
    let mut cmd = ingest("other", E::Replace, M::Create);
    assert_eq!(
        ingest_rows(&mut c, cmd.clone(), vec![rows(0..10)])
            .await
            .unwrap(),
        10
    );
    cmd.options = [("metric".to_string(), "dot".to_string())].into();
    assert_eq!(
        ingest_rows(&mut c, cmd.clone(), vec![rows(500..505)])
            .await
            .unwrap(),
        5
    );
    assert_eq!(
        ids(&query(&mut c, "SELECT id FROM other ORDER BY id").await),
        (500..505).collect::<Vec<_>>()
    );
    cmd.options = [("metric".to_string(), "manhattan".to_string())].into();
    let err = ingest_rows(&mut c, cmd, vec![rows(0..1)])
        .await
        .unwrap_err();
    assert!(err.message().contains("manhattan"), "{err}");

    // Updates answer the rows they touched; DDL answers 0.
    let n = c
        .execute_update("DELETE FROM docs WHERE id >= 90".into(), None)
        .await
        .unwrap();
    assert_eq!(n, 10);
    let n = c
        .execute_update(
            "INSERT INTO docs VALUES (1000, [1.0, 2.0, 3.0, 4.0], 'x')".into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    // A DML statement run through a query (as DB-API cursors do) runs once.
    let got = query(
        &mut c,
        "INSERT INTO docs VALUES (1001, [1.0, 2.0, 3.0, 5.0], 'y')",
    )
    .await;
    assert_eq!(got.num_rows(), 1);
    let n = query(&mut c, "SELECT count(*) AS n FROM docs").await;
    assert_eq!(int64s(&n, 0).value(0), 92);

    // A prepared update binds its parameters row by row.
    let mut stmt = c
        .prepare("DELETE FROM docs WHERE id = $1".into(), None)
        .await
        .unwrap();
    stmt.set_parameters(
        RecordBatch::try_from_iter(vec![(
            "$1",
            Arc::new(Int64Array::from(vec![1, 2, 3, 99])) as ArrayRef,
        )])
        .unwrap(),
    )
    .unwrap();
    assert_eq!(stmt.execute_update().await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_knn_binds_vectors_and_handles_stay_in_their_session() {
    let (_tmp, addr, _stop, mut c) = serve_docs(0..300).await;

    let mut stmt = c
        .prepare(
            "SELECT id, _distance FROM knn('docs', $1, 5) WHERE tag <> 't1'".into(),
            None,
        )
        .await
        .unwrap();
    let params = stmt.parameter_schema().unwrap().clone();
    assert_eq!(params.fields().len(), 1);
    assert_eq!(params.field(0).name(), "$1");
    assert_eq!(
        params.field(0).data_type(),
        &DataType::List(Arc::new(Field::new("item", DataType::Float32, true)))
    );
    assert_eq!(stmt.dataset_schema().unwrap().field(0).name(), "id");
    for probe in [7_i64, 123, 250] {
        let q = vector(probe);
        stmt.set_parameters(
            RecordBatch::try_from_iter(vec![("$1", vector_list([q.clone()]))]).unwrap(),
        )
        .unwrap();
        let info = stmt.execute().await.unwrap();
        let got = fetch(&mut c, info).await;
        let literal = format!("{q:?}");
        let want = query(
            &mut c,
            &format!("SELECT id, _distance FROM knn('docs', {literal}, 5) WHERE tag <> 't1'"),
        )
        .await;
        assert_eq!(got, want, "probe {probe}");
        // The exact answer, by brute force (l2, ties by id).
        let mut all: Vec<(f32, i64)> = (0..300)
            .filter(|i| i % 3 != 1)
            .map(|i| {
                let d: f32 = vector(i)
                    .iter()
                    .zip(&q)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum();
                (d, i)
            })
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let exact: Vec<i64> = all.iter().take(5).map(|x| x.1).collect();
        assert_eq!(ids(&got), exact, "probe {probe}");
    }

    // Two rows of parameters for one query are refused, naming the rule.
    stmt.set_parameters(
        RecordBatch::try_from_iter(vec![("$1", vector_list([vector(1), vector(2)]))]).unwrap(),
    )
    .unwrap();
    let err = status(stmt.execute().await.unwrap_err());
    assert!(
        err.message()
            .contains("one row of parameters, 2 were bound"),
        "{err}"
    );

    // A handle is refused in another session, and a forged one anywhere.
    stmt.set_parameters(
        RecordBatch::try_from_iter(vec![("$1", vector_list([vector(3)]))]).unwrap(),
    )
    .unwrap();
    let info = stmt.execute().await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut other = connect(addr).await;
    let err = match other.do_get(ticket.clone()).await {
        Ok(s) => status(s.try_collect::<Vec<_>>().await.unwrap_err()),
        Err(e) => status(e),
    };
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let mut forged = ticket.clone();
    let mut bytes = forged.ticket.to_vec();
    let n = bytes.len();
    bytes[n - 40] ^= 1;
    forged.ticket = bytes.into();
    let err = match c.do_get(forged).await {
        Ok(s) => status(s.try_collect::<Vec<_>>().await.unwrap_err()),
        Err(e) => status(e),
    };
    assert!(err.message().contains("invalid statement handle"), "{err}");
    stmt.close().await.unwrap();

    // Transactions are refused saying why.
    let err = status(c.begin_transaction().await.unwrap_err());
    assert_eq!(err.code(), Code::Unimplemented, "{err}");
    assert!(err.message().contains("autocommit"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_describes_the_server_and_its_tables() {
    let (_tmp, _, _stop, mut c) = serve_docs(0..10).await;

    let info = c
        .get_sql_info(vec![SqlInfo::FlightSqlServerName])
        .await
        .unwrap();
    let got = fetch(&mut c, info).await;
    assert_eq!(got.num_rows(), 1);
    assert!(format!("{:?}", got.column(1)).contains("OmenDB"));

    let info = c.get_catalogs().await.unwrap();
    let got = fetch(&mut c, info).await;
    let names = strings(&got, 0);
    assert!(names.iter().any(|n| n == Some("datafusion")));

    let info = c
        .get_db_schemas(CommandGetDbSchemas {
            catalog: Some("datafusion".into()),
            db_schema_filter_pattern: Some("pub%".into()),
        })
        .await
        .unwrap();
    let got = fetch(&mut c, info).await;
    assert_eq!(got.num_rows(), 1);
    assert_eq!(strings(&got, 1).value(0), "public");

    let info = c
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: Some("public".into()),
            table_name_filter_pattern: Some("do%".into()),
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let got = fetch(&mut c, info).await;
    assert_eq!(got.num_rows(), 1);
    assert_eq!(strings(&got, 2).value(0), "docs");
    assert_eq!(strings(&got, 3).value(0), "TABLE");
    let schema_bytes = got
        .column(4)
        .as_any()
        .downcast_ref::<BinaryArray>()
        .unwrap()
        .value(0)
        .to_vec();
    let fields =
        datafusion::arrow::ipc::convert::try_schema_from_ipc_buffer(&schema_bytes).unwrap();
    assert_eq!(
        fields
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>(),
        ["id", "vector", "tag"]
    );

    let info = c.get_table_types().await.unwrap();
    let got = fetch(&mut c, info).await;
    assert!(got.num_rows() >= 2);
    let info = c.get_xdbc_type_info(Default::default()).await.unwrap();
    let got = fetch(&mut c, info).await;
    assert!(got.num_rows() >= 5);
    assert!(got.column(0).len() >= 5);
}
