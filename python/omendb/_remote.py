"""The remote mode: a database that ``omendb serve`` holds, reached over Arrow Flight with
pyarrow alone. These classes answer the same calls as the in-process extension's
``Database`` and ``Collection``, so :class:`omendb.Database` and :class:`omendb.Collection`
wrap either. A search (or a statement with parameters) is one ``DoExchange`` call; writes
are ``DoPut`` streams; the rest are Flight actions. Server errors become the same
:class:`omendb.Error` subclasses as in process."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import weakref
from typing import Any, Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.flight as fl

from . import _omendb

# The gRPC status the server answers with, per engine error kind (flight/src/error.rs).
_KINDS = {
    "INVALID_ARGUMENT": _omendb.InvalidInput,
    "NOT_FOUND": _omendb.NotFound,
    "ALREADY_EXISTS": _omendb.AlreadyExists,
    "DATA_LOSS": _omendb.Corrupt,
    "FAILED_PRECONDITION": _omendb.Locked,
    "RESOURCE_EXHAUSTED": _omendb.ResourceExhausted,
    "ABORTED": _omendb.Conflict,
    "UNAVAILABLE": _omendb.Unavailable,
    "DEADLINE_EXCEEDED": _omendb.Unavailable,
    "UNKNOWN": _omendb.Unsettled,
    "INTERNAL": _omendb.InternalError,
}
# pyarrow's words for a status, where its message carries no gRPC debug context.
_WORDS = {
    "invalid argument": "INVALID_ARGUMENT",
    "not found": "NOT_FOUND",
    "already exists": "ALREADY_EXISTS",
    "unavailable": "UNAVAILABLE",
    "timed out": "DEADLINE_EXCEEDED",
    "internal": "INTERNAL",
}


def _translate(e: Exception) -> Exception:
    """A Flight error as the :class:`omendb.Error` subclass of its status, with the server's
    message."""
    text = str(e)
    code = None
    m = re.search(r"gRPC client debug context: ([A-Z_]+):", text)
    if m:
        code = m.group(1)
    else:
        m = re.match(r"Flight returned (.+?) error", text)
        if m:
            code = _WORDS.get(m.group(1))
    msg = text
    m = re.search(r"with message: (.*?)(?:\. gRPC client debug context:|\. Detail:|$)", text, re.S)
    if m:
        msg = m.group(1)
    if isinstance(e, fl.FlightUnavailableError) and code is None:
        code = "UNAVAILABLE"
    return _KINDS.get(code or "", _omendb.Error)(msg)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except (pa.ArrowException, fl.FlightError) as e:
        raise _translate(e) from None


def _stream(data: Any) -> pa.RecordBatchReader:
    if isinstance(data, pa.RecordBatchReader):
        return data
    if isinstance(data, pa.Table):
        return data.to_reader()
    return pa.RecordBatchReader.from_stream(data)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, (bool, np.bool_)):
        raise _omendb.InvalidInput("invalid input: ids are integers or strings")
    return str(int(value))


class RemoteDatabase:
    """A server's database, as the extension's ``Database`` answers calls."""

    def __init__(self, url: str, token: Optional[str] = None, timeout: Optional[float] = None):
        self._url = url
        headers = [(b"authorization", b"Bearer " + token.encode())] if token else []
        self._options = fl.FlightCallOptions(headers=headers, timeout=timeout)
        # Searches go over an open call (one message each way) unless every call must meet a
        # deadline, which an open call cannot give each search.
        self._stream_searches = timeout is None
        self._streams: "weakref.WeakSet[_SearchStream]" = weakref.WeakSet()
        self._client = fl.FlightClient(url)
        self._closed = False
        # Reach the server now: a wrong address or token fails here, not at the first call.
        self.list_collections()

    @property
    def path(self) -> str:
        return self._url

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for stream in list(self._streams):
                stream.close()
            self._client.close()

    def _live(self) -> fl.FlightClient:
        if self._closed:
            raise _omendb.Closed(f"closed: the connection to {self._url} was closed")
        return self._client

    def action_text(self, kind: str, body: str) -> str:
        """A Flight action's JSON reply, as text."""
        with _errors():
            results = list(self._live().do_action(fl.Action(kind, body.encode()), self._options))
        return results[0].body.to_pybytes().decode() if results else "{}"

    def action(self, kind: str, body: str) -> dict:
        return json.loads(self.action_text(kind, body))

    def exchange(self, command: dict, table: "Optional[pa.Table | pa.RecordBatch]" = None) -> pa.Table:
        """One ``DoExchange``: the command, the rows of ``table``, the answer."""
        descriptor = fl.FlightDescriptor.for_command(json.dumps(command).encode())
        with _errors():
            writer, reader = self._live().do_exchange(descriptor, self._options)
            with writer:
                writer.begin(table.schema if table is not None else pa.schema([]))
                if table is not None:
                    writer.write(table)
                writer.done_writing()
                return reader.read_all()

    def put(self, name: str, data: Any, mode: str, options: Optional[dict]) -> int:
        path = [name, f"mode={mode}"] + [f"{k}={v}" for k, v in (options or {}).items()]
        reader = _stream(data)
        with _errors():
            writer, meta = self._live().do_put(fl.FlightDescriptor.for_path(*path), reader.schema, self._options)
            with writer:
                empty = True
                for batch in reader:
                    writer.write_batch(batch)
                    empty = False
                if empty:
                    # A batch without rows: the schema of a collection to create.
                    writer.write_batch(pa.RecordBatch.from_pylist([], schema=reader.schema))
                writer.done_writing()
                answer = meta.read()
        return int(json.loads(answer.to_pybytes())["rows"]) if answer is not None else 0

    def list_collections(self) -> list:
        with _errors():
            flights = list(self._live().list_flights(options=self._options))
        return sorted(f.descriptor.path[0].decode() for f in flights)

    def create_collection(self, name: str, schema: pa.Schema, options: Optional[dict] = None) -> None:
        self.put(name, schema.empty_table(), "create", options)

    def write(self, name: str, data: Any, mode: str, options: Optional[dict] = None) -> int:
        return self.put(name, data, mode, options)

    def open_collection(self, name: str) -> "RemoteCollection":
        return RemoteCollection(self, name, self.action("stats", name))

    def drop_collection(self, name: str) -> None:
        self.action("drop_collection", name)

    def sql(self, query: str, params: list) -> pa.Table:
        table = None
        if params:
            table = pa.table({f"${i + 1}": p for i, p in enumerate(params)})
        return self.exchange({"sql": query}, table)


class _SearchStream:
    """An open ``DoExchange`` of searches (``"stream": true``): each search is one batch of
    query vectors with its options as the batch's metadata, answered by its rows and a closing
    message without data."""

    def __init__(self, db: RemoteDatabase, name: str, schema: pa.Schema):
        command = json.dumps({"search": name, "k": 10, "stream": True}).encode()
        self._writer, self._reader = db._live().do_exchange(fl.FlightDescriptor.for_command(command), db._options)
        self._writer.begin(schema)
        db._streams.add(self)

    def search(self, queries: pa.RecordBatch, options: dict) -> pa.Table:
        self._writer.write_with_metadata(queries, pa.py_buffer(json.dumps(options).encode()))
        batches = []
        while True:
            chunk = self._reader.read_chunk()
            if chunk.data is None:
                return pa.Table.from_batches(batches, schema=self._reader.schema)
            batches.append(chunk.data)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.done_writing()
        with contextlib.suppress(Exception):
            self._writer.close()


class RemoteCollection:
    """A collection of a server's database, as the extension's ``Collection`` answers calls."""

    def __init__(self, db: RemoteDatabase, name: str, stats: dict):
        self._db = db
        self.name = name
        self.dim = int(stats["dim"])
        self.metric = stats["metric"]
        self._id = stats["id_column"]
        self._vector = stats["vector_column"]
        with _errors():
            self._schema = db._live().get_schema(fl.FlightDescriptor.for_path(name), db._options).schema
        # What a search sends: its query vectors, one row each.
        self._queries = pa.schema([pa.field("vector", pa.list_(pa.float32(), self.dim))])
        # Each thread's open call for searches (`_SearchStream`), made at its first search.
        self._local = threading.local()

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    def count(self) -> int:
        return int(self._db.action("stats", self.name)["rows"])

    def add(self, data: Any) -> int:
        return self._db.put(self.name, data, "append", None)

    def upsert(self, data: Any) -> int:
        return self._db.put(self.name, data, "upsert", None)

    def _id_list(self, ids: pa.Array) -> str:
        return ", ".join(_literal(v) for v in ids.to_pylist())

    def get(self, ids: pa.Array) -> pa.Table:
        if len(ids) == 0:
            return self._schema.empty_table()
        found = self._db.exchange(
            {"sql": f"SELECT * FROM {_ident(self.name)} WHERE {_ident(self._id)} IN ({self._id_list(ids)})"}
        )
        at = {v: i for i, v in enumerate(found.column(self._id).to_pylist())}
        order = [at[v] for v in ids.to_pylist() if v in at]
        return found.take(pa.array(order, pa.int64()))

    def delete(self, ids: pa.Array) -> int:
        if len(ids) == 0:
            return 0
        t = self._db.exchange(
            {"sql": f"DELETE FROM {_ident(self.name)} WHERE {_ident(self._id)} IN ({self._id_list(ids)})"}
        )
        return int(sum(t.column("count").to_pylist())) if t.num_rows else 0

    def search(self, queries: np.ndarray, k: int, where_: Optional[str] = None, ef: Optional[int] = None,
               batched: bool = False, nprobe: Optional[int] = None, fast: bool = False) -> pa.Table:
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1)
        if q.size == 0 or q.size % self.dim:
            raise _omendb.InvalidInput(
                f"invalid input: query has {q.size} values, not a multiple of the collection's dimension {self.dim}"
            )
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(q), self.dim)
        queries = pa.RecordBatch.from_arrays([vectors], schema=self._queries)
        options: dict = {"k": int(k)}
        for key, value in (("ef", ef), ("nprobe", nprobe), ("where", where_)):
            if value is not None:
                options[key] = value
        if fast:
            options["fast"] = True
        found = self._streamed(queries, options) if self._db._stream_searches else None
        if found is None:
            found = self._db.exchange({"search": self.name, **options}, queries)
        return found if batched else found.drop_columns(["_query"])

    def _streamed(self, queries: pa.RecordBatch, options: dict) -> Optional[pa.Table]:
        """The search over this thread's open call; ``None`` when that call failed (it is
        dropped, and the caller asks again in a call of its own, which fails with the error
        if the search itself is at fault: a search changes nothing, so asking twice is safe)."""
        stream = getattr(self._local, "stream", None)
        try:
            if stream is None:
                stream = self._local.stream = _SearchStream(self._db, self.name, self._queries)
            return stream.search(queries, options)
        except BaseException as e:
            # A call interrupted mid-answer (an error, Ctrl-C) would hand its unread rows to
            # the next search: it is never used again.
            if stream is not None:
                stream.close()
            self._local.stream = None
            if isinstance(e, (pa.ArrowException, fl.FlightError, StopIteration, OSError)):
                return None
            raise

    def stats_json(self) -> str:
        return self._db.action_text("stats", self.name)

    def build_index(self, min_rows: int = 0) -> int:
        return int(self._db.action("build_index", f"{self.name} min_rows={int(min_rows)}")["indexes_built"])

    def wait_for_indexing(self) -> None:
        self._db.action("wait", self.name)

    def compact(self) -> int:
        return int(self._db.action("compact", self.name)["merges"])

    def alter(self, settings: dict) -> None:
        words = " ".join(f"{k}={v}" for k, v in settings.items())
        self._db.action("alter", f"{self.name} {words}")
