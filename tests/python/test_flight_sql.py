"""Flight SQL client matrix against the real server: the ADBC Flight SQL driver (DB-API), polars
and pandas over an ADBC connection, each checked against numpy or known counts."""
import subprocess

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import DATASET

N = 3_000  # under the index threshold: a flat collection, so knn() is exact


@pytest.fixture(scope="module")
def words():
    base = np.load(DATASET / "base.npy")[:N].astype(np.float32)
    queries = np.load(DATASET / "queries.npy")[:20].astype(np.float32)
    names = (DATASET / "base_words.txt").read_text().splitlines()[:N]
    return base, queries, names


def connect(server, **kwargs):
    return flightsql.connect(f"grpc://{server['addr']}", autocommit=True, **kwargs)


def cosine_top(base, q, k):
    d = 1.0 - (base @ q) / (np.linalg.norm(base, axis=1) * np.linalg.norm(q))
    return list(np.argsort(d, kind="stable")[:k])


def table_of(base, names, start=0):
    n = len(base)
    return pa.table({
        "id": pa.array(np.arange(start, start + n, dtype=np.int64)),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(base.reshape(-1)), base.shape[1]),
        "word": pa.array(names),
    })


def count(cur, table):
    cur.execute(f"SELECT count(*) FROM {table}")
    return cur.fetchone()[0]


def test_ingest_modes_and_bound_knn_equal_numpy(server, words):
    base, queries, names = words
    with connect(server) as conn, conn.cursor() as cur:
        assert cur.adbc_ingest("fsql_words", table_of(base[:2000], names[:2000]), mode="create") == 2000
        with pytest.raises(adbc_driver_manager.Error, match="already exists"):
            cur.adbc_ingest("fsql_words", table_of(base[:1], names[:1]), mode="create")
        cur.adbc_ingest("fsql_words", table_of(base[2000:], names[2000:], start=2000), mode="append")
        assert count(cur, "fsql_words") == N

        # The query vector bound as a Python list, a numpy array and an Arrow list.
        sql = "SELECT id, word, _distance FROM knn('fsql_words', $1, 10)"
        for i, q in enumerate(queries[:8]):
            param = [q.tolist(), q, pa.array([q.tolist()], pa.list_(pa.float32()))[0]][i % 3]
            cur.execute(sql, parameters=(param,))
            got = cur.fetch_arrow_table()
            assert got.column("id").to_pylist() == cosine_top(base, q, 10)
            assert got.column("word").to_pylist() == [names[j] for j in cosine_top(base, q, 10)]

        # ORDER BY the distance to a bound vector: the same rows.
        q = queries[9]
        cur.execute(
            "SELECT id FROM fsql_words ORDER BY cosine_distance(vector, $1) LIMIT 5", parameters=(q.tolist(),)
        )
        assert [r[0] for r in cur.fetchall()] == cosine_top(base, q, 5)

        # A wrong dimension is refused, naming it.
        with pytest.raises(adbc_driver_manager.Error, match="dimension 3"):
            cur.execute(sql, parameters=([1.0, 2.0, 3.0],))
            cur.fetchall()

        # replace: the collection becomes the new rows; create_append creates or appends.
        cur.adbc_ingest("fsql_words", table_of(base[:100], names[:100]), mode="replace")
        assert count(cur, "fsql_words") == 100
        cur.adbc_ingest("fsql_more", table_of(base[:10], names[:10]), mode="create_append")
        cur.adbc_ingest("fsql_more", table_of(base[10:30], names[10:30], start=10), mode="create_append")
        assert count(cur, "fsql_more") == 30


def test_dml_reports_affected_rows(server, words):
    base, _, names = words
    with connect(server) as conn, conn.cursor() as cur:
        cur.adbc_ingest("fsql_dml", table_of(base[:50], names[:50]), mode="create")
        cur.executemany("DELETE FROM fsql_dml WHERE id = $1", [(1,), (2,), (3,), (999,)])
        assert cur.rowcount == 3
        cur.execute("DELETE FROM fsql_dml WHERE id >= 40")
        assert cur.fetchone()[0] == 10
        assert count(cur, "fsql_dml") == 37


def test_a_parameter_types_its_result_column(server):
    with connect(server) as conn, conn.cursor() as cur:
        for value, kind in ((7, pa.int64()), ("seven", pa.string()), (2.5, pa.float64())):
            cur.execute("SELECT $1 AS x", parameters=(value,))
            t = cur.fetch_arrow_table()
            assert t.column("x").to_pylist() == [value] and t.schema.field("x").type == kind


def test_metadata_get_info_objects_and_table_schema(server, words):
    base, _, names = words
    with connect(server) as conn, conn.cursor() as cur:
        cur.adbc_ingest("fsql_meta", table_of(base[:5], names[:5]), mode="create")
        info = conn.adbc_get_info()
        assert info["vendor_name"] == "OmenDB"
        schema = conn.adbc_get_table_schema("fsql_meta")
        assert schema.names == ["id", "vector", "word"]
        assert schema.field("vector").type == pa.list_(pa.float32(), 384)
        objects = conn.adbc_get_objects(depth="all", table_name_filter="fsql_meta").read_all().to_pylist()
        tables = [
            t
            for catalog in objects
            for db_schema in catalog["catalog_db_schemas"] or []
            for t in db_schema["db_schema_tables"] or []
        ]
        assert [t["table_name"] for t in tables] == ["fsql_meta"]
        assert [c["column_name"] for c in tables[0]["table_columns"]] == ["id", "vector", "word"]
        assert "TABLE" in conn.adbc_get_table_types()


def test_polars_and_pandas_read_and_write(server, words):
    base, queries, names = words
    with connect(server) as conn:
        frame = pl.DataFrame({
            "id": np.arange(500, dtype=np.int64),
            "vector": pl.Series(base[:500]).cast(pl.Array(pl.Float32, 384)),
            "word": names[:500],
        })
        frame.write_database("fsql_polars", connection=conn, engine="adbc", if_table_exists="fail")
        got = pl.read_database("SELECT count(*) AS n FROM fsql_polars", connection=conn)
        assert got["n"][0] == 500
        q = queries[0]
        literal = "[" + ",".join(repr(float(x)) for x in q) + "]"
        near = pl.read_database(f"SELECT id FROM knn('fsql_polars', {literal}, 5)", connection=conn)
        assert near["id"].to_list() == cosine_top(base[:500], q, 5)

        df = pd.DataFrame({"id": np.arange(1000, 1100), "vector": list(base[:100].astype(np.float64)), "word": names[:100]})
        assert df.to_sql("fsql_pandas", conn, if_exists="fail", index=False) == 100
        df2 = df.assign(id=df["id"] + 1000)
        df2.to_sql("fsql_pandas", conn, if_exists="append", index=False)
        back = pd.read_sql("SELECT id, word FROM fsql_pandas ORDER BY id LIMIT 3", conn)
        assert back["id"].tolist() == [1000, 1001, 1002]
        assert back["word"].tolist() == names[:3]
        assert pd.read_sql("SELECT count(*) AS n FROM fsql_pandas", conn)["n"][0] == 200


def test_sessions_are_private_and_files_confined(server):
    with connect(server) as a, connect(server) as b, a.cursor() as ca, b.cursor() as cb:
        ca.execute("CREATE VIEW fsql_mine AS SELECT 42 AS answer")
        ca.fetchall()
        ca.execute("SELECT answer FROM fsql_mine")
        assert ca.fetchone()[0] == 42
        with pytest.raises(adbc_driver_manager.Error, match="fsql_mine"):
            cb.execute("SELECT answer FROM fsql_mine")
            cb.fetchall()
        with pytest.raises(adbc_driver_manager.Error, match="refused"):
            ca.execute("CREATE EXTERNAL TABLE passwd STORED AS CSV LOCATION '/etc/passwd'")
            ca.fetchall()


def test_username_password_handshake(start_server, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("reader-token read\nwriter-token write\n")
    addr, _ = start_server("--token-file", str(tokens))
    uri = f"grpc://{addr}"
    with flightsql.connect(uri, db_kwargs={"username": "me", "password": "reader-token"}, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 + 1")
            assert cur.fetchone()[0] == 2
            # A reader binds parameters (a put on the wire) but writes nothing.
            cur.execute("SELECT $1 + 1", parameters=(41,))
            assert cur.fetchone()[0] == 42
            with pytest.raises(adbc_driver_manager.Error, match="role"):
                cur.execute("CREATE TABLE t AS SELECT 1")
                cur.fetchall()
            with pytest.raises(adbc_driver_manager.Error, match="'write' role"):
                cur.adbc_ingest("t", pa.table({"id": [1], "v": [[1.0, 2.0]]}), mode="create")
    with flightsql.connect(uri, db_kwargs={"username": "me", "password": "writer-token"}) as conn:
        with conn.cursor() as cur:
            assert cur.adbc_ingest("t", pa.table({"id": [1], "v": [[1.0, 2.0]]}), mode="create") == 1
            with pytest.raises(adbc_driver_manager.Error, match="'admin' role"):
                cur.adbc_ingest("t", pa.table({"id": [2], "v": [[1.0, 2.0]]}), mode="replace")
    with pytest.raises(adbc_driver_manager.Error):
        with flightsql.connect(uri, db_kwargs={"username": "me", "password": "wrong"}) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
    with pytest.raises(adbc_driver_manager.Error):
        with flightsql.connect(uri) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")


def test_basic_login_for_every_credential_length(start_server, tmp_path):
    """The ADBC driver sends Basic credentials as base64 without padding, pyarrow with it: every
    length of `user:token` modulo 3 logs in through both."""
    secrets = ["tok", "toke", "token"]  # "me:" + each: 6, 7 and 8 characters
    assert sorted(len(f"me:{t}") % 3 for t in secrets) == [0, 1, 2]
    tokens = tmp_path / "tokens"
    tokens.write_text("".join(f"{t} read\n" for t in secrets))
    addr, _ = start_server("--token-file", str(tokens))
    for token in secrets:
        with flightsql.connect(f"grpc://{addr}", db_kwargs={"username": "me", "password": token},
                               autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT 40 + 2")
            assert cur.fetchone()[0] == 42, token
        client = flight.connect(f"grpc://{addr}")
        header = client.authenticate_basic_token("me", token)
        options = flight.FlightCallOptions(headers=[header])
        table = client.do_get(flight.Ticket(b"SELECT 6 * 7 AS x"), options=options).read_all()
        assert table.column("x").to_pylist() == [42], token


def test_tls_with_pyarrow_and_adbc(start_server, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    addr, _ = start_server("--tls-cert", str(cert), "--tls-key", str(key))
    port = addr.rsplit(":", 1)[1]
    client = flight.connect(f"grpc+tls://localhost:{port}", tls_root_certs=cert.read_bytes())
    assert client.do_get(flight.Ticket(b"SELECT 6 * 7 AS x")).read_all().column("x").to_pylist() == [42]
    uri = f"grpc+tls://localhost:{port}"
    options = {"adbc.flight.sql.client_option.tls_root_certs": cert.read_text()}
    with flightsql.connect(uri, db_kwargs=options, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT $1 * 2", parameters=(21,))
        assert cur.fetchone()[0] == 42
    # A client that does not speak TLS gets nothing.
    plain = flight.connect(f"grpc://localhost:{port}")
    with pytest.raises(flight.FlightError):
        plain.do_get(flight.Ticket(b"SELECT 1"), options=flight.FlightCallOptions(timeout=5)).read_all()


def l2_top(base, q, k):
    return list(np.argsort(np.linalg.norm(base - q, axis=1), kind="stable")[:k])


def test_pgvector_operators_through_adbc(server, words):
    """`<=>`, `<->` and `<#>` order by pgvector's distances and run as index searches."""
    base, queries, names = words
    with connect(server) as conn, conn.cursor() as cur:
        cur.adbc_ingest("fsql_pg", table_of(base[:1000], names[:1000]), mode="create")
        cur.execute(
            "CREATE EXTERNAL TABLE fsql_pg_l2 (id BIGINT NOT NULL, vector FLOAT[384] NOT NULL, word VARCHAR) "
            "STORED AS OMENDB LOCATION 'fsql_pg_l2' OPTIONS ('metric' 'l2')"
        )
        cur.fetchall()
        cur.adbc_ingest("fsql_pg_l2", table_of(base[:1000], names[:1000]), mode="append")
        q = queries[3]
        cur.execute("SELECT id FROM fsql_pg ORDER BY vector <=> $1 LIMIT 5", parameters=(q,))
        assert [r[0] for r in cur.fetchall()] == cosine_top(base[:1000], q, 5)
        cur.execute("SELECT id FROM fsql_pg_l2 ORDER BY vector <-> $1 LIMIT 5", parameters=(q,))
        assert [r[0] for r in cur.fetchall()] == l2_top(base[:1000], q, 5)
        cur.execute("SELECT id, vector <#> $1 AS d FROM fsql_pg ORDER BY d LIMIT 5", parameters=(q,))
        got = cur.fetch_arrow_table()
        dots = base[:1000] @ q
        assert got.column("id").to_pylist() == list(np.argsort(-dots, kind="stable")[:5])
        assert np.allclose(got.column("d").to_numpy(), -np.sort(dots)[::-1][:5], atol=1e-4)
        # On the index, as ORDER BY cosine_distance(...) is.
        cur.execute("EXPLAIN SELECT id FROM fsql_pg ORDER BY vector <=> $1 LIMIT 5", parameters=(q,))
        assert "KnnExec" in str(cur.fetch_arrow_table().to_pylist())
        # A row's cosine distance to itself is never negative.
        cur.execute("SELECT min(vector <=> vector) AS d FROM fsql_pg")
        assert cur.fetchone()[0] >= 0.0


def test_prepare_and_execute_through_adbc(server, words):
    base, queries, names = words
    with connect(server) as conn, conn.cursor() as cur:
        cur.adbc_ingest("fsql_prep", table_of(base[:500], names[:500]), mode="create")
        cur.execute("PREPARE near(FLOAT[], BIGINT) AS SELECT id, _distance FROM knn('fsql_prep', $1, $2)")
        cur.fetchall()
        literal = "[" + ",".join(repr(float(x)) for x in queries[0]) + "]"
        cur.execute(f"EXECUTE near({literal}, 4)")
        assert [r[0] for r in cur.fetchall()] == cosine_top(base[:500], queries[0], 4)


def test_ingest_over_16_mib_and_settings_for_adbc(server, words):
    """The ADBC driver's 16 MiB message limit: raised with its client option, or avoided by
    re-chunking; settings for a new collection from ADBC go through DDL."""
    base, _, names = words
    big = np.load(DATASET / "base.npy")[:12_000].astype(np.float32)  # 18.4 MB in one chunk
    table = table_of(big, (DATASET / "base_words.txt").read_text().splitlines()[: len(big)])
    assert table.nbytes > 16 << 20 and table.column("vector").num_chunks == 1
    options = {"adbc.flight.sql.client_option.with_max_msg_size": str(256 << 20)}
    with flightsql.connect(f"grpc://{server['addr']}", db_kwargs=options, autocommit=True) as conn:
        with conn.cursor() as cur:
            assert cur.adbc_ingest("fsql_big", table, mode="create") == len(big)
            assert count(cur, "fsql_big") == len(big)
    with connect(server) as conn, conn.cursor() as cur:
        rechunked = pa.Table.from_batches(table.to_batches(max_chunksize=5_000))
        assert cur.adbc_ingest("fsql_big2", rechunked, mode="create") == len(big)
        # DDL sets what ingest options cannot (the driver refuses unknown statement options).
        cur.execute(
            "CREATE EXTERNAL TABLE fsql_l2m32 (id BIGINT NOT NULL, vector FLOAT[384] NOT NULL, word VARCHAR) "
            "STORED AS OMENDB LOCATION 'fsql_l2m32' OPTIONS ('metric' 'l2', 'm' '32')"
        )
        cur.fetchall()
        cur.adbc_ingest("fsql_l2m32", table_of(base[:100], names[:100]), mode="append")
    stats = server["client"].do_action(flight.Action("stats", b"fsql_l2m32"))
    import json
    stats = json.loads(next(stats).body.to_pybytes())
    assert (stats["metric"], stats["index"]["m"], stats["rows"]) == ("l2", 32, 100)


def test_first_hour_errors_name_what_is_wrong(server, words):
    base, queries, names = words
    with connect(server) as conn, conn.cursor() as cur:
        cur.adbc_ingest("fsql_err", table_of(base[:50], names[:50]), mode="create")
        q = queries[0]
        with pytest.raises(adbc_driver_manager.Error) as e:
            cur.execute("SELECT id FROM knn('fsql_err', $1, '10')", parameters=(q,))
            cur.fetchall()
        assert "k must be a non-negative integer, got the string '10'" in str(e.value)
        assert "omendb_knn_bind" not in str(e.value) and "caused by" not in str(e.value)
        with pytest.raises(adbc_driver_manager.Error, match=r"write knn\('fsql_err', \.\.\.\)"):
            cur.execute("SELECT id FROM knn(fsql_err, $1, 10)", parameters=(q,))
            cur.fetchall()
        # A string bound where the vector goes, or a vector of another dimension, fails the
        # execute call itself (not the fetch).
        with pytest.raises(adbc_driver_manager.Error, match="query vector"):
            cur.execute("SELECT id FROM knn('fsql_err', $1, 10)", parameters=("0.1,0.2",))
        with pytest.raises(adbc_driver_manager.Error, match="dimension 3, collection 'fsql_err' has dimension 384"):
            cur.execute("SELECT id FROM knn('fsql_err', $1, 10)", parameters=([1.0, 2.0, 3.0],))
        # A zero vector has no cosine distance: refused, naming the row.
        zero = table_of(np.zeros((2, 384), np.float32), ["a", "b"], start=100)
        with pytest.raises(adbc_driver_manager.Error, match="row 0 is all zeros"):
            cur.adbc_ingest("fsql_err", zero, mode="append")
        assert count(cur, "fsql_err") == 50
