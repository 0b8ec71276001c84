"""Runs the README's examples, in order, against a fresh server.

Every ```python and ```sql block of README.md runs in document order, unless its fence line says
`no-run` (```python no-run). Python blocks share one namespace, as if typed into one session.
Each sql block is split into statements (at a `;` that ends a line, `--` comments dropped), run
one by one through one ADBC Flight SQL connection (one SQL session for every sql block).

The server is the real binary (OMENDB_BIN, default target/debug/omendb), started as the
quickstarts say, in a fresh temporary working directory:

    omendb serve --data omendb-data --addr 127.0.0.1:50051 --external-dir omendb-files

If port 50051 is taken, the server listens on a free port and the blocks' "127.0.0.1:50051" is
replaced with that address.
"""
import gc
import os
import pathlib
import re
import socket
import subprocess

import adbc_driver_flightsql.dbapi as flightsql
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_ADDR = "127.0.0.1:50051"


def blocks(text):
    """(line number, language, code) of each python or sql block that is not `no-run`."""
    for m in re.finditer(r"^```(python|sql)([^\n]*)\n(.*?)^```[ \t]*$", text, re.M | re.S):
        if "no-run" not in m.group(2):
            yield text.count("\n", 0, m.start()) + 1, m.group(1), m.group(3)


def statements(sql):
    """The statements of a sql block: split at a `;` that ends a line, `--` comments dropped."""
    found, current = [], []
    for line in sql.splitlines():
        line = line.split("--", 1)[0].rstrip()
        if not line:
            continue
        current.append(line)
        if line.endswith(";"):
            found.append("\n".join(current)[:-1])
            current = []
    if current:
        found.append("\n".join(current))
    return found


def port_free(addr):
    host, port = addr.rsplit(":", 1)
    with socket.socket() as s:
        # As the server binds: connections of an earlier run still in TIME_WAIT do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError:
            return False
    return True


@pytest.fixture()
def server(tmp_path):
    """The address of a server started in tmp_path as the README's quickstarts start it."""
    binary = os.environ.get("OMENDB_BIN", str(ROOT / "target" / "debug" / "omendb"))
    (tmp_path / "omendb-files").mkdir()
    listen = README_ADDR if port_free(README_ADDR) else "127.0.0.1:0"
    proc = subprocess.Popen(
        [binary, "serve", "--data", str(tmp_path / "omendb-data"), "--addr", listen,
         "--external-dir", str(tmp_path / "omendb-files")],
        cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("omendb listening on "), f"server said: {line!r}"
        yield line.split()[3]
    finally:
        proc.terminate()
        proc.wait(timeout=60)


# The README leaves its connections, cursors open, to the garbage collector; the ADBC driver
# manager complains (harmlessly) from __del__ when they are collected at the end of the test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_readme_blocks_run_in_order(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found = list(blocks(README.read_text()))
    assert any(lang == "python" for _, lang, _ in found) and any(lang == "sql" for _, lang, _ in found)
    namespace = {"__name__": "__readme__"}
    conn = flightsql.connect(f"grpc://{server}", autocommit=True)
    try:
        for line, lang, code in found:
            code = code.replace(README_ADDR, server)
            if lang == "python":
                try:
                    exec(compile(code, f"README.md:{line}", "exec"), namespace)
                except Exception as e:
                    pytest.fail(f"README.md:{line}: python block failed: {type(e).__name__}: {e}")
                continue
            for statement in statements(code):
                try:
                    with conn.cursor() as cur:
                        cur.execute(statement)
                        result = cur.fetch_arrow_table()
                    print(result)
                    if result.num_rows and not result.num_columns:
                        raise AssertionError(f"{result.num_rows} rows came back with no columns")
                except Exception as e:
                    pytest.fail(f"README.md:{line}: sql block, statement failed:\n{statement}\n"
                                f"{type(e).__name__}: {e}")
    finally:
        conn.close()
        namespace.clear()
        gc.collect()
