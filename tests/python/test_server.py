"""The server as an attacker and a careless client meet it, through pyarrow.flight: limits named
in errors, malformed calls refused with the process alive, tokens and roles, private sessions."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest


def sql(client, text, options=None):
    return client.do_get(flight.Ticket(text.encode()), options).read_all()


def put(client, path, table, options=None):
    writer, reader = client.do_put(flight.FlightDescriptor.for_path(*path), table.schema, options)
    writer.write_table(table)
    writer.done_writing()
    meta = reader.read()
    writer.close()
    return json.loads(meta.to_pybytes())


def small_table(n, dim=8, start=0):
    v = np.random.default_rng(start).standard_normal((n, dim), dtype=np.float32)
    return pa.table({"id": pa.array(np.arange(start, start + n, dtype=np.int64)),
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), dim)})


def test_huge_k_and_forbidden_files_are_refused_and_the_server_lives(server):
    client = server["client"]
    put(client, ["limits"], small_table(100))
    q = "[" + ",".join(["0.5"] * 8) + "]"
    with pytest.raises(pa.ArrowInvalid, match=r"limit of 10000 rows \(max_k\)"):
        sql(client, f"SELECT * FROM knn('limits', {q}, 10000000000)")
    with pytest.raises(flight.FlightUnauthorizedError, match="outside the directories"):
        sql(client, "CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '/etc/passwd'")
    with pytest.raises(flight.FlightUnauthorizedError, match="COPY target"):
        sql(client, "COPY (SELECT 1) TO '/tmp/omendb-should-not-exist.csv'")
    assert server["proc"].poll() is None
    assert sql(client, "SELECT count(*) AS n FROM limits")["n"][0].as_py() == 100
    list(client.do_action(flight.Action("drop_collection", b"limits")))


def test_tokens_roles_and_the_basic_handshake(start_server, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("reader-token read\nwriter-token write\nadmin-token admin\n")
    addr, _ = start_server("--token-file", str(tokens))
    client = flight.connect(f"grpc://{addr}")
    with pytest.raises(flight.FlightUnauthenticatedError):
        sql(client, "SELECT 1")
    # pyarrow's Basic handshake: the password is the token; the server answers with a bearer header.
    header = client.authenticate_basic_token("anyone", "writer-token")
    writer = flight.FlightCallOptions(headers=[header])
    assert put(client, ["docs"], small_table(10), writer)["rows"] == 10
    reader = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer reader-token")])
    assert sql(client, "SELECT count(*) AS n FROM docs", reader)["n"][0].as_py() == 10
    with pytest.raises(flight.FlightUnauthorizedError, match="'write' role"):
        put(client, ["docs"], small_table(5, start=100), reader)
    with pytest.raises(flight.FlightUnauthorizedError, match="'admin' role"):
        list(client.do_action(flight.Action("drop_collection", b"docs"), writer))
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.authenticate_basic_token("anyone", "wrong")


def test_sessions_are_private_per_connection(server):
    a = flight.connect(f"grpc://{server['addr']}")
    b = flight.connect(f"grpc://{server['addr']}")
    sql(a, "CREATE VIEW only_a AS SELECT 1 AS one")
    assert sql(a, "SELECT one FROM only_a")["one"][0].as_py() == 1
    with pytest.raises(pa.ArrowKeyError, match="only_a"):
        sql(b, "SELECT one FROM only_a")


def test_float16_collections_over_flight(server):
    """A collection stored as float16 (asked for by a descriptor option) answers knn() and
    ORDER BY as numpy does over its rounded vectors, and hands them back as float16."""
    client = server["client"]
    table = small_table(300, dim=16)
    assert put(client, ["halves", "vector_type=float16", "index=flat"], table)["rows"] == 300
    stored = sql(client, "SELECT id, vector FROM halves ORDER BY id")
    assert stored.schema.field("vector").type.value_type == pa.float16()
    data = np.stack(table["vector"].to_numpy(zero_copy_only=False)).astype(np.float32)
    rounded = data.astype(np.float16).astype(np.float32)
    q = np.random.default_rng(5).standard_normal(16).astype(np.float32)
    dist = 1.0 - rounded @ q / (np.linalg.norm(rounded, axis=1) * np.linalg.norm(q))
    want = np.argsort(dist, kind="stable")[:10].tolist()
    lit = "[" + ",".join(f"{v:.9g}" for v in q) + "]"
    got = sql(client, f"SELECT id, _distance FROM knn('halves', {lit}, 10)")
    assert got["id"].to_pylist() == want
    np.testing.assert_allclose(got["_distance"].to_numpy(), dist[want], atol=1e-5)
    by_order = sql(client, f"SELECT id FROM halves ORDER BY cosine_distance(vector, {lit}) LIMIT 10")
    assert by_order["id"].to_pylist() == want
    with pytest.raises(pa.ArrowInvalid, match="float32 or float16"):
        put(client, ["bad_type", "vector_type=float8"], table)
    list(client.do_action(flight.Action("drop_collection", b"halves")))
