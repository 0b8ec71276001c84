"""What the server benchmarks beside it share: the command-line paths, the dataset (with the
exact ground truth recomputed for a cut of the rows), a free port, a started server and the
JSON-line output (`from bench_common import ...` when run as `python benches/...`)."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pyarrow.flight as fl

from ground_truth import exact_top100

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def arg_or(index, default):
    """`sys.argv[index]`, or `default` when the command line is shorter."""
    return sys.argv[index] if len(sys.argv) > index else default


DEFAULT_BINARY = os.path.join(ROOT, "target", "release", "omendb")


def dataset_and_binary():
    """The dataset directory (first argument) and the server binary (second argument)."""
    return arg_or(1, os.path.join(ROOT, "..", "shared", "datasets", "minilm-words")), arg_or(2, DEFAULT_BINARY)


def env_int(name, default):
    return int(os.environ.get(name, default))


def load_dataset(data_dir, n, nq):
    """The first `n` base rows, the first `nq` queries and their true top-10 by cosine (exact
    search over the cut when `n` leaves rows out)."""
    base = np.load(f"{data_dir}/base.npy")[:n].astype(np.float32)
    queries = np.load(f"{data_dir}/queries.npy")[:nq].astype(np.float32)
    gt = np.load(f"{data_dir}/gt_cosine.npy")[:nq, :10]
    if n < len(np.load(f"{data_dir}/base.npy", mmap_mode="r")):
        # Ground truth for a cut of the rows: exact search over the cut.
        gt = exact_top100(queries, base)[:, :10]
    return base, queries, gt


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def serve(binary, data):
    """`omendb serve` on `data` at a free port, output discarded; returns the process, a
    connected Flight client and the server's URI."""
    port = free_port()
    server = subprocess.Popen([binary, "serve", "--data", data, "--addr", f"127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"grpc://127.0.0.1:{port}"
    try:
        client = fl.FlightClient(uri)
        client.wait_for_available(timeout=30)
    except BaseException:
        server.kill()
        server.wait()
        raise
    return server, client, uri


def emit(**r):
    print(json.dumps(r), flush=True)


def put(client, path, table):
    """One Flight put of `table` to the descriptor path `path`, waiting for the server's answer."""
    writer, reader = client.do_put(fl.FlightDescriptor.for_path(*path), table.schema)
    writer.write_table(table)
    writer.done_writing()
    reader.read()
    writer.close()
