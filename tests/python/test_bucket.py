"""Databases in a bucket of a real S3-compatible server (moto, started here on 127.0.0.1), used
by real server processes and the command line: several servers writing at once, a server
killed mid-write, the endpoint going away and coming back, a bucket that lacks create-only
puts."""
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = os.environ.get("OMENDB_BIN", str(ROOT / "target" / "debug" / "omendb"))
# How long the two-server writers run (the proof: 60 s).
RACE_SECONDS = float(os.environ.get("OMENDB_RACE_SECONDS", "60"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


class Proxy:
    """A TCP forwarder in front of the S3 server: stopping it is the endpoint going away (new
    connections refused, open ones cut), starting it again is the endpoint coming back with
    its data."""

    def __init__(self, target):
        self.target = target
        self.port = free_port()
        self.conns = []
        self.listener = None
        self.start()

    def start(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(64)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def stop(self):
        self.listener.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        self.conns = []

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on 127.0.0.1, with a bucket."""
    moto = shutil.which("moto_server") or str(pathlib.Path(sys.executable).parent / "moto_server")
    port = free_port()
    proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        import boto3
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id="test", aws_secret_access_key="test"
                     ).create_bucket(Bucket="omendb")
        yield {"port": port, "endpoint": endpoint}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def env_for(endpoint):
    """The standard variables the server's S3 client reads."""
    env = dict(os.environ)
    env.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="test",
               AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1", AWS_ALLOW_HTTP="true")
    return env


class Servers:
    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []

    def start(self, url, endpoint, *flags):
        cache = self.tmp / f"cache-{len(self.procs)}"
        # Its log goes to a file: a pipe nobody reads would fill and stall the server.
        log = self.tmp / f"server-{len(self.procs)}.log"
        proc = subprocess.Popen([BINARY, "serve", "--data", url, "--addr", "127.0.0.1:0",
                                 "--cache-dir", str(cache), *flags],
                                stdout=subprocess.PIPE, stderr=open(log, "w"), text=True,
                                env=env_for(endpoint))
        line = proc.stdout.readline()
        assert line.startswith("omendb listening on "), \
            f"server said: {line!r} {log.read_text()}"
        self.procs.append(proc)
        client = flight.connect(f"grpc://{line.split()[3]}")
        client.wait_for_available(timeout=30)
        return client, proc

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=30)


@pytest.fixture()
def servers(tmp_path):
    s = Servers(tmp_path)
    yield s
    s.stop()


def cli(endpoint, *args):
    out = subprocess.run([BINARY, *args], capture_output=True, text=True, env=env_for(endpoint),
                         timeout=120)
    return out


def sql(client, text, timeout=60):
    options = flight.FlightCallOptions(timeout=timeout)
    return client.do_get(flight.Ticket(text.encode()), options).read_all()


def count(client, table="docs"):
    return sql(client, f"SELECT count(*) AS n FROM {table}").column("n")[0].as_py()


def table(ids, dim=8):
    ids = np.asarray(ids, dtype=np.int64)
    v = np.random.default_rng(int(ids[0]) if len(ids) else 0).standard_normal(
        (len(ids), dim), dtype=np.float32)
    return pa.table({"id": pa.array(ids),
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), dim)})


def put(client, name, t, timeout=60, settings=()):
    options = flight.FlightCallOptions(timeout=timeout)
    descriptor = flight.FlightDescriptor.for_path(name, *settings)
    writer, reader = client.do_put(descriptor, t.schema, options)
    writer.write_table(t)
    writer.done_writing()
    meta = reader.read()
    writer.close()
    return json.loads(meta.to_pybytes())


def test_the_engine_on_a_bucket_round_trips_and_the_command_line_checks_it(s3, tmp_path):
    """Appends, upserts, deletes, index builds, compaction and reopening with an empty cache,
    in process on the bucket; then `verify` and `stats` over the same URL."""
    import omendb
    url = "s3://omendb/engine"
    opts = {"endpoint": s3["endpoint"], "allow_http": "true", "access_key_id": "test",
            "secret_access_key": "test", "region": "us-east-1"}
    rng = np.random.default_rng(7)
    data = rng.standard_normal((600, 16), dtype=np.float32)
    with omendb.connect(url, storage_options=opts, cache_dir=tmp_path / "a") as db:
        docs = db.create_collection("docs", dim=16, metric="l2")
        docs.add(ids=np.arange(300), vectors=data[:300])
        docs.add(ids=np.arange(300, 600), vectors=data[300:])
        docs.upsert(ids=np.arange(5), vectors=data[100:105])
        docs.delete([10, 11, 12])
        assert docs.build_index(1) == 3
        docs.compact()
        assert docs.count() == 597
        hits = docs.search(data[42], k=3).column("id").to_pylist()
        assert hits[0] == 42
    # Another process's view, from an empty cache.
    with omendb.connect(url, storage_options=opts, cache_dir=tmp_path / "b") as db:
        docs = db.open_collection("docs")
        assert docs.count() == 597
        assert docs.search(data[42], k=3).column("id").to_pylist() == hits
        assert docs.get([10, 11, 12]).num_rows == 0
        got = docs.get([0]).column("vector").to_pylist()[0]
        np.testing.assert_allclose(got, data[100], rtol=1e-6)
    out = cli(s3["endpoint"], "verify", "--data", url, "docs")
    assert out.returncode == 0, out.stderr
    # The client's settings as --storage-option rather than the environment.
    flags = [f for k, v in opts.items() for f in ("--storage-option", f"{k}={v}")]
    bare = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    out = subprocess.run([BINARY, "stats", "--data", url, *flags, "docs"], capture_output=True,
                         text=True, env=bare, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["rows"] == 597
    out = subprocess.run([BINARY, "sql", "--data", url, *flags, "SELECT count(*) AS n FROM docs"],
                         capture_output=True, text=True, env=bare, timeout=120)
    assert out.returncode == 0 and "597" in out.stdout, out.stderr
    # `import` writes to the bucket too.
    np.save(tmp_path / "ids.npy", np.arange(50, dtype=np.int64))
    np.save(tmp_path / "vectors.npy", data[:50])
    out = cli(s3["endpoint"], "import", "--data", url, "--collection", "imported",
              "--ids", str(tmp_path / "ids.npy"), str(tmp_path / "vectors.npy"))
    assert out.returncode == 0, out.stderr
    out = cli(s3["endpoint"], "stats", "--data", url, "imported")
    assert out.returncode == 0 and json.loads(out.stdout)["rows"] == 50, out
    # Garbage collection: nothing younger than the retention goes; with none, only the newest
    # version and its files stay, and they verify.
    out = cli(s3["endpoint"], "gc", "--data", url, "docs")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["removed_files"] == 0
    out = cli(s3["endpoint"], "gc", "--data", url, "--retain", "0", "docs")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["removed_files"] > 0
    out = cli(s3["endpoint"], "verify", "--data", url)
    assert out.returncode == 0, out.stderr
    with omendb.connect(url, storage_options=opts, cache_dir=tmp_path / "e") as db:
        assert db.open_collection("docs").count() == 597
    # A backup to another prefix of the bucket opens there as the database.
    out = cli(s3["endpoint"], "backup", "--data", url, "s3://omendb/engine-backup")
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["collections"]) == 2
    out = cli(s3["endpoint"], "backup", "--data", url, "s3://omendb/engine-backup")
    assert out.returncode != 0 and "not empty" in out.stderr, out
    out = cli(s3["endpoint"], "verify", "--data", "s3://omendb/engine-backup")
    assert out.returncode == 0, out.stderr
    with omendb.connect("s3://omendb/engine-backup", storage_options=opts,
                        cache_dir=tmp_path / "f", cache_size=1 << 20) as db:
        assert db.open_collection("docs").search(data[42], k=3).column("id").to_pylist() == hits
    # The ANN benchmark runs on a bucket too (exact search: recall 1).
    out = cli(s3["endpoint"], "bench", "ann", "--dataset", str(ROOT / "tests/data/minilm-words"),
              "--index", "flat", "--data", "s3://omendb/bench", "--cache-dir", str(tmp_path / "g"))
    assert out.returncode == 0, out.stderr
    sweep = [json.loads(line) for line in out.stdout.splitlines() if '"recall"' in line]
    assert sweep and all(p["recall"] == 1.0 for p in sweep), out.stdout
    # A misspelt option, a missing bucket and a store without create-only puts are refused.
    with pytest.raises(omendb.InvalidInput, match="unknown storage option 'endpiont'"):
        omendb.connect(url, storage_options={**opts, "endpiont": "x"})
    with pytest.raises(omendb.Error, match="s3://no-such-bucket/db"):
        omendb.connect("s3://no-such-bucket/db", storage_options=opts, cache_dir=tmp_path / "c")
    with pytest.raises(omendb.InvalidInput, match="does not support create-only puts"):
        omendb.connect(url, storage_options={**opts, "conditional_put": "disabled"},
                       cache_dir=tmp_path / "d")


def test_two_servers_writing_at_once_lose_no_row_and_store_none_twice(s3, servers):
    """Two server processes over one bucket, two writers each, for RACE_SECONDS: every
    acknowledged row is stored exactly once; a refused put stored nothing."""
    url = "s3://omendb/race"
    a, _ = servers.start(url, s3["endpoint"], "--refresh-ms", "1000")
    b, _ = servers.start(url, s3["endpoint"], "--refresh-ms", "1000")
    put(a, "docs", table(range(0, 10)))
    acked, refused, errors = [], [], []
    lock = threading.Lock()
    deadline = time.monotonic() + RACE_SECONDS

    def writer(client, w):
        n = 0
        while time.monotonic() < deadline:
            first = 1_000_000 * (w + 1) + n * 20
            ids = list(range(first, first + 20))
            n += 1
            try:
                put(client, "docs", table(ids))
                with lock:
                    acked.extend(ids)
            except flight.FlightError as e:
                with lock:
                    (refused if "conflict" in str(e).lower() else errors).append(str(e))

    threads = [threading.Thread(target=writer, args=(c, w))
               for w, c in enumerate([a, a, b, b])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert len(acked) > 200, f"only {len(acked)} rows acknowledged"
    # Seen from a third server, from an empty cache.
    c, _ = servers.start(url, s3["endpoint"])
    ids = sql(c, "SELECT id FROM docs").column("id").to_pylist()
    assert len(ids) == len(set(ids)), "a row stored twice"
    assert set(ids) == set(acked) | set(range(10))
    print(f"{len(acked)} rows acknowledged in {RACE_SECONDS:.0f} s, {len(refused)} puts refused",
          refused[:2])


def test_a_writer_killed_mid_put_leaves_the_bucket_at_a_committed_version(s3, servers):
    """kill -9 of a server while puts pour in: the bucket holds exactly the acknowledged puts
    (and perhaps the one in flight, whole), and verifies."""
    url = "s3://omendb/killed"
    a, proc = servers.start(url, s3["endpoint"])
    acked = []
    stop = threading.Event()

    def writer():
        n = 0
        while not stop.is_set():
            ids = list(range(n * 50, n * 50 + 50))
            n += 1
            try:
                put(a, "docs", table(ids))
                acked.append(ids)
            except flight.FlightError:
                return

    t = threading.Thread(target=writer)
    t.start()
    while len(acked) < 5:
        time.sleep(0.01)
    proc.kill()
    stop.set()
    t.join()
    b, _ = servers.start(url, s3["endpoint"])
    ids = set(sql(b, "SELECT id FROM docs").column("id").to_pylist())
    done = {i for batch in acked for i in batch}
    assert done <= ids
    extra = ids - done
    assert len(extra) in (0, 50), f"a put half-visible: {len(extra)} rows"
    out = cli(s3["endpoint"], "verify", "--data", url, "docs")
    assert out.returncode == 0, out.stderr


def test_the_endpoint_going_away_fails_queries_unavailable_and_they_recover(s3, servers):
    """With the endpoint gone, a query that must read the bucket fails UNAVAILABLE within
    seconds (no hang); once it is back, the same server answers again."""
    proxy = Proxy(s3["port"])
    try:
        endpoint = f"http://127.0.0.1:{proxy.port}"
        url = "s3://omendb/outage"
        a, proc = servers.start(url, endpoint, "--refresh-ms", "0")
        put(a, "docs", table(range(100)))
        assert count(a) == 100
        proxy.stop()
        started = time.monotonic()
        with pytest.raises(flight.FlightUnavailableError, match="s3://omendb/outage"):
            count(a)
        assert time.monotonic() - started < 30
        with pytest.raises(flight.FlightUnavailableError):
            put(a, "docs", table(range(100, 110)))
        proxy.start()
        assert count(a) == 100
        put(a, "docs", table(range(100, 110)))
        assert count(a) == 110
        assert proc.poll() is None
    finally:
        proxy.stop()


def test_a_server_removes_old_versions_files_after_the_retention(s3, servers):
    """`serve --retain`: once a version has been replaced for longer than the retention, the
    server removes its manifest and the files only it named; the newest stays whole."""
    import boto3
    url = "s3://omendb/retained"
    a, _ = servers.start(url, s3["endpoint"], "--retain", "2")
    for i in range(4):
        put(a, "docs", table(range(i * 30, (i + 1) * 30)))
    s3c = boto3.client("s3", endpoint_url=s3["endpoint"], region_name="us-east-1",
                       aws_access_key_id="test", aws_secret_access_key="test")

    def manifests():
        listed = s3c.list_objects_v2(Bucket="omendb", Prefix="retained/docs/")
        return [o["Key"] for o in listed.get("Contents", []) if "/manifest-" in o["Key"]]

    assert len(manifests()) >= 4
    deadline = time.monotonic() + 30
    while len(manifests()) > 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(manifests()) == 1, manifests()
    b, _ = servers.start(url, s3["endpoint"])
    assert count(b) == 120
    out = cli(s3["endpoint"], "verify", "--data", url, "docs")
    assert out.returncode == 0, out.stderr


def test_a_server_killed_during_a_merge_leaves_the_bucket_whole(s3, servers):
    """kill -9 while a compaction merges and builds the graph: another server opens the last
    committed version, with every acknowledged row once, and it verifies."""
    url = "s3://omendb/merging"
    a, proc = servers.start(url, s3["endpoint"], "--retain", "0")
    # No merges until the compaction, and a graph slow enough to build that the kill lands
    # while it runs.
    slow = ("compaction=off", "ef_construction=800", "m=48")
    rows = 0
    for i in range(30):
        put(a, "docs", table(range(i * 500, (i + 1) * 500), dim=64), settings=slow)
        rows += 500
    outcome = []

    def compact():
        try:
            list(a.do_action(flight.Action("compact", b"docs")))
            outcome.append("finished")
        except flight.FlightError:
            outcome.append("cut")

    compacting = threading.Thread(target=compact)
    compacting.start()
    time.sleep(0.5)
    proc.kill()
    compacting.join()
    # The kill landed while the compaction ran (its graph of 15,000 rows takes seconds).
    assert outcome == ["cut"], outcome
    b, _ = servers.start(url, s3["endpoint"])
    ids = sql(b, "SELECT id FROM docs").column("id").to_pylist()
    assert len(ids) == rows and set(ids) == set(range(rows))
    out = cli(s3["endpoint"], "verify", "--data", url, "docs")
    assert out.returncode == 0, out.stderr
