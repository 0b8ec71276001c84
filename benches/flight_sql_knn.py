"""Bound knn() over ADBC Flight SQL against the real server: latency of one client and the
throughput of many, on the minilm-words rows with an HNSW index.

For each ef: recall@10 against the exact cosine ground truth, p50/p99 latency of
`cursor.execute("SELECT id FROM knn('docs', $1, 10, <ef>)", parameters=(vector,))` from one
client (prepared once by the driver; each call binds, describes and fetches), the same three
calls made through pyarrow.flight (`flight_sql_lean.py`: the server's part), then queries/s
with CLIENTS concurrent clients, each on its own connection. Prints one JSON line per
measurement.

  cargo build --release -p omendb-flight --bin omendb
  python benches/flight_sql_knn.py [DATASET_DIR] [OMENDB_BIN]
Environment: N (rows, default 100000), NQ (queries, default 1000), CLIENTS (default 16),
EFS (default 16,32,64,128), SYSTEMS (default omendb; omendb,pgvector runs pgvector after it on
the same rows and queries: a PostgreSQL with pgvector at PG_DSN, e.g. "host=127.0.0.1 port=5433
user=postgres", queried through psycopg with a prepared statement, PG_EFS default
40,64,100,200).
"""
import json
import os
import tempfile
import threading
import time

import adbc_driver_flightsql.dbapi as flightsql
import numpy as np
import pyarrow as pa
import pyarrow.flight as fl

import flight_sql_lean
from bench_common import dataset_and_binary, emit, env_int, load_dataset, serve

data_dir, binary = dataset_and_binary()
N = env_int("N", 100_000)
NQ = env_int("NQ", 1000)
CLIENTS = env_int("CLIENTS", 16)
EFS = [int(e) for e in os.environ.get("EFS", "16,32,64,128").split(",")]
PG_EFS = [int(e) for e in os.environ.get("PG_EFS", "40,64,100,200").split(",")]
SYSTEMS = os.environ.get("SYSTEMS", "omendb").split(",")

base, queries, gt = load_dataset(data_dir, N, NQ)


def recall(ids):
    return float(np.mean([len(set(ids[i]) & set(gt[i].tolist())) / 10 for i in range(len(ids))]))


def search(cur, q, ef):
    cur.execute(f"SELECT id FROM knn('docs', $1, 10, {ef})", parameters=(q.tolist(),))
    return cur.fetch_arrow_table().column("id").to_pylist()


def one_client(system, ef, run):
    """p50/p99 latency and recall of `run(q)` over every query, one call at a time."""
    for q in queries[:50]:
        run(q)
    ids, lat = [], []
    for q in queries:
        t = time.perf_counter()
        ids.append(run(q))
        lat.append(time.perf_counter() - t)
    lat = np.array(lat) * 1000
    emit(system=system, bench="bound_knn_1_client", ef=ef, recall=round(recall(ids), 4),
         p50_ms=round(float(np.median(lat)), 3), p99_ms=round(float(np.percentile(lat, 99)), 3),
         qps=round(len(lat) / (lat.sum() / 1000), 1))


def many_clients(system, ef, connect):
    """Queries/s of CLIENTS threads, each on its own connection (`connect()` returns a
    connection and a `run(q)` on it; `close` ends it)."""
    clients = [connect() for _ in range(CLIENTS)]
    barrier = threading.Barrier(CLIENTS + 1)
    done = []

    def work(run, offset):
        run(queries[0])
        barrier.wait()
        n = 0
        for i in range(len(queries) // 4):
            run(queries[(offset + i) % len(queries)])
            n += 1
        done.append(n)

    threads = [threading.Thread(target=work, args=(r, i * 61)) for i, (_, r) in enumerate(clients)]
    for th in threads:
        th.start()
    barrier.wait()
    t = time.perf_counter()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    for c, _ in clients:
        c.close()
    emit(system=system, bench=f"bound_knn_{CLIENTS}_clients", ef=ef, queries=sum(done),
         qps=round(sum(done) / elapsed, 1))


def run_omendb():
    server, client, uri = serve(binary, tempfile.mkdtemp(prefix="omendb-adbc-bench-"))
    try:
        table = pa.table({
            "id": pa.array(np.arange(N, dtype=np.int64)),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(base.ravel()), base.shape[1]),
        })
        t = time.perf_counter()
        # Default settings: the put commits as a few segments, which the server merges into one
        # and indexes in the background, as it would for any user's bulk load.
        writer, _ = client.do_put(fl.FlightDescriptor.for_path("docs"), table.schema)
        writer.write_table(table, max_chunksize=10_000)
        writer.close()

        def stats():
            return json.loads(b"".join(r.body.to_pybytes() for r in client.do_action(fl.Action("stats", b"docs"))))

        def settled(st):
            return not st["indexing"] and not st["merges_running"] and not st["index_builds_running"]

        # Queries start once merges and index builds are done (twice in a row, a second apart).
        while True:
            time.sleep(1)
            if settled(stats()):
                time.sleep(1)
                stats_now = stats()
                if settled(stats_now):
                    break
        emit(system="omendb-adbc", bench="load_and_index", rows=N, seconds=round(time.perf_counter() - t, 1),
             segments=stats_now["segments"], index_kinds=stats_now["index_kinds"])

        def connect(ef):
            conn = flightsql.connect(uri, autocommit=True)
            cur = conn.cursor()
            return conn, lambda q: search(cur, q, ef)

        for ef in EFS:
            conn, run = connect(ef)
            one_client("omendb-adbc", ef, run)
            conn.close()
        # The same three calls per query through pyarrow.flight: the server's part.
        for ef in EFS:
            lean = flight_sql_lean.prepared(client, f"SELECT id FROM knn('docs', $1, 10, {ef})")

            def run(q, lean=lean):
                batch = pa.record_batch([pa.array([q.tolist()], pa.list_(pa.float32()))], names=["$1"])
                return lean(batch).column("id").to_pylist()
            one_client("omendb-pyarrow-flight-sql", ef, run)
        for ef in EFS:
            many_clients("omendb-adbc", ef, lambda: connect(ef))
    finally:
        server.terminate()
        server.wait(30)


def run_pgvector(dsn):
    """pgvector beside it: the same rows and queries, HNSW (m 16, ef_construction 200, as
    ../shared/bench/bench_sql_peers.py builds it), a prepared statement through psycopg with the
    vector bound, `hnsw.ef_search` per setting."""
    import psycopg
    from pgvector.psycopg import register_vector

    dim = base.shape[1]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
        conn.execute("DROP TABLE IF EXISTS omendb_bench_docs")
        conn.execute(f"CREATE TABLE omendb_bench_docs (id bigint PRIMARY KEY, embedding vector({dim}))")
        t = time.perf_counter()
        with conn.cursor().copy("COPY omendb_bench_docs (id, embedding) FROM STDIN WITH (FORMAT BINARY)") as cp:
            cp.set_types(["int8", "vector"])
            for i in range(N):
                cp.write_row((i, base[i]))
        conn.execute("SET maintenance_work_mem = '2GB'")
        conn.execute("CREATE INDEX ON omendb_bench_docs USING hnsw (embedding vector_cosine_ops) "
                     "WITH (m = 16, ef_construction = 200)")
        conn.execute("VACUUM ANALYZE omendb_bench_docs")
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
        emit(system=f"pgvector-{version}", bench="load_and_index", rows=N, seconds=round(time.perf_counter() - t, 1))

    def connect(ef):
        conn = psycopg.connect(dsn, autocommit=True)
        register_vector(conn)
        conn.execute(f"SET hnsw.ef_search = {ef}")
        cur = conn.cursor()
        sql = "SELECT id FROM omendb_bench_docs ORDER BY embedding <=> %s LIMIT 10"
        return conn, lambda q: [r[0] for r in cur.execute(sql, (q,), prepare=True)]

    for ef in PG_EFS:
        conn, run = connect(ef)
        one_client(f"pgvector-{version}", ef, run)
        conn.close()
    for ef in PG_EFS:
        many_clients(f"pgvector-{version}", ef, lambda: connect(ef))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE omendb_bench_docs")


if __name__ == "__main__":
    if "omendb" in SYSTEMS:
        run_omendb()
    if "pgvector" in SYSTEMS:
        run_pgvector(os.environ["PG_DSN"])
