"""Fixtures: every test that takes `db` runs three times: on a local directory, on a bucket of a
real S3-compatible server (moto, started once on 127.0.0.1; `pip install "moto[server]"`), and
in remote mode against a real `omendb serve` process (the workspace's build, or $OMENDB_BIN)."""

import contextlib
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import uuid

import pytest

import omendb


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port, proc, what, seconds):
    """Waits until `proc` (`what`) accepts connections on `port`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert proc.poll() is None, f"{what} exited at start"
            assert time.monotonic() < deadline, f"{what} did not start"
            time.sleep(0.05)


@pytest.fixture(scope="session")
def s3_options():
    """moto's S3 server with bucket `omendb`: the client options that reach it."""
    pytest.importorskip("moto", reason="the bucket runs need moto[server]")
    moto = shutil.which("moto_server") or str(pathlib.Path(sys.executable).parent / "moto_server")
    port = _free_port()
    proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(port, proc, "moto_server", 30)
        import boto3
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id="test", aws_secret_access_key="test"
                     ).create_bucket(Bucket="omendb")
        yield {"aws_endpoint": endpoint, "aws_access_key_id": "test",
               "aws_secret_access_key": "test", "aws_region": "us-east-1",
               "aws_allow_http": "true"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextlib.contextmanager
def serve(data, *args):
    """`omendb serve` on 127.0.0.1 over directory `data` (log beside it) with `args`: its
    grpc:// URL."""
    root = pathlib.Path(__file__).resolve().parents[2]
    binary = os.environ.get("OMENDB_BIN") or str(root / "target" / "debug" / "omendb")
    if not os.path.exists(binary):
        pytest.skip(f"the remote runs need the server binary ({binary}): cargo build, or set OMENDB_BIN")
    port = _free_port()
    with open(f"{data}.log", "wb") as log:
        proc = subprocess.Popen([binary, "serve", "--data", str(data), "--addr", f"127.0.0.1:{port}", *args],
                                stdout=log, stderr=log)
    try:
        _wait_for(port, proc, f"omendb serve (log: {data}.log)", 60)
        yield f"grpc://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One server for the remote runs, over a fresh directory."""
    with serve(tmp_path_factory.mktemp("served") / "db") as url:
        yield url


def _drop_all(url):
    with omendb.connect(url) as db:
        for name in db.list_collections():
            db.drop_collection(name)


@pytest.fixture(params=["dir", "s3", "remote"])
def db(request, tmp_path):
    """A fresh database: in a directory, under a new prefix of the bucket, or a server's (left
    empty again after the test)."""
    if request.param == "remote":
        url = request.getfixturevalue("server")
        _drop_all(url)
        with omendb.connect(url) as db:
            yield db
        _drop_all(url)
        return
    if request.param == "dir":
        with omendb.connect(tmp_path / "db") as db:
            yield db
        return
    options = request.getfixturevalue("s3_options")
    url = f"s3://omendb/{uuid.uuid4().hex}"
    with omendb.connect(url, storage_options=options, cache_dir=tmp_path / "cache") as db:
        yield db
