"""Small puts against the real server: do merges keep the collection as fast as a bulk load?

100,000 minilm-words rows are pushed as PUTS puts of ROWS rows over plain Flight (one client),
then the collection is left alone; the script reports the put rate, the most segments seen
while streaming, how long after the last put the segment count is at most 10 and when the
background work settles, and then recall@10 and the p50/p99 latency of a bound knn(..., 10) at
the collection's default ef over ADBC Flight SQL. The same rows bulk-loaded in one put (and
indexed) are measured the same way, side by side. Last, UPSERTS upserts of 1,000 stored rows
(do_put mode=upsert) give the upsert rate. One JSON line per measurement.

  cargo build --release -p omendb-flight --bin omendb
  python benches/compaction_stream.py [DATASET_DIR] [OMENDB_BIN]
Environment: PUTS (default 1000), ROWS (default 100), NQ (default 500), UPSERTS (default 20).
"""
import json
import tempfile
import time

import adbc_driver_flightsql.dbapi as flightsql
import numpy as np
import pyarrow as pa
import pyarrow.flight as fl

from bench_common import dataset_and_binary, emit, env_int, load_dataset, put, serve

data_dir, binary = dataset_and_binary()
PUTS = env_int("PUTS", 1000)
ROWS = env_int("ROWS", 100)
NQ = env_int("NQ", 500)
UPSERTS = env_int("UPSERTS", 20)
N = PUTS * ROWS

base, queries, gt = load_dataset(data_dir, N, NQ)


def table(lo, hi, tag="v0"):
    return pa.table({
        "id": pa.array(np.arange(lo, hi, dtype=np.int64)),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(base[lo:hi].ravel()), base.shape[1]),
        "tag": pa.array([tag] * (hi - lo)),
    })


def stats(client, name):
    return json.loads(next(client.do_action(fl.Action("stats", name.encode()))).body.to_pybytes())


def search(conn, name):
    cur = conn.cursor()
    lat, ids = [], []
    for q in queries:
        t = time.perf_counter()
        cur.execute(f"SELECT id FROM knn('{name}', $1, 10)", parameters=(q.tolist(),))
        got = cur.fetch_arrow_table().column("id").to_pylist()
        lat.append(time.perf_counter() - t)
        ids.append(got)
    cur.close()
    rec = float(np.mean([len(set(ids[i]) & set(gt[i].tolist())) / 10 for i in range(len(ids))]))
    return rec, float(np.percentile(lat, 50) * 1e3), float(np.percentile(lat, 99) * 1e3)


def settle(client, name, t0, limit=300):
    """Polls stats until the background work is done; returns when <=10 segments, when done."""
    at10 = None
    while True:
        s = stats(client, name)
        now = time.perf_counter() - t0
        if at10 is None and s["segments"] <= 10:
            at10 = now
        if not s["indexing"] and "flat" not in s["index_kinds"]:
            return at10, now, s
        if now > limit:
            return at10, None, s
        time.sleep(0.2)


def main():
    server, client, uri = serve(binary, tempfile.mkdtemp(prefix="omendb-stream-bench-"))
    try:
        conn = flightsql.connect(uri)

        # Small puts.
        most = 0
        t0 = time.perf_counter()
        for i in range(PUTS):
            put(client, ["stream"], table(i * ROWS, (i + 1) * ROWS))
            if i % 25 == 0:
                most = max(most, stats(client, "stream")["segments"])
        elapsed = time.perf_counter() - t0
        last = time.perf_counter()
        emit(what="small puts", puts=PUTS, rows_per_put=ROWS, seconds=round(elapsed, 2),
             rows_per_s=round(N / elapsed), puts_per_s=round(PUTS / elapsed, 1),
             most_segments_seen=most)
        at10, done, st = settle(client, "stream", last)
        emit(what="after the last put", seconds_to_at_most_10_segments=at10 and round(at10, 2),
             seconds_to_settled=done and round(done, 2), segments=st["segments"],
             index_kinds=st["index_kinds"], rows=st["rows"])
        # The same rows in one put.
        t0 = time.perf_counter()
        put(client, ["bulk"], table(0, N))
        _, done, st_b = settle(client, "bulk", t0)
        emit(what="bulk load", seconds_to_indexed=done and round(done, 2), segments=st_b["segments"])

        # Side by side, alternating, twice: the machine's speed drifts between passes.
        runs = {"stream": [], "bulk": []}
        for _ in range(2):
            for name in ("stream", "bulk"):
                runs[name].append(search(conn, name))
        for name, label in (("stream", "knn after small puts"), ("bulk", "knn after bulk load")):
            for rec, p50, p99 in runs[name]:
                emit(what=label, recall_at_10=round(rec, 4), p50_ms=round(p50, 3),
                     p99_ms=round(p99, 3))
        best = {k: min(r[1] for r in v) for k, v in runs.items()}
        rec = {k: v[0][0] for k, v in runs.items()}
        emit(what="small puts vs bulk", latency_ratio=round(best["stream"] / best["bulk"], 3),
             recall_ratio=round(rec["stream"] / rec["bulk"], 4))

        # Upserts of 1,000 stored rows each.
        t0 = time.perf_counter()
        for i in range(UPSERTS):
            lo = (i * 1000) % max(N - 1000, 1)
            put(client, ["stream", "mode=upsert"], table(lo, lo + 1000, f"v{i + 1}"))
        elapsed = time.perf_counter() - t0
        st = stats(client, "stream")
        emit(what="upserts", upserts=UPSERTS, rows_per_upsert=1000, seconds=round(elapsed, 2),
             rows_per_s=round(UPSERTS * 1000 / elapsed), rows=st["rows"], segments=st["segments"])
        assert st["rows"] == N, st
        conn.close()
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
