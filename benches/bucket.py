"""Object storage against a local directory, side by side with one build: bulk load, cold open
and first query from an empty cache, warm query latency, and how soon a second handle sees a
commit. The bucket is moto's S3 server started here on 127.0.0.1 (`pip install 'moto[server]'`).

    PYTHONPATH=python .venv/bin/python benches/bucket.py [DATASET_DIR] [ROWS]

Prints one JSON line per target. The package is whatever `omendb` imports (the workspace's
debug build in CI; `pip install ./python` for release figures). Where `lancedb` imports too
(`pip install lancedb`), LanceDB runs the same on both targets after OmenDB: load without an
index, then an IVF_HNSW_SQ index built (timed apart), cold open + first query, warm latency.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

import omendb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "shared", "datasets", "minilm-words")
ROWS = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
BATCH = 10_000
QUERIES = 200


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto():
    moto = shutil.which("moto_server") or os.path.join(os.path.dirname(sys.executable), "moto_server")
    port = free_port()
    proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    import boto3
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket="omendb")
    return proc, {"endpoint": endpoint, "allow_http": "true", "access_key_id": "test",
                  "secret_access_key": "test", "region": "us-east-1"}


def run(target, options, base, queries, gt, tmp):
    kw = {"storage_options": options} if options else {}
    connect = lambda cache: omendb.connect(target, cache_dir=os.path.join(tmp, cache), **kw)
    out = {"system": "omendb", "target": "bucket" if options else "local", "rows": len(base)}
    with connect("load") as db:
        docs = db.create_collection("docs", dim=base.shape[1], metric="cosine")
        t = time.perf_counter()
        for i in range(0, len(base), BATCH):
            while True:  # as a loader does: a put held back by the unindexed-rows bound is retried
                try:
                    docs.add(ids=np.arange(i, min(i + BATCH, len(base))), vectors=base[i:i + BATCH])
                    break
                except omendb.ResourceExhausted:
                    time.sleep(0.2)
        out["load_rows_per_s"] = round(len(base) / (time.perf_counter() - t))
        t = time.perf_counter()
        docs.wait_for_indexing()
        out["indexing_s"] = round(time.perf_counter() - t, 2)
    # Cold: a new handle with an empty cache opens the collection and answers one query.
    t = time.perf_counter()
    with connect("cold") as db:
        docs = db.open_collection("docs")
        docs.search(queries[0], k=10)
        out["cold_open_first_query_s"] = round(time.perf_counter() - t, 3)
        lat, hits = [], []
        for q in queries:
            t = time.perf_counter()
            ids = docs.search(q, k=10).column("id").to_pylist()
            lat.append(time.perf_counter() - t)
            hits.append(ids)
        out["warm_p50_ms"] = round(float(np.percentile(lat, 50)) * 1e3, 3)
        out["warm_p99_ms"] = round(float(np.percentile(lat, 99)) * 1e3, 3)
        out["recall_at_10"] = round(float(np.mean([len(set(h) & set(g)) / 10 for h, g in zip(hits, gt)])), 4)
        if options:
            # A second handle (another server) sees a commit of this one within its refresh.
            with connect("second") as other:
                seen = other.open_collection("docs")
                before = seen.count()
                t = time.perf_counter()
                docs.add(ids=np.arange(len(base), len(base) + 10), vectors=base[:10])
                while other.open_collection("docs").count() == before:
                    time.sleep(0.01)
                out["second_handle_sees_commit_s"] = round(time.perf_counter() - t, 3)
    return out


def run_lancedb(target, options, base, queries, gt):
    import lancedb
    import pyarrow as pa
    kw = {"storage_options": {("aws_" + k if k in ("access_key_id", "secret_access_key") else k): v
                              for k, v in options.items()}} if options else {}
    out = {"system": "lancedb", "target": "bucket" if options else "local", "rows": len(base)}
    db = lancedb.connect(target, **kw)
    table = None
    t = time.perf_counter()
    for i in range(0, len(base), BATCH):
        rows = pa.table({"id": pa.array(np.arange(i, min(i + BATCH, len(base)))),
                         "vector": pa.FixedSizeListArray.from_arrays(
                             pa.array(base[i:i + BATCH].reshape(-1)), base.shape[1])})
        if table is None:
            table = db.create_table("docs", rows)
        else:
            table.add(rows)
    out["load_rows_per_s"] = round(len(base) / (time.perf_counter() - t))
    t = time.perf_counter()
    table.create_index(metric="cosine", index_type="IVF_HNSW_SQ")
    out["indexing_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    docs = lancedb.connect(target, **kw).open_table("docs")
    docs.search(queries[0]).metric("cosine").limit(10).to_arrow()
    out["cold_open_first_query_s"] = round(time.perf_counter() - t, 3)
    lat, hits = [], []
    for q in queries:
        t = time.perf_counter()
        hits.append(docs.search(q).metric("cosine").limit(10).to_arrow().column("id").to_pylist())
        lat.append(time.perf_counter() - t)
    out["warm_p50_ms"] = round(float(np.percentile(lat, 50)) * 1e3, 3)
    out["warm_p99_ms"] = round(float(np.percentile(lat, 99)) * 1e3, 3)
    out["recall_at_10"] = round(float(np.mean([len(set(h) & set(g)) / 10 for h, g in zip(hits, gt)])), 4)
    return out


def main():
    base = np.load(os.path.join(DATA, "base.npy"))[:ROWS].astype(np.float32)
    queries = np.load(os.path.join(DATA, "queries.npy"))[:QUERIES].astype(np.float32)
    if ROWS < 100_000:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from ground_truth import exact_top100
        gt = exact_top100(queries, base)[:, :10]
    else:
        gt = np.load(os.path.join(DATA, "gt_cosine.npy"))[:QUERIES, :10]
    proc, options = start_moto()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run(os.path.join(tmp, "local-db"), None, base, queries, gt, tmp)), flush=True)
            print(json.dumps(run("s3://omendb/bench", options, base, queries, gt, tmp)), flush=True)
            try:
                import lancedb  # noqa: F401
            except ImportError:
                return
            print(json.dumps(run_lancedb(os.path.join(tmp, "lance"), None, base, queries, gt)), flush=True)
            print(json.dumps(run_lancedb("s3://omendb/lance", options, base, queries, gt)), flush=True)
    finally:
        proc.terminate()


if __name__ == "__main__":
    main()
