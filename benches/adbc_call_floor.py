"""What one call costs the client, whatever the server does: p50 latency and client CPU per
call of trivial calls against the real server, over pyarrow.flight (gRPC C++) and over the ADBC
Flight SQL driver (Go, through cgo). Shows the floor under any ADBC latency figure on this
machine. One JSON line per call kind.

Where the driver's time goes (perf of a loop of bound `SELECT $1` executes): the driver's cgo
wrapper runs a full Go garbage collection (`runtime.GC()`) in every release of a result stream,
about a third of the client's CPU per call; most of the rest is Go scheduler wake-ups (futex)
around the three RPCs. `GOGC` and `GOMAXPROCS` do not change it (the collection is explicit);
`GODEBUG=gctrace=1` shows one forced collection per query, about 0.55 ms of wall clock each on
a heap of 1 MB.

The last line makes the same three Flight SQL calls as the driver's bound execute (DoPut of the
parameters, GetFlightInfo, DoGet) through pyarrow.flight (gRPC C++) with the protobuf messages
packed by hand: the server's part of a bound call under a lean client.

  cargo build --release -p omendb-flight --bin omendb
  python benches/adbc_call_floor.py [OMENDB_BIN]
Environment: CALLS (default 500).
"""
import json
import resource
import tempfile
import time

import adbc_driver_flightsql.dbapi as flightsql
import numpy as np
import pyarrow as pa
import pyarrow.flight as fl

import flight_sql_lean
from bench_common import DEFAULT_BINARY, arg_or, env_int, serve

binary = arg_or(1, DEFAULT_BINARY)
CALLS = env_int("CALLS", 500)


def measure(what, call):
    call()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    lat = []
    for _ in range(CALLS):
        t = time.perf_counter()
        call()
        lat.append(time.perf_counter() - t)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) / CALLS
    print(json.dumps({"call": what, "p50_ms": round(float(np.median(lat)) * 1e3, 3),
                      "client_cpu_ms_per_call": round(cpu * 1e3, 3)}), flush=True)


def main():
    server, client, uri = serve(binary, tempfile.mkdtemp())
    try:
        measure("pyarrow.flight list_actions", lambda: list(client.list_actions()))
        measure("pyarrow.flight do_get SELECT 1", lambda: client.do_get(fl.Ticket(b"SELECT 1")).read_all())
        with flightsql.connect(uri) as conn, conn.cursor() as cur:
            def adbc(sql, params=None):
                cur.execute(sql, parameters=params)
                cur.fetch_arrow_table()
            measure("adbc execute+fetch SELECT 1", lambda: adbc("SELECT 1"))
            measure("adbc execute+fetch SELECT $1 (bound)", lambda: adbc("SELECT $1", (1,)))
        batch = pa.record_batch([pa.array([1], pa.int64())], names=["$1"])
        run = flight_sql_lean.prepared(client, "SELECT $1")

        def lean():
            assert run(batch).column(0).to_pylist() == [1]
        measure("pyarrow.flight Flight SQL bind+describe+fetch SELECT $1", lean)
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
