"""Reads stay fast while writes pour in: knn() latency and throughput of R reader threads while
W writer threads stream 200-row puts into the same collection as fast as the server acks them.

For each reader mode (--mode, run as separate phases) and each writer count (--writers; W=0 is
the baseline), a fresh `omendb serve` on a fresh data directory:
1. loads the first 2,000 dataset vectors as collection `words` and waits for it to settle;
2. runs R reader threads (one connection each) for --seconds, each calling
   literal: plain Flight DoGet, ticket `SELECT id, _distance FROM knn('words', [v1,...], 10)`
   adbc_literal: ADBC Flight SQL, the same text, nothing bound
   bound:   ADBC Flight SQL, prepared `SELECT id, _distance FROM knn('words', $1, 10)` with the
            query vector bound as the parameter
   and checking it got 10 rows (a short answer or an error is a failed read);
3. runs W writer threads beside them, each putting 200 rows (fresh ids, vectors cycling through
   base.npy). A put refused with RESOURCE_EXHAUSTED (backpressure while too many rows are
   unindexed) is a refused put, not an error: the writer sleeps 50 ms and goes on;
4. checks the server is still alive and `SELECT count(*) FROM words` == 2,000 + acked rows.
Every call has a deadline (--deadline seconds). One JSON line per phase.

  cargo build --release -p omendb-flight --bin omendb
  python benches/reads_under_writes.py [DATASET_DIR] [--bin target/release/omendb]
      [--readers 12] [--writers 0,1,4,8] [--seconds 20] [--mode literal,bound] [--deadline 20]
      [--serve-arg=--max-concurrent-puts=16 ...] [--fast]
"""
import argparse
import json
import os
import pathlib
import subprocess
import tempfile
import threading
import time

import adbc_driver_flightsql as adbc_flightsql
import adbc_driver_flightsql.dbapi as flightsql
import numpy as np
import pyarrow as pa
import pyarrow.flight as fl

from bench_common import DEFAULT_BINARY, ROOT, emit

INITIAL_ROWS = 2_000
PUT_ROWS = 200
NQ = 200
LITERAL_SQL = "SELECT id, _distance FROM knn('words', {}, 10)"
BOUND_SQL = "SELECT id, _distance FROM knn('words', $1, 10)"


def table(ids, vectors):
    return pa.table({"id": pa.array(ids, pa.int64()),
                     "vector": pa.FixedSizeListArray.from_arrays(
                         pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1)), vectors.shape[1])})


def lit(v):
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


def sql(client, text, opts):
    return client.do_get(fl.Ticket(text.encode()), options=opts).read_all()


def put(client, name, tbl, opts):
    """One Flight put, waiting for the server's answer (bench_common.put, with a deadline)."""
    writer, reader = client.do_put(fl.FlightDescriptor.for_path(name), tbl.schema, options=opts)
    writer.write_table(tbl)
    writer.done_writing()
    reader.read()
    writer.close()


def stats(client, opts):
    body = b"".join(r.body.to_pybytes() for r in client.do_action(fl.Action("stats", b"words"), options=opts))
    return json.loads(body)


def start_server(args, data):
    log = open(os.path.join(data, "server.log"), "w")
    proc = subprocess.Popen([args.bin, "serve", "--data", os.path.join(data, "db"), "--addr", "127.0.0.1:0",
                             *args.serve_arg], stdout=subprocess.PIPE, stderr=log, text=True)
    addr = proc.stdout.readline().split()[3]
    # Keep draining stdout so the server never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, f"grpc://{addr}"


def reader_fn(mode, uri, opts, deadline, queries, lits):
    """A per-thread `run(i)` that makes read number i and returns the rows it got, and a `close()`."""
    if mode == "literal":
        client = fl.connect(uri)
        return (lambda i: sql(client, LITERAL_SQL.format(lits[i % NQ]), opts).num_rows), client.close
    timeouts = {o.value: str(deadline) for o in (adbc_flightsql.DatabaseOptions.TIMEOUT_QUERY,
                                                adbc_flightsql.DatabaseOptions.TIMEOUT_FETCH,
                                                adbc_flightsql.DatabaseOptions.TIMEOUT_UPDATE)}
    conn = flightsql.connect(uri, db_kwargs=timeouts, autocommit=True)
    cur = conn.cursor()

    def run(i):
        if mode == "adbc_literal":  # the vector typed into the SQL text, nothing bound
            cur.execute(LITERAL_SQL.format(lits[i % NQ]))
        else:  # as flight_sql_knn.py binds it: the vector as a Python list, one parameter
            cur.execute(BOUND_SQL, parameters=(queries[i % NQ].tolist(),))
        return cur.fetch_arrow_table().num_rows

    def close():
        cur.close()
        conn.close()
    return run, close


def phase(args, mode, writers, base, queries, lits):
    opts = fl.FlightCallOptions(timeout=args.deadline)
    with tempfile.TemporaryDirectory(prefix="omendb-rw-") as data:
        proc, uri = start_server(args, data)
        try:
            client = fl.connect(uri)
            put(client, "words", table(np.arange(INITIAL_ROWS), base[:INITIAL_ROWS]), opts)
            settle_by = time.time() + 120
            while time.time() < settle_by:
                st = stats(client, opts)
                if not any(st.get(k) for k in ("indexing", "merges_running", "index_builds_running")):
                    break
                time.sleep(0.5)

            lock = threading.Lock()
            latencies, failed, write_errors = [], [], []
            acked = [0]
            refused = [0]
            runs = [reader_fn(mode, uri, opts, args.deadline, queries, lits) for _ in range(args.readers)]
            for i in range(20):  # warm up
                runs[0][0](i)
            barrier = threading.Barrier(args.readers + writers + 1)
            stop = [float("inf")]

            def reader(t):
                run, lat, i = runs[t][0], [], t * 17
                barrier.wait()
                while time.perf_counter() < stop[0]:
                    t0 = time.perf_counter()
                    try:
                        rows = run(i)
                        if rows == 10:
                            lat.append(time.perf_counter() - t0)
                        else:
                            with lock:
                                failed.append(f"got {rows} rows, not 10")
                    except Exception as e:  # noqa: BLE001 - reported in the JSON line
                        with lock:
                            failed.append(repr(e)[:300])
                        time.sleep(0.05)
                    i += 1
                with lock:
                    latencies.extend(lat)

            def writer(t):
                c = fl.connect(uri)
                next_id = 1_000_000_000 * (t + 1)
                src = INITIAL_ROWS + t * 10_000
                barrier.wait()
                while time.perf_counter() < stop[0]:
                    start = src % (len(base) - PUT_ROWS)
                    tbl = table(np.arange(next_id, next_id + PUT_ROWS), base[start:start + PUT_ROWS])
                    try:
                        put(c, "words", tbl, opts)
                    except Exception as e:  # noqa: BLE001 - reported in the JSON line
                        msg = str(e).lower()
                        with lock:
                            if "resource exhausted" in msg or "resource_exhausted" in msg:
                                refused[0] += 1
                            else:
                                write_errors.append(repr(e)[:300])
                        time.sleep(0.05)
                        continue
                    with lock:
                        acked[0] += PUT_ROWS
                    next_id += PUT_ROWS
                    src += PUT_ROWS

            threads = [threading.Thread(target=reader, args=(t,)) for t in range(args.readers)]
            threads += [threading.Thread(target=writer, args=(t,)) for t in range(writers)]
            for th in threads:
                th.start()
            t0 = time.perf_counter()
            stop[0] = t0 + args.seconds
            barrier.wait()
            for th in threads:
                th.join()
            elapsed = time.perf_counter() - t0

            alive = proc.poll() is None
            for _, close in runs:
                try:
                    close()
                except Exception:  # noqa: BLE001 - the server may be gone; that is reported
                    pass
            counted = None
            if alive:
                counted = sql(client, "SELECT count(*) FROM words", opts).column(0)[0].as_py()
            expected = INITIAL_ROWS + acked[0]
            lat_ms = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
            emit(mode=mode, fast=args.fast, readers=args.readers, writers=writers, seconds=round(elapsed, 2),
                 reads=len(latencies), reads_per_s=round(len(latencies) / elapsed, 1),
                 p50_ms=round(float(np.percentile(lat_ms, 50)), 2),
                 p99_ms=round(float(np.percentile(lat_ms, 99)), 2), max_ms=round(float(lat_ms.max()), 2),
                 failed_reads=len(failed), failed_read_messages=failed[:3],
                 acked_rows=acked[0], write_rows_per_s=round(acked[0] / elapsed, 1),
                 refused_puts=refused[0], write_errors=len(write_errors), write_error_messages=write_errors[:3],
                 server_alive=alive, expected_rows=expected, counted_rows=counted,
                 lost_rows=None if counted is None else expected - counted)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset", type=pathlib.Path, nargs="?",
                    default=pathlib.Path(ROOT).parent / "shared" / "datasets" / "minilm-words")
    ap.add_argument("--bin", default=DEFAULT_BINARY)
    ap.add_argument("--readers", type=int, default=12)
    ap.add_argument("--writers", default="0,1,4,8", help="comma-separated writer counts, one phase each")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--mode", default="literal,bound",
                    help="comma-separated: literal (plain Flight, vector in the text), adbc_literal (ADBC, vector in the text), bound (ADBC, vector bound)")
    ap.add_argument("--deadline", type=float, default=20, help="per-call deadline in seconds")
    ap.add_argument("--serve-arg", action="append", default=[], help="extra argument to `omendb serve` (repeatable)")
    ap.add_argument("--fast", action="store_true",
                    help="readers search the indexed rows only: knn('words', ..., 10, fast => true)")
    args = ap.parse_args()
    if args.fast:
        global LITERAL_SQL, BOUND_SQL
        LITERAL_SQL, BOUND_SQL = (s.replace(", 10)", ", 10, fast => true)") for s in (LITERAL_SQL, BOUND_SQL))
    base = np.load(args.dataset / "base.npy", mmap_mode="r")
    queries = np.load(args.dataset / "queries.npy")[:NQ].astype(np.float32)
    lits = [lit(q) for q in queries]
    for mode in args.mode.split(","):
        assert mode in ("literal", "adbc_literal", "bound"), f"unknown mode {mode}"
        for w in (int(x) for x in args.writers.split(",")):
            phase(args, mode, w, base, queries, lits)


if __name__ == "__main__":
    main()
