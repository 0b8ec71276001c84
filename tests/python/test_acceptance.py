"""Acceptance: pandas and polars push real embeddings over Flight, knn() over SQL matches numpy
brute force, a join with a Parquet table aggregates correctly, bad batches are refused."""
import json
import time

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

from conftest import DATASET

N = 20_000


@pytest.fixture(scope="module")
def dataset():
    base = np.load(DATASET / "base.npy")[:N].astype(np.float32)
    words = (DATASET / "base_words.txt").read_text().splitlines()[:N]
    queries = np.load(DATASET / "queries.npy").astype(np.float32)
    return base, words, queries


def sql(client, text):
    return client.do_get(flight.Ticket(text.encode())).read_all()


def put(client, path, table):
    writer, reader = client.do_put(flight.FlightDescriptor.for_path(*path), table.schema)
    writer.write_table(table, max_chunksize=5_000)
    writer.done_writing()
    meta = reader.read()
    writer.close()
    return json.loads(meta.to_pybytes())


def vec_literal(v):
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


@pytest.fixture(scope="module")
def loaded(server, dataset):
    client = server["client"]
    base, words, _ = dataset
    half = N // 2
    # pandas: a column of float32 numpy arrays arrives as List<Float32>.
    df = pd.DataFrame({"id": np.arange(half, dtype=np.int64), "word": words[:half], "vector": list(base[:half])})
    # index_threshold=0 keeps every segment exact (no automatic HNSW), so knn() must match
    # numpy brute force id for id.
    table = pa.Table.from_pandas(df, preserve_index=False)
    assert put(client, ["words", "index_threshold=0"], table) == {"collection": "words", "mode": "append", "rows": half}
    # polars: float64 lists and polars' own string layout, converted on the way in.
    pf = pl.DataFrame({
        "id": np.arange(half, N, dtype=np.int64),
        "word": words[half:],
        "vector": base[half:].astype(np.float64).tolist(),
    })
    assert put(client, ["words"], pf.to_arrow())["rows"] == N - half
    return client


def test_collection_is_listed_with_its_rows(loaded):
    infos = list(loaded.list_flights())
    assert [i.descriptor.path for i in infos] == [[b"words"]]
    assert infos[0].total_records == N
    assert infos[0].schema.field("vector").type == pa.list_(pa.field("item", pa.float32()), 384)
    assert sql(loaded, "SELECT count(*) AS n FROM words")["n"][0].as_py() == N


def test_knn_matches_numpy_brute_force(loaded, dataset):
    base, words, queries = dataset
    normed = base / np.linalg.norm(base, axis=1, keepdims=True)
    for qi in range(100):
        q = queries[qi]
        sims = normed @ (q / np.linalg.norm(q))
        want = np.argsort(-sims, kind="stable")[:10]
        got = sql(loaded, f"SELECT id, word, _distance FROM knn('words', {vec_literal(q)}, 10)").to_pandas()
        ids = got["id"].tolist()
        if ids != want.tolist():
            # Only an exact tie (equal float32 similarity) may swap neighbours.
            for a, b in zip(ids, want):
                assert a == b or abs(sims[a] - sims[b]) < 1e-6, (qi, ids, want.tolist())
        assert got["word"].tolist() == [words[i] for i in ids]
        np.testing.assert_allclose(got["_distance"], 1 - sims[ids], atol=1e-5)


def test_where_on_knn_is_a_prefilter(loaded, dataset):
    # WHERE on a knn() source is pushed into the search: the 10 nearest rows among those that
    # match come back, even when none of the 10 nearest overall match.
    base, words, queries = dataset
    normed = base / np.linalg.norm(base, axis=1, keepdims=True)
    keep = np.array([w.startswith("b") for w in words])
    assert 0 < keep.mean() < 0.2
    for qi in range(10):
        q = queries[qi]
        sims = np.where(keep, normed @ (q / np.linalg.norm(q)), -np.inf)
        want = np.argsort(-sims, kind="stable")[:10]
        got = sql(loaded, f"SELECT id, word FROM knn('words', {vec_literal(q)}, 10) WHERE word LIKE 'b%'").to_pandas()
        assert len(got) == 10 and all(w.startswith("b") for w in got["word"])
        ids = got["id"].tolist()
        for a, b in zip(ids, want):
            assert a == b or abs(sims[a] - sims[b]) < 1e-6, (qi, ids, want.tolist())


def test_segments_past_the_threshold_are_indexed_automatically(server, dataset):
    client = server["client"]
    base, words, queries = dataset
    n = 12_000
    df = pd.DataFrame({"id": np.arange(n, dtype=np.int64), "word": words[:n], "vector": list(base[:n])})
    path = ["auto", "index_threshold=5000", "m=12", "ef_search=80"]
    assert put(client, path, pa.Table.from_pandas(df, preserve_index=False))["rows"] == n

    def stats():
        return json.loads(next(iter(client.do_action(flight.Action("stats", b"auto")))).body.to_pybytes())

    deadline = time.time() + 300
    while stats()["index_kinds"] != ["hnsw"]:
        assert time.time() < deadline, stats()
        # Reads are served while the index is built in the background.
        assert len(sql(client, f"SELECT id FROM knn('auto', {vec_literal(queries[0])}, 10)")) == 10
        time.sleep(0.5)
    final = stats()
    assert final["index_error"] is None and not final["indexing"]
    assert final["index"] == {
        "m": 12,
        "ef_construction": 200,
        "ef_search": 80,
        "index_threshold": 5000,
        "ivf_threshold": 1_000_000,
        "nlist": 0,
        "nprobe": 32,
    }
    normed = base[:n] / np.linalg.norm(base[:n], axis=1, keepdims=True)
    found = 0
    for qi in range(50):
        q = queries[qi]
        want = set(np.argsort(-(normed @ (q / np.linalg.norm(q))))[:10].tolist())
        got = sql(client, f"SELECT id FROM knn('auto', {vec_literal(q)}, 10)")["id"].to_pylist()
        found += len(want & set(got))
    assert found / 500 >= 0.95, found / 500
    list(client.do_action(flight.Action("drop_collection", b"auto")))


def test_knn_joined_with_parquet_and_aggregated(server, loaded, dataset):
    base, words, queries = dataset
    rng = np.random.default_rng(7)
    analytics = pd.DataFrame({
        "word": words,
        "category": rng.choice(["noun", "verb", "adj"], size=N),
        "clicks": rng.integers(0, 1000, size=N),
    })
    path = server["external"] / "analytics.parquet"
    pq.write_table(pa.Table.from_pandas(analytics, preserve_index=False), path)
    sql(loaded, f"CREATE EXTERNAL TABLE analytics STORED AS PARQUET LOCATION '{path}'")
    q = vec_literal(queries[0])
    got = sql(loaded, f"""
        SELECT a.category, count(*) AS n, sum(a.clicks) AS clicks
        FROM knn('words', {q}, 50) AS k JOIN analytics AS a ON k.word = a.word
        GROUP BY a.category ORDER BY a.category""").to_pandas()
    nearest = sql(loaded, f"SELECT word FROM knn('words', {q}, 50)").to_pandas()
    want = (analytics[analytics.word.isin(nearest.word)]
            .groupby("category").agg(n=("word", "size"), clicks=("clicks", "sum")).reset_index())
    assert got["category"].tolist() == want["category"].tolist()
    assert got["n"].tolist() == want["n"].tolist()
    assert got["clicks"].tolist() == want["clicks"].tolist()
    assert got["n"].sum() == 50


def test_distance_functions_in_sql(loaded, dataset):
    base, _, queries = dataset
    q = queries[1]
    got = sql(loaded, f"SELECT id, cosine_distance(vector, {vec_literal(q)}) AS d FROM words "
                      f"ORDER BY d LIMIT 5").to_pandas()
    knn = sql(loaded, f"SELECT id FROM knn('words', {vec_literal(q)}, 5)").to_pandas()
    assert got["id"].tolist() == knn["id"].tolist()


def test_wrong_dimension_is_refused_and_nothing_written(loaded, dataset):
    base, _, _ = dataset
    bad = pa.table({
        "id": pa.array([N + 1, N + 2], pa.int64()),
        "word": ["x", "y"],
        "vector": pa.array([base[0][:383].tolist(), base[1][:383].tolist()], pa.list_(pa.float32())),
    })
    with pytest.raises(pa.ArrowException) as err:
        put(loaded, ["words"], bad)
    assert "wrong dimension 383" in str(err.value) and "384" in str(err.value)
    assert sql(loaded, "SELECT count(*) AS n FROM words")["n"][0].as_py() == N


def test_other_bad_input_gets_clear_errors(loaded, dataset):
    base, _, _ = dataset
    row = base[0].tolist()
    dup = pa.table({"id": pa.array([5], pa.int64()), "word": ["dup"], "vector": pa.array([row], pa.list_(pa.float32()))})
    with pytest.raises(pa.ArrowException, match="duplicate id 5"):
        put(loaded, ["words"], dup)
    nan = pa.table({"id": pa.array([N + 5], pa.int64()), "word": ["nan"],
                    "vector": pa.array([[float("nan")] + row[1:]], pa.list_(pa.float32()))})
    with pytest.raises(pa.ArrowException, match="non-finite"):
        put(loaded, ["words"], nan)
    ragged = pa.table({"id": pa.array([1, 2], pa.int64()), "vector": pa.array([[1.0, 2.0], [1.0]], pa.list_(pa.float32()))})
    with pytest.raises(pa.ArrowException, match="row 1"):
        put(loaded, ["ragged"], ragged)
    with pytest.raises(pa.ArrowException, match="invalid collection name"):
        put(loaded, ["../evil"], dup)
    with pytest.raises(pa.ArrowException, match="not found"):
        sql(loaded, f"SELECT * FROM knn('nope', {vec_literal(row)}, 3)")
    assert sql(loaded, "SELECT count(*) AS n FROM words")["n"][0].as_py() == N
    assert [i.descriptor.path for i in loaded.list_flights()] == [[b"words"]]


def test_a_full_100k_batch_is_accepted(server):
    client = server["client"]
    n, d = 100_000, 384
    vectors = np.random.default_rng(1).standard_normal((n, d), dtype=np.float32)
    values = pa.array(vectors.reshape(-1))
    table = pa.table({"id": pa.array(np.arange(n, dtype=np.int64)),
                      "vector": pa.FixedSizeListArray.from_arrays(values, d)})
    writer, reader = client.do_put(flight.FlightDescriptor.for_path("big", "metric=l2", "index_threshold=0"), table.schema)
    writer.write_table(table)  # one 154 MB message
    writer.done_writing()
    assert json.loads(reader.read().to_pybytes())["rows"] == n
    writer.close()
    got = sql(client, f"SELECT id FROM knn('big', {vec_literal(vectors[123])}, 1)")
    assert got["id"].to_pylist() == [123]
    stats = json.loads(next(iter(client.do_action(flight.Action("stats", b"big")))).body.to_pybytes())
    assert stats["rows"] == n and stats["metric"] == "l2"
    list(client.do_action(flight.Action("drop_collection", b"big")))
