"""Starts the real omendb server on 127.0.0.1 for the client tests."""
import os
import pathlib
import subprocess
import tempfile

import pyarrow.flight as flight
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The cut of minilm-words the repository ships (its first 20,000 rows and 200 queries).
DATASET = pathlib.Path(os.environ.get("OMENDB_DATASET", ROOT / "tests" / "data" / "minilm-words"))


@pytest.fixture(scope="session")
def server():
    binary = os.environ.get("OMENDB_BIN", str(ROOT / "target" / "debug" / "omendb"))
    with tempfile.TemporaryDirectory() as data, tempfile.TemporaryDirectory() as external:
        # SQL may read and write files only under --external-dir.
        proc = subprocess.Popen(
            [binary, "serve", "--data", data, "--addr", "127.0.0.1:0", "--external-dir", external],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            line = proc.stdout.readline()
            assert line.startswith("omendb listening on "), f"server said: {line!r}"
            addr = line.split()[3]
            client = flight.connect(f"grpc://{addr}")
            client.wait_for_available(timeout=30)
            yield {"client": client, "addr": addr, "data": pathlib.Path(data), "proc": proc,
                   "external": pathlib.Path(external)}
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.fixture()
def start_server():
    """Starts further servers with extra flags; each is stopped after the test."""
    binary = os.environ.get("OMENDB_BIN", str(ROOT / "target" / "debug" / "omendb"))
    started = []

    def start(*flags):
        data = tempfile.mkdtemp()
        proc = subprocess.Popen([binary, "serve", "--data", data, "--addr", "127.0.0.1:0", *flags],
                                stdout=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        assert line.startswith("omendb listening on "), f"server said: {line!r}"
        started.append(proc)
        return line.split()[3], proc

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(timeout=30)
