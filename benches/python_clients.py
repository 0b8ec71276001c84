"""A Python user's ways to one OmenDB, beside pgvector, in one run: one client, one query per
call, the same held-out queries and ground truth (recall@10), an HNSW of M 16 and
ef_construction 200 everywhere, an ef sweep. Runs `bench_sql_peers.py` (../shared/bench) for
pgvector over psycopg (prepared statement), OmenDB over ADBC Flight SQL (bound knn()) and the
Python package's remote mode (one DoExchange per search), then the package in process on the
same machine. One JSON line per (system, ef), as bench_sql_peers prints.

  PYTHONPATH=python ~/.venvs/sql-peers/bin/python benches/python_clients.py \\
      ../shared/datasets/minilm-words target/release/omendb [../shared/bench/bench_sql_peers.py]

SYSTEMS (default pgvector,omendb-adbc,omendb-remote) picks the peers' part. Where pgserver's pgvector
does not run (SIGILL), put benches/peers/pgserver_debian first on PYTHONPATH (its docstring says how). The in-process
figures come from whichever build of the package PYTHONPATH finds (a debug build's engine is
optimized, its bindings are not: say which).
"""
import json
import os
import runpy
import sys
import tempfile
import time

import numpy as np

dataset, server = sys.argv[1], sys.argv[2]
peers = sys.argv[3] if len(sys.argv) > 3 else os.path.join(os.path.dirname(__file__), "../../shared/bench/bench_sql_peers.py")
systems = os.environ.get("SYSTEMS", "pgvector,omendb-adbc,omendb-remote")
sys.argv = [peers, dataset, systems, server]
runpy.run_path(peers, run_name="__main__")

import omendb  # noqa: E402

NQ = int(os.environ.get("NQ", 300))
base = np.load(f"{dataset}/base.npy").astype(np.float32)
base /= np.linalg.norm(base, axis=1, keepdims=True)
queries = np.load(f"{dataset}/queries.npy").astype(np.float32)[:NQ]
gt = np.load(f"{dataset}/gt_cosine.npy")[:NQ, :10]
with omendb.connect(tempfile.mkdtemp(prefix="omendb-inproc-")) as db:
    t = time.perf_counter()
    docs = db.create_collection("docs", data={"id": np.arange(len(base)), "vector": base},
                                m=16, ef_construction=200, index_threshold=0)
    load = len(base) / (time.perf_counter() - t)
    t = time.perf_counter()
    docs.build_index()
    build = time.perf_counter() - t
    for ef in [40, 64, 100, 200, 400]:
        for q in queries[:20]:
            docs.search(q, k=10, ef=ef)
        ids, lat = [], []
        for q in queries:
            t = time.perf_counter()
            hits = docs.search(q, k=10, ef=ef)
            lat.append(time.perf_counter() - t)
            ids.append(hits.column("id").to_pylist())
        recall = float(np.mean([len(set(ids[i]) & set(gt[i].tolist())) / 10 for i in range(len(ids))]))
        lat = np.array(lat) * 1000
        print(json.dumps(dict(system="omendb-inprocess", ef=ef, recall=round(recall, 4),
                              qps=round(len(lat) / (lat.sum() / 1000), 1),
                              p50_ms=round(float(np.median(lat)), 3), p99_ms=round(float(np.percentile(lat, 99)), 3),
                              load_rows_s=round(load), build_s=round(build, 2), n=len(base), dim=base.shape[1])),
              flush=True)
