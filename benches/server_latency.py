"""End-to-end latency of the real server over loopback, and knn throughput under mixed load.

1. Starts `omendb serve` (release build by default) on a fresh directory.
2. Loads the first 20,000 minilm-words vectors as collection `words` (indexed automatically).
3. Times `SELECT 1` and a knn() with a 384-float literal, one client, sequentially: p50 / p99.
4. Runs 12 knn clients and 4 clients pushing 200-row puts for 30 s (threads, one connection
   each) and reports knn/s, puts/s and any error.

Usage: python benches/server_latency.py ../shared/datasets/minilm-words [--bin target/release/omendb]
"""
import argparse
import json
import pathlib
import subprocess
import tempfile
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight

from bench_common import put


def sql(client, text):
    return client.do_get(flight.Ticket(text.encode())).read_all()


def table(ids, vectors):
    return pa.table({"id": pa.array(ids, pa.int64()),
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])})


def lit(v):
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


def timed(fn, n):
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t) * 1000)
    return np.percentile(out, 50), np.percentile(out, 99)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset", type=pathlib.Path)
    ap.add_argument("--bin", default="target/release/omendb")
    ap.add_argument("--seconds", type=float, default=30, help="load phase length (0 skips it)")
    args = ap.parse_args()
    base = np.load(args.dataset / "base.npy")[:20_000].astype(np.float32)
    queries = np.load(args.dataset / "queries.npy").astype(np.float32)
    with tempfile.TemporaryDirectory() as data:
        proc = subprocess.Popen([args.bin, "serve", "--data", data, "--addr", "127.0.0.1:0"],
                                stdout=subprocess.PIPE, text=True)
        try:
            addr = proc.stdout.readline().split()[3]
            client = flight.connect(f"grpc://{addr}")
            for s in range(0, 20_000, 5_000):
                put(client, ["words", "index_threshold=5000"], table(np.arange(s, s + 5_000), base[s:s + 5_000]))
            while json.loads(next(iter(client.do_action(flight.Action("stats", b"words")))).body.to_pybytes())["indexing"]:
                time.sleep(0.5)
            lits = [lit(q) for q in queries[:200]]
            for _ in range(20):  # warm up
                sql(client, "SELECT 1")
                sql(client, f"SELECT id FROM knn('words', {lits[0]}, 10)")
            s1 = timed(lambda i: sql(client, "SELECT 1"), 300)
            kn = timed(lambda i: sql(client, f"SELECT id, _distance FROM knn('words', {lits[i % 200]}, 10)"), 300)
            print(json.dumps({"what": "SELECT 1", "p50_ms": round(s1[0], 2), "p99_ms": round(s1[1], 2)}))
            print(json.dumps({"what": "knn k=10 on 20,000 rows", "p50_ms": round(kn[0], 2), "p99_ms": round(kn[1], 2)}))

            if args.seconds <= 0:
                return
            stop = time.time() + args.seconds
            counts = {"knn": 0, "put": 0}
            errors = []
            lock = threading.Lock()

            def searcher(t):
                c = flight.connect(f"grpc://{addr}")
                i = t
                while time.time() < stop:
                    try:
                        assert len(sql(c, f"SELECT id FROM knn('words', {lits[i % 200]}, 10)")) == 10
                    except Exception as e:  # noqa: BLE001 - reported below
                        errors.append(repr(e))
                        return
                    with lock:
                        counts["knn"] += 1
                    i += 12

            def writer(t):
                c = flight.connect(f"grpc://{addr}")
                nxt = 1_000_000 * (t + 1)
                while time.time() < stop:
                    rows = base[nxt % 20_000:nxt % 20_000 + 200]
                    try:
                        put(c, ["words"], table(np.arange(nxt, nxt + len(rows)), rows))
                    except Exception as e:  # noqa: BLE001
                        errors.append(repr(e))
                        return
                    with lock:
                        counts["put"] += 1
                    nxt += 200

            threads = [threading.Thread(target=searcher, args=(t,)) for t in range(12)]
            threads += [threading.Thread(target=writer, args=(t,)) for t in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            print(json.dumps({"what": "16 clients (12 knn, 4 puts of 200 rows)", "seconds": args.seconds,
                              "knn_per_s": round(counts["knn"] / args.seconds, 1),
                              "puts_per_s": round(counts["put"] / args.seconds, 1), "errors": errors[:3]}))
            assert proc.poll() is None, "the server died"
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
