"""omendb.datafusion: an in-process database's collections, knn() and the distance functions in
a datafusion-python SessionContext of the user's own (datafusion 55 from PyPI), through
DataFusion's FFI."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import omendb

datafusion = pytest.importorskip("datafusion")
import omendb.datafusion as odf  # noqa: E402

DIM = 16
ROWS = 600


@pytest.fixture
def docs(tmp_path):
    """A database with 'docs': ROWS unit vectors, a `tag` that is 'rare' on every 20th row."""
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((ROWS, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    tags = ["rare" if i % 20 == 0 else "common" for i in range(ROWS)]
    db = omendb.connect(str(tmp_path / "db"))
    db.create_collection("docs", data={"id": np.arange(ROWS, dtype=np.int64), "vector": vectors, "tag": tags})
    yield db, vectors, np.array(tags)
    db.close()


def _nearest(vectors, query, k, rows=None):
    """Brute force: the ids of the k rows nearest `query` by cosine distance, among `rows`."""
    rows = np.arange(len(vectors)) if rows is None else rows
    d = 1.0 - vectors[rows] @ query
    return [int(rows[i]) for i in np.argsort(d, kind="stable")[:k]]


def _context(db):
    ctx = datafusion.SessionContext()
    odf.register(ctx, db)
    return ctx


def test_knn_in_the_users_context_equals_brute_force(docs):
    db, vectors, _ = docs
    ctx = _context(db)
    for qi in (3, 101, 577):
        q = vectors[qi]
        got = ctx.sql(
            "SELECT id, _distance FROM knn('docs', $q, 10) ORDER BY _distance",
            q=odf.vector(q),
        ).to_pydict()
        assert got["id"] == _nearest(vectors, q, 10)
        assert got["id"][0] == qi
        np.testing.assert_allclose(got["_distance"], sorted(1.0 - vectors[got["id"]] @ q), atol=1e-5)


def test_a_join_with_a_parquet_file_equals_omendbs_own_sql(docs, tmp_path):
    db, vectors, _ = docs
    path = tmp_path / "clicks.parquet"
    pq.write_table(pa.table({"id": np.arange(0, ROWS, 2, dtype=np.int64), "clicks": np.arange(0, ROWS, 2) * 3}), path)
    ctx = _context(db)
    ctx.register_parquet("clicks", str(path))
    q = vectors[42]
    join = "SELECT k.id, c.clicks FROM knn('docs', {q}, 20) k JOIN {clicks} c ON c.id = k.id ORDER BY k._distance"
    theirs = ctx.sql(join.format(q="$q", clicks="clicks"), q=odf.vector(q)).to_pydict()
    ours = db.sql(join.format(q="$1", clicks=f"'{path}'"), [q]).to_pydict()
    assert theirs == ours
    assert 0 < len(theirs["id"]) < 20 and all(i % 2 == 0 for i in theirs["id"])


def test_a_where_reaches_the_search(docs):
    db, vectors, tags = docs
    ctx = _context(db)
    q = vectors[5]
    got = ctx.sql(
        "SELECT id, tag FROM knn('docs', $q, 10) WHERE tag = 'rare' ORDER BY _distance",
        q=odf.vector(q),
    ).to_pydict()
    # A pre-filter: the 10 nearest rare rows, not the rare rows among the 10 nearest.
    assert got["tag"] == ["rare"] * 10
    assert got["id"] == _nearest(vectors, q, 10, np.flatnonzero(tags == "rare"))


def test_collections_are_tables_and_the_distance_functions_scalar_functions(docs):
    db, vectors, tags = docs
    ctx = _context(db)
    assert ctx.sql("SELECT count(*) AS n FROM docs WHERE tag = 'rare'").to_pydict() == {"n": [int((tags == "rare").sum())]}
    assert ctx.sql("SELECT id, tag FROM docs WHERE id = 40").to_pydict() == {"id": [40], "tag": ["rare"]}
    q = vectors[9]
    got = ctx.sql(
        "SELECT id, cosine_distance(vector, $q) AS d FROM docs ORDER BY d LIMIT 5", q=odf.vector(q)
    ).to_pydict()
    assert got["id"] == _nearest(vectors, q, 5)
    l2 = ctx.sql("SELECT l2_distance(vector, $q) AS d FROM docs WHERE id = 1", q=odf.vector(q)).to_pydict()
    assert l2["d"][0] == pytest.approx(float(np.linalg.norm(vectors[1] - q)), abs=1e-5)


def test_bad_calls_get_clear_errors(docs):
    db, vectors, _ = docs
    ctx = _context(db)
    with pytest.raises(Exception, match="dimension 3, collection 'docs' has dimension 16"):
        ctx.sql("SELECT * FROM knn('docs', [1.0, 2.0, 3.0], 10)").collect()
    with pytest.raises(Exception, match="is a parameter"):
        ctx.sql("SELECT * FROM knn('docs', $1, 10)", param_values={"1": [0.0] * DIM}).collect()
    with pytest.raises(Exception, match="'nope'"):
        ctx.sql(f"SELECT * FROM knn('nope', {odf.vector(vectors[0])}, 10)").collect()
    with pytest.raises(omendb.InvalidInput, match="one dimension"):
        odf.vector(vectors[:2])


def test_a_datafusion_of_another_version_is_refused(docs, monkeypatch):
    db, _, _ = docs
    monkeypatch.setattr(datafusion, "__version__", "54.1.0")
    with pytest.raises(omendb.Error, match="DataFusion 55.*54.1.0"):
        odf.register(datafusion.SessionContext(), db)


def test_a_closed_database_fails_the_sessions_queries(docs):
    db, vectors, _ = docs
    ctx = _context(db)
    db.close()
    with pytest.raises(Exception, match="closed"):
        ctx.sql("SELECT count(*) FROM docs").collect()
