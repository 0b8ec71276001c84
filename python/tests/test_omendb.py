"""The omendb package in-process: real databases in temporary directories and in a bucket of
a local S3-compatible server (the `db` fixture, conftest.py), results checked against numpy
brute force."""

import pathlib
import threading

import time

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import omendb

DIM = 16


def unit(rng, n, dim=DIM):
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def cosine_topk(data, q, k, mask=None):
    d = 1.0 - (data @ q) / (np.linalg.norm(data, axis=1) * np.linalg.norm(q))
    if mask is not None:
        d = np.where(mask, d, np.inf)
    order = np.argsort(d, kind="stable")[:k]
    return order[np.isfinite(d[order])], d


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def filled(db, rng, n=500, name="docs"):
    data = unit(rng, n)
    docs_lang = np.array(["en", "de", "fr"])[np.arange(n) % 3]
    table = pa.table(
        {
            "id": pa.array(np.arange(n, dtype=np.int64)),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(data.reshape(-1)), DIM),
            "lang": pa.array(docs_lang),
        }
    )
    docs = db.create_collection(name, data=table, metric="cosine", index="flat")
    return docs, data, docs_lang


def test_search_equals_brute_force_and_filters_return_k_rows(db, rng):
    docs, data, lang = filled(db, rng)
    assert docs.count() == 500 and len(docs) == 500
    for q in unit(rng, 5):
        want, dist = cosine_topk(data, q, 10)
        got = docs.search(q, k=10)
        assert got.column("id").to_pylist() == want.tolist()
        np.testing.assert_allclose(got.column("_distance").to_numpy(), dist[want], atol=1e-5)
        # A filter: every row matches it, k of them come back, as brute force over the matches.
        want_en, _ = cosine_topk(data, q, 10, mask=(lang == "en"))
        got_en = docs.search(q.tolist(), k=10, where="lang = 'en'")
        assert got_en.num_rows == 10
        assert got_en.column("id").to_pylist() == want_en.tolist()
        assert set(got_en.column("lang").to_pylist()) == {"en"}


def test_batched_search_numbers_its_queries(db, rng):
    docs, data, _ = filled(db, rng)
    queries = unit(rng, 4)
    got = docs.search(queries, k=3)
    assert got.column_names[0] == "_query"
    assert got.column("_query").to_pylist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    for i, q in enumerate(queries):
        one = docs.search(q, k=3).column("id").to_pylist()
        assert got.filter(pa.compute.equal(got["_query"], i)).column("id").to_pylist() == one
    filtered = docs.search(queries, k=3, where="lang <> 'fr'")
    assert filtered.num_rows == 12 and "fr" not in filtered.column("lang").to_pylist()


@pytest.mark.parametrize("kind", ["arrow", "batch", "pandas", "polars", "dict", "numpy", "list_vectors"])
def test_every_input_kind_adds_the_same_rows(tmp_path, rng, kind):
    data = unit(rng, 20)
    ids = np.arange(20, dtype=np.int64)
    langs = ["en"] * 20
    with omendb.connect(tmp_path) as db:
        docs = db.create_collection("docs", dim=DIM, schema=pa.schema(
            [("id", pa.int64()), ("vector", pa.list_(pa.float32(), DIM)), ("lang", pa.string())]))
        fixed = pa.FixedSizeListArray.from_arrays(pa.array(data.reshape(-1)), DIM)
        if kind == "arrow":
            n = docs.add(pa.table({"id": ids, "vector": fixed, "lang": langs}))
        elif kind == "batch":
            n = docs.add(pa.RecordBatch.from_pydict({"id": ids, "vector": fixed, "lang": langs}))
        elif kind == "pandas":
            n = docs.add(pd.DataFrame({"id": ids, "vector": list(data), "lang": langs}))
        elif kind == "polars":
            n = docs.add(pl.DataFrame({"id": ids, "vector": data, "lang": langs}))
        elif kind == "dict":
            n = docs.add({"id": ids, "vector": data, "lang": langs})
        elif kind == "numpy":
            n = docs.add(ids=ids, vectors=data, lang=langs)
        else:
            n = docs.add(pa.table({"id": ids, "vector": pa.array(data.tolist()), "lang": langs}))
        assert n == 20 and docs.count() == 20
        back = docs.get([3, 19, 7])
        assert back.column("id").to_pylist() == [3, 19, 7]
        np.testing.assert_allclose(np.stack(back.column("vector").to_numpy(zero_copy_only=False)), data[[3, 19, 7]])


def test_get_delete_upsert_stats_and_sql(db, rng):
    docs, data, _ = filled(db, rng, n=100)
    assert docs.delete([1, 2, 999]) == 2
    assert docs.count() == 98
    assert docs.get([1, 3]).column("id").to_pylist() == [3]
    moved = unit(rng, 1)
    assert docs.upsert(ids=[3], vectors=moved, lang=["xx"]) == 1
    assert docs.get(3).column("lang").to_pylist() == ["xx"]
    stats = docs.stats()
    assert stats["rows"] == 98 and stats["dim"] == DIM and stats["metric"] == "cosine"

    q = unit(rng, 1)[0]
    by_sql = db.sql("SELECT id, _distance FROM knn('docs', $1, 5)", params=[q])
    assert by_sql.column("id").to_pylist() == docs.search(q, k=5).column("id").to_pylist()
    # The same statement again: planned once, bound anew.
    q2 = unit(rng, 1)[0]
    again = db.sql("SELECT id, _distance FROM knn('docs', $1, 5)", params=[q2.tolist()])
    assert again.column("id").to_pylist() == docs.search(q2, k=5).column("id").to_pylist()
    ordered = db.sql(
        "SELECT id FROM docs ORDER BY cosine_distance(vector, $1) LIMIT 5", params=[pa.array(q.tolist())]
    )
    assert ordered.column("id").to_pylist() == docs.search(q, k=5).column("id").to_pylist()
    deleted = db.sql("DELETE FROM docs WHERE lang = 'fr'")
    assert deleted.column(0).to_pylist()[0] > 0
    assert db.sql("SELECT count(*) AS n FROM docs WHERE lang = 'fr'").column("n").to_pylist() == [0]
    assert db.sql("SELECT count(*) AS n FROM docs").column("n").to_pylist() == [docs.count()]
    # Results convert as usual.
    assert list(docs.search(q, k=3).to_pandas()["id"]) == docs.search(q, k=3).column("id").to_pylist()
    assert pl.from_arrow(docs.search(q, k=3))["id"].to_list() == docs.search(q, k=3).column("id").to_pylist()


def test_results_keep_their_own_schema(db, rng):
    """Result schemas are converted to pyarrow once and reused: results of different shapes,
    one after another and past the cache's size, each keep their own columns and values."""
    docs, data, lang = filled(db, rng, n=60)
    plain = db.create_collection("plain", dim=DIM, metric="cosine")
    plain.add(ids=np.arange(60, dtype=np.int64), vectors=data)
    q = unit(rng, 3)
    for _ in range(2):
        one = docs.search(q[0], k=4)
        assert one.column_names == ["id", "vector", "lang", "_distance"]
        many = docs.search(q, k=4)
        assert many.column_names == ["_query", "id", "vector", "lang", "_distance"]
        assert many.column("_query").to_pylist() == [0] * 4 + [1] * 4 + [2] * 4
        other = plain.search(q[0], k=4)
        assert other.column_names == ["id", "vector", "_distance"]
        assert other.column("id").to_pylist() == one.column("id").to_pylist()
        got = docs.get([5, 7])
        assert got.column("lang").to_pylist() == [lang[5], lang[7]]
        none = docs.search(q[0], k=4, where="lang = 'none'")
        assert none.num_rows == 0 and none.column_names == one.column_names
    for i in range(40):
        t = db.sql(f"SELECT id AS c{i}, id + {i} AS d{i} FROM docs WHERE id = {i}")
        assert t.column_names == [f"c{i}", f"d{i}"]
        assert t.to_pylist() == [{f"c{i}": i, f"d{i}": 2 * i}]


def test_an_index_keeps_recall_against_exact_search(db, rng):
    n = 3000
    data = unit(rng, n, 32)
    docs = db.create_collection("big", dim=32, index="hnsw", index_threshold=0)
    docs.add(ids=np.arange(n), vectors=data)
    assert docs.build_index() == 1
    assert docs.stats()["index_kinds"] == ["hnsw"]
    assert recall_at_10(docs, data, unit(rng, 50, 32)) >= 0.9


def test_a_fast_search_finds_only_the_indexed_rows(db, rng):
    data = unit(rng, 1000, 32)
    # No merge folds the fresh row into the graph while the test runs.
    docs = db.create_collection("fast", dim=32, index="hnsw", index_threshold=0, compaction="off")
    docs.add(ids=np.arange(1000), vectors=data)
    assert docs.build_index() == 1
    fresh = unit(rng, 1, 32)[0]
    docs.add(ids=[5000], vectors=fresh[None, :])
    for where in [None, "id >= 0"]:
        assert docs.search(fresh, k=3, where=where).column("id")[0].as_py() == 5000
        fast = docs.search(fresh, k=3, where=where, fast=True).column("id").to_pylist()
        assert len(fast) == 3 and 5000 not in fast


def recall_at_10(docs, data, queries, nprobe=None):
    """Mean recall@10 of a batched search (ef 64) against brute force over ``data``."""
    got = docs.search(queries, k=10, ef=64, nprobe=nprobe)
    total = 0.0
    for i, q in enumerate(queries):
        want, _ = cosine_topk(data, q, 10)
        ids = got.filter(pa.compute.equal(got["_query"], i)).column("id").to_pylist()
        total += len(set(ids) & set(want.tolist())) / 10
    return total / len(queries)


@pytest.mark.parametrize("quantization", ["rabitq1", "rabitq4", "sq8", "sq4"])
def test_ivf_over_compact_codes_keeps_recall(db, rng, quantization):
    n = 3000
    data = unit(rng, n, 32)
    docs = db.create_collection(
        "lists", dim=32, index="ivf", quantization=quantization, nlist=30, index_threshold=0
    )
    docs.add(ids=np.arange(n), vectors=data)
    assert docs.build_index() == 1
    assert docs.stats()["index_kinds"] == ["ivf"]
    queries = unit(rng, 50, 32)

    def recall():
        return recall_at_10(docs, data, queries)

    # Every list scanned: only the codes' ranking stands between the result and exact (1 bit
    # per dimension of 32 ranks coarsely, so more of the truth falls past the re-ranked set).
    docs.alter(nprobe=30)
    assert recall() >= (0.93 if quantization == "rabitq1" else 0.97)
    docs.alter(nprobe=1)
    assert recall() < 0.9
    # A per-query nprobe overrides the setting, through the engine and through SQL (where=).
    assert recall_at_10(docs, data, queries, nprobe=30) >= (0.93 if quantization == "rabitq1" else 0.97)
    differ = 0
    for q in queries[:5]:
        every = docs.search(q, k=10, nprobe=30).column("id").to_pylist()
        assert docs.search(q, k=10, where="id >= 0", nprobe=30).column("id").to_pylist() == every
        differ += docs.search(q, k=10, where="id >= 0").column("id").to_pylist() != every
    assert differ > 0, "the setting's nprobe of 1 gave every list's answer"
    with pytest.raises(omendb.InvalidInput, match="nprobe must be a positive integer"):
        docs.search(queries[0], k=10, nprobe=0)
    with pytest.raises(omendb.InvalidInput, match="rabitq1 to rabitq9"):
        db.create_collection("bad", dim=4, quantization="rabitq12")


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_float16_collections_answer_as_their_rounded_vectors(db, rng, index):
    n = 800
    data = unit(rng, n, 32)
    half = db.create_collection("half", dim=32, index=index, vector_type="float16", index_threshold=0)
    half.add(ids=np.arange(n), vectors=data)
    if index == "hnsw":
        assert half.build_index() == 1
    stats = half.stats()
    assert stats["vector_type"] == "float16" and stats["index_kinds"] == [index]
    stored = half.get([5]).column("vector")
    assert stored.type == pa.list_(pa.field("item", pa.float16()), 32)
    rounded = data.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(stored[0].values.to_numpy(), dtype=np.float32), rounded[5])
    for q in unit(rng, 5, 32):
        want, dist = cosine_topk(rounded, q, 10)
        got = half.search(q, k=10, ef=200)
        assert got.column("id").to_pylist() == want.tolist()
        np.testing.assert_allclose(got.column("_distance").to_numpy(), dist[want], atol=1e-5)
        by_sql = db.sql(
            "SELECT id FROM half ORDER BY cosine_distance(vector, $1) LIMIT 10", params=[pa.array(q.tolist())]
        )
        assert by_sql.column("id").to_pylist() == want.tolist()
    with pytest.raises(omendb.InvalidInput, match="65504"):
        half.add(ids=[n], vectors=np.full((1, 32), 1e5, dtype=np.float32))
    assert half.count() == n
    # float16 arrays make a float16 collection without being asked.
    made = db.create_collection("made", data={"id": np.arange(3), "vector": data[:3].astype(np.float16)})
    assert made.stats()["vector_type"] == "float16"


def test_errors_are_typed_and_name_what_was_wrong(db, rng):
    docs = db.create_collection("docs", dim=DIM)
    with pytest.raises(omendb.InvalidInput, match="dimension 16"):
        docs.search(np.zeros(3, dtype=np.float32), k=1)
    with pytest.raises(omendb.InvalidInput, match="non-finite"):
        docs.search(np.full(DIM, np.nan, dtype=np.float32), k=1)
    docs.add(ids=[1], vectors=unit(rng, 1))
    with pytest.raises(omendb.InvalidInput, match="1"):
        docs.add(ids=[1], vectors=unit(rng, 1))
    assert docs.count() == 1
    with pytest.raises(omendb.AlreadyExists):
        db.create_collection("docs", dim=DIM)
    with pytest.raises(omendb.NotFound, match="nope"):
        db.open_collection("nope")
    with pytest.raises(omendb.InvalidInput):
        db.sql("SELEC nonsense")
    with pytest.raises(omendb.NotFound):
        db.sql("SELECT * FROM knn('nope', $1, 3)", params=[[0.0] * DIM])
    for cls in (omendb.InvalidInput, omendb.NotFound, omendb.Locked, omendb.Closed, omendb.Corrupt):
        assert issubclass(cls, omendb.Error)
    db.close()
    db.close()
    with pytest.raises(omendb.Closed):
        docs.count()
    with pytest.raises(omendb.Closed):
        db.list_collections()


def test_a_directory_is_locked_while_open_and_opens_again_once_closed(tmp_path, rng):
    db = omendb.connect(tmp_path)
    db.create_collection("docs", dim=DIM).add(ids=[1], vectors=unit(rng, 1))
    with pytest.raises(omendb.Locked):
        omendb.connect(tmp_path)
    db.close()
    # Closed means released: the directory opens again, with its rows.
    with omendb.connect(tmp_path) as again:
        assert again.open_collection("docs").count() == 1


def test_error_kinds_get_the_documented_classes(tmp_path):
    """docs/errors.md is the one table of kinds; the Flight and C front ends test it too."""
    doc = (pathlib.Path(__file__).parents[2] / "docs" / "errors.md").read_text()
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] != "kind":
            rows[cells[0]] = cells[3]
    kinds = dict(omendb._omendb._error_kinds())
    assert set(kinds) == set(rows)
    for kind, cls in kinds.items():
        assert rows[kind] == f"omendb.{cls}", kind
        assert issubclass(getattr(omendb, cls), omendb.Error)
    db = omendb.connect(tmp_path)
    with pytest.raises(omendb.NotFound, match="nowhere"):
        db.sql("SELECT * FROM nowhere")


def test_the_docstrings_list_every_setting():
    for line in omendb._omendb._settings_help().splitlines():
        key = line.split(":")[0].strip()
        assert f"  {key}: " in omendb.Database.create_collection.__doc__, key
    assert "ef_search: " in omendb.Collection.alter.__doc__
    assert "metric: " not in omendb.Collection.alter.__doc__


def test_create_with_data_never_appends_to_a_collection_made_meanwhile(tmp_path, rng):
    """The write mode is the engine's and holds at the commit: of many creates of one name at
    once, exactly one succeeds and the others fail with AlreadyExists."""
    db = omendb.connect(tmp_path)
    outcomes = []
    vectors = unit(rng, 8)

    def create(i):
        rows = pa.table(
            {"id": [i], "vector": pa.array([vectors[i].tolist()], pa.list_(pa.float32(), DIM))}
        )
        try:
            db.create_collection("race", data=rows)
            outcomes.append("created")
        except omendb.AlreadyExists:
            outcomes.append("exists")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["created"] + ["exists"] * 7
    assert db.open_collection("race").count() == 1


def test_independent_databases_and_threads(tmp_path, rng):
    dbs = [omendb.connect(tmp_path / f"db{i}") for i in range(3)]
    datas = []
    for i, db in enumerate(dbs):
        data = unit(rng, 200)
        db.create_collection("docs", dim=DIM).add(ids=np.arange(200) + i * 1000, vectors=data)
        datas.append(data)
    for i, db in enumerate(dbs):
        assert db.list_collections() == ["docs"]
        top = db.open_collection("docs").search(datas[i][5], k=1).column("id").to_pylist()
        assert top == [i * 1000 + 5]
    queries = unit(rng, 40)
    docs = dbs[0].open_collection("docs")
    expected = [docs.search(q, k=5).column("id").to_pylist() for q in queries]
    results = {}

    def worker(t):
        results[t] = [docs.search(q, k=5).column("id").to_pylist() for q in queries]

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[t] == expected for t in range(4))
    for db in dbs:
        db.close()


def test_the_short_form(tmp_path, rng):
    data = unit(rng, 50)
    db = omendb.DB(tmp_path / "v", dim=DIM)
    assert db.add_batch(data[:30], metadata={"tag": [f"s{i}" for i in range(30)]}) == 30
    assert db.add_batch(data[30:], metadata=[{"tag": f"t{i}"} for i in range(20)]) == 20
    assert len(db) == 50
    assert db.search(data[42], k=1).column("id").to_pylist() == [42]
    assert db.get([31]).column("tag").to_pylist() == ["t1"]
    assert db.delete([0]) == 1
    db.close()
    again = omendb.DB.load(tmp_path / "v")
    assert again.count() == 49
    again.close()
    with pytest.raises(omendb.NotFound):
        omendb.DB.load(tmp_path / "empty")
    with pytest.raises(omendb.InvalidInput, match="dimension"):
        omendb.DB(tmp_path / "v", dim=8)


def test_writes_past_the_unindexed_bound_are_refused_and_write_nothing(tmp_path, rng):
    """The engine's backpressure, as every front end gets it: past max_unindexed_rows rows
    not yet indexed, a write waits write_stall_ms for the indexing, then is refused."""
    with omendb.connect(tmp_path) as db:
        docs = db.create_collection("docs", dim=32, write_stall_ms=0, index_threshold=2_000,
                                    max_unindexed_rows=4_000)
        docs.add(ids=np.arange(8_000), vectors=unit(rng, 8_000, 32))
        # The graph of those 8,000 rows is being built: 8,000 > 4,000 rows unindexed.
        with pytest.raises(omendb.ResourceExhausted, match="max_unindexed_rows"):
            docs.add(ids=np.arange(8_000, 8_100), vectors=unit(rng, 100, 32))
        assert docs.count() == 8_000
        stats = docs.stats()
        assert stats["writes_refused"] == 1 and stats["max_unindexed_rows"] == 4_000
        # Given time, the same write waits for the index and goes in.
        docs.alter(write_stall_ms=600_000)
        docs.add(ids=np.arange(8_000, 8_100), vectors=unit(rng, 100, 32))
        assert docs.count() == 8_100


def test_a_vector_typed_into_sql_answers_as_the_bound_one(db, rng):
    data = unit(rng, 500)
    docs = db.create_collection("docs", dim=DIM)
    docs.add(ids=np.arange(500), vectors=data)
    for q in unit(rng, 3):
        typed = "[" + ", ".join(repr(float(x)) for x in q) + "]"
        literal = db.sql(f"SELECT id, _distance FROM knn('docs', {typed}, 5)")
        bound = db.sql("SELECT id, _distance FROM knn('docs', $1, 5)", params=[q])
        assert literal.column("id").to_pylist() == bound.column("id").to_pylist()
        assert literal.column("id").to_pylist() == list(cosine_topk(data, q, 5)[0])
    with pytest.raises(omendb.InvalidInput, match="dimension"):
        db.sql("SELECT id FROM knn('docs', [1,2,3,4,5,6,7,8,9], 5)")


def test_a_database_on_object_storage_round_trips(tmp_path, rng):
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    url = f"file://{bucket}"
    data = unit(rng, 200, 16)
    with omendb.connect(url, cache_dir=tmp_path / "cache-a") as db:
        docs = db.create_collection("docs", dim=16)
        docs.add(ids=np.arange(200), vectors=data)
        assert docs.search(data[7], k=1).column("id").to_pylist() == [7]
    # Another handle (another server) over the same URL, with a cache of its own.
    with omendb.connect(url, cache_dir=tmp_path / "cache-b") as db:
        assert db.list_collections() == ["docs"]
        assert db.open_collection("docs").count() == 200
        assert db.open_collection("docs").search(data[9], k=1).column("id").to_pylist() == [9]
    with pytest.raises(omendb.InvalidInput, match="nope://x"):
        omendb.connect("nope://x")


def test_remote_mode_sends_the_token_and_the_server_checks_its_role(tmp_path, rng):
    from conftest import serve

    (tmp_path / "tokens.txt").write_text("reader-token read\nwriter-token admin\n")
    with serve(tmp_path / "db", "--token-file", str(tmp_path / "tokens.txt")) as url:
        with pytest.raises(omendb.Error, match="(?i)token"):
            omendb.connect(url)
        with pytest.raises(omendb.Error, match="(?i)token"):
            omendb.connect(url, token="wrong")
        with omendb.connect(url, token="writer-token") as admin:
            docs = admin.create_collection("docs", dim=DIM)
            docs.add(ids=np.arange(50), vectors=unit(rng, 50))
        with omendb.connect(url, token="reader-token", timeout=30) as reader:
            docs = reader.open_collection("docs")
            assert docs.search(unit(rng, 1)[0], k=5).num_rows == 5
            with pytest.raises(omendb.Error, match="write"):
                docs.add(ids=[99], vectors=unit(rng, 1))
            with pytest.raises(omendb.Error, match="(?i)delete|write"):
                docs.delete([1])
            assert docs.count() == 50
    with pytest.raises(omendb.InvalidInput, match="server"):
        omendb.connect("grpc://127.0.0.1:1", cache_dir=tmp_path)


def test_a_stream_of_searches_answers_each_in_turn_on_one_call(tmp_path, rng):
    """The documented `{"search": ..., "stream": true}` exchange, spoken with pyarrow.flight
    alone: each batch one search (its metadata its own options), answered by its rows and a
    closing message; a failing search ends the call with its error, and the package's remote
    mode recovers from it on its next search."""
    import json

    import pyarrow.flight as fl
    from conftest import serve

    data = unit(rng, 300)
    with serve(tmp_path / "db", "--slow-query-ms", "300") as url:
        with omendb.connect(url) as db:
            db.create_collection("docs", data={"id": np.arange(300), "vector": data, "even": np.arange(300) % 2 == 0})
            client = fl.FlightClient(url)
            command = json.dumps({"search": "docs", "k": 4, "stream": True}).encode()
            writer, reader = client.do_exchange(fl.FlightDescriptor.for_command(command))
            schema = pa.schema([pa.field("vector", pa.list_(pa.float32(), DIM))])
            writer.begin(schema)

            def ask(rows, metadata=None):
                batch = pa.RecordBatch.from_arrays([pa.FixedSizeListArray.from_arrays(pa.array(data[rows].ravel()), DIM)], schema=schema)
                if metadata is None:
                    writer.write_batch(batch)
                else:
                    writer.write_with_metadata(batch, pa.py_buffer(json.dumps(metadata).encode()))
                batches = []
                while True:
                    chunk = reader.read_chunk()
                    if chunk.data is None:
                        return pa.Table.from_batches(batches, schema=reader.schema), json.loads(chunk.app_metadata.to_pybytes())
                    batches.append(chunk.data)

            time.sleep(0.5)  # an open call the client holds is no slow query (checked below)
            got, closing = ask([7])  # the command's k
            assert got.column("id").to_pylist()[0] == 7 and got.num_rows == 4 and closing == {"rows": 4}
            got, closing = ask([8, 9], {"k": 2, "where": "even"})  # two queries, own k and filter
            assert got.column("_query").to_pylist() == [0, 0, 1, 1] and closing == {"rows": 4}
            assert all(i % 2 == 0 for i in got.column("id").to_pylist()) and got.column("id").to_pylist()[0] == 8
            got, closing = ask([10], {"k": 3, "where": "id < 0"})  # nothing matches: no rows
            assert got.num_rows == 0 and closing == {"rows": 0}
            with pytest.raises(pa.ArrowInvalid, match=r"k 20000 is over the limit of 10000 \(--max-k\)"):
                ask([11], {"k": 20000})
            writer, reader = client.do_exchange(fl.FlightDescriptor.for_command(command))
            writer.begin(schema)
            with pytest.raises(pa.ArrowInvalid, match="the collection is the command's"):
                ask([11], {"search": "other", "k": 1})
            # The package's open call fails like this one; its next search opens another.
            docs = db.open_collection("docs")
            assert docs.search(data[12], k=1).column("id").to_pylist() == [12]
            with pytest.raises(omendb.InvalidInput, match="over the limit"):
                docs.search(data[12], k=20000)
            assert docs.search(data[13], k=1).column("id").to_pylist() == [13]
    assert "slow query: do_exchange" not in (tmp_path / "db.log").read_text()
