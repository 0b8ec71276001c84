"""OmenDB in-process: Arrow vector collections on disk, exact and indexed search, and SQL.

    import omendb
    with omendb.connect("./data") as db:
        docs = db.create_collection("docs", dim=384, metric="cosine")
        docs.add(ids=[1, 2], vectors=np.random.rand(2, 384), lang=["en", "de"])
        docs.search(query, k=10, where="lang = 'en'").to_pandas()
        db.sql("SELECT id, _distance FROM knn('docs', $1, 10)", params=[query])

Data goes in as a pyarrow Table or RecordBatch, a pandas or polars DataFrame, anything with
``__arrow_c_stream__``, or numpy vectors with ids and metadata columns; Arrow data crosses into
the engine without a copy. Results are ``pyarrow.Table`` (``.to_pandas()``, ``polars.from_arrow``).
Errors are subclasses of :class:`omendb.Error` named after their kind. Searches and writes
release the GIL, and any number of databases (on different directories) may be open at once.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import pyarrow as pa

from . import _omendb
from ._omendb import (
    AlreadyExists,
    ArrowError,
    Closed,
    Corrupt,
    Error,
    InternalError,
    InvalidInput,
    IoError,
    Locked,
    NotFound,
    ResourceExhausted,
    Conflict,
    Unavailable,
    Unsettled,
    __version__,
)

__all__ = [
    "connect",
    "Database",
    "Collection",
    "DB",
    "Error",
    "InvalidInput",
    "NotFound",
    "AlreadyExists",
    "Corrupt",
    "Locked",
    "IoError",
    "ArrowError",
    "Unsettled",
    "ResourceExhausted",
    "Conflict",
    "Unavailable",
    "InternalError",
    "Closed",
    "__version__",
]

PathLike = Union[str, "os.PathLike[str]"]


_REMOTE = ("grpc://", "grpc+tcp://", "grpc+tls://", "grpcs://")


def connect(
    path: PathLike,
    storage_options: Optional[Mapping[str, str]] = None,
    cache_dir: Optional[PathLike] = None,
    cache_size: Optional[int] = None,
    token: Optional[str] = None,
    timeout: Optional[float] = None,
) -> "Database":
    """Opens (creating if needed) the database at ``path``: a directory, or object storage as
    a URL (``s3://bucket/prefix``, ``gs://``, ``az://``, ``file:///dir``, ``memory://``), with
    ``storage_options`` for its client (the ``object_store`` keys) and the files it reads cached
    under ``cache_dir`` (default: under the system temp dir), at most ``cache_size`` bytes of
    them (default: no limit; past it the least recently used files are removed).

    ``grpc://host:port`` (``grpcs://`` or ``grpc+tls://`` with TLS) reaches the database of a
    running ``omendb serve`` instead, with ``token`` (the server's ``--token-file``) and each
    call's ``timeout`` in seconds: the same classes and methods, each search one call."""
    return Database(path, storage_options, cache_dir, cache_size, token=token, timeout=timeout)


def _vector_array(vectors: Any) -> pa.Array:
    """Vectors as ``FixedSizeList<float32, d>``: a 2-D numpy array (no copy when it is float32
    and contiguous; float16 arrays stay float16), a list of equal-length sequences, or an
    Arrow list array (the engine converts List and float64 lists itself)."""
    if isinstance(vectors, (pa.Array, pa.ChunkedArray)):
        return vectors
    arr = np.asarray(vectors)
    dtype = np.float16 if arr.dtype == np.float16 else np.float32
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if arr.ndim != 2:
        raise InvalidInput(f"invalid input: vectors must be 2-D (rows x dim), got shape {arr.shape}")
    return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), arr.shape[1])


def _column(values: Any) -> Any:
    if isinstance(values, np.ndarray) and values.ndim == 2:
        return _vector_array(values)
    return values


def _arrow(data: Any, columns: Mapping[str, Any]) -> Any:
    """``data`` (or the ``columns``) as something with ``__arrow_c_stream__``."""
    if data is None:
        if not columns:
            raise InvalidInput("invalid input: no data given")
        return pa.table({k: _column(v) for k, v in columns.items()})
    if columns:
        raise InvalidInput("invalid input: pass either data or columns, not both")
    module = type(data).__module__
    if module.startswith("pandas"):
        table = pa.Table.from_pandas(data, preserve_index=False)
        return table
    if isinstance(data, Mapping):
        return pa.table({k: _column(v) for k, v in data.items()})
    if hasattr(data, "__arrow_c_stream__"):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    raise InvalidInput(
        "invalid input: data must be a pyarrow Table or RecordBatch, a pandas or polars "
        f"DataFrame, a dict of columns or an Arrow stream, not {type(data).__name__}"
    )


def _queries(query: Any) -> "tuple[np.ndarray, bool]":
    """Query vectors as one contiguous float32 buffer, and whether several were given."""
    if isinstance(query, (pa.Array, pa.ChunkedArray)):
        query = np.stack([np.asarray(v, dtype=np.float32) for v in query.to_pylist()])
    arr = np.asarray(query, dtype=np.float32)
    if arr.ndim == 1:
        return np.ascontiguousarray(arr), False
    if arr.ndim == 2:
        return np.ascontiguousarray(arr).reshape(-1), True
    raise InvalidInput(f"invalid input: a query must be a vector or a matrix, got shape {arr.shape}")


def _ids(ids: Any) -> pa.Array:
    if isinstance(ids, (pa.Array, pa.ChunkedArray)):
        return ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    if isinstance(ids, (int, str, np.integer)):
        ids = [ids]
    return pa.array(list(ids) if not isinstance(ids, np.ndarray) else ids)


def _param(value: Any) -> pa.Array:
    """A SQL parameter as a one-row Arrow array: vectors become ``list<float32>``."""
    if isinstance(value, pa.ChunkedArray):
        value = value.combine_chunks()
    if isinstance(value, pa.Array):
        if pa.types.is_floating(value.type) or pa.types.is_integer(value.type):
            # A flat numeric array is a vector.
            return pa.array([value.to_numpy(zero_copy_only=False).astype(np.float32)], type=pa.list_(pa.float32()))
        return value
    if isinstance(value, pa.Scalar):
        return pa.array([value.as_py()], type=value.type)
    if isinstance(value, np.ndarray) or (
        isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float, np.number)) for v in value)
    ):
        return pa.array([np.asarray(value, dtype=np.float32)], type=pa.list_(pa.float32()))
    return pa.array([value])


class Database:
    """An open database directory. Use as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        path: PathLike,
        storage_options: Optional[Mapping[str, str]] = None,
        cache_dir: Optional[PathLike] = None,
        cache_size: Optional[int] = None,
        token: Optional[str] = None,
        timeout: Optional[float] = None,
    ):
        path = os.fspath(path)
        if path.startswith(_REMOTE):
            if storage_options or cache_dir is not None or cache_size is not None:
                raise InvalidInput(
                    "invalid input: storage_options, cache_dir and cache_size are the server's "
                    f"settings (omendb serve), not a client's of {path}"
                )
            from ._remote import RemoteDatabase

            url = "grpc+tls://" + path[len("grpcs://"):] if path.startswith("grpcs://") else path
            self._db = RemoteDatabase(url, token, timeout)
            return
        if token is not None or timeout is not None:
            raise InvalidInput("invalid input: token and timeout are for a server (grpc://host:port)")
        self._db = _omendb.Database(
            path,
            dict(storage_options or {}),
            None if cache_dir is None else os.fspath(cache_dir),
            cache_size,
        )

    @property
    def path(self) -> str:
        """The database's directory."""
        return self._db.path

    @property
    def closed(self) -> bool:
        return self._db.closed

    def close(self) -> None:
        """Waits for calls in flight and background index builds, then releases the directory."""
        self._db.close()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"omendb.Database({self.path!r})"

    def list_collections(self) -> list:
        """Names of the collections, sorted."""
        return self._db.list_collections()

    def create_collection(
        self,
        name: str,
        dim: Optional[int] = None,
        metric: str = "cosine",
        schema: Optional[pa.Schema] = None,
        data: Any = None,
        id_type: str = "int64",
        **options: Any,
    ) -> "Collection":
        """Creates collection ``name``, from ``schema``, from the rows of ``data`` (written in
        the same commit), or from ``dim`` alone (an ``id`` column of ``id_type``, ``int64``
        or ``string``, and a ``vector`` column). ``options`` are the collection's settings
        (the same as the server's and the C ABI's), with their values:

"""
        opts = {"metric": metric, **options}
        if data is not None:
            self._db.write(name, _arrow(data, {}), "create", opts)
        else:
            if schema is None:
                if dim is None:
                    raise InvalidInput("invalid input: create_collection needs dim, schema or data")
                id_types = {"int64": pa.int64(), "string": pa.string(), "utf8": pa.string()}
                if id_type not in id_types:
                    raise InvalidInput(f"invalid input: id_type must be int64 or string, not {id_type!r}")
                schema = pa.schema(
                    [
                        pa.field("id", id_types[id_type], nullable=False),
                        pa.field("vector", pa.list_(pa.field("item", pa.float32()), int(dim)), nullable=False),
                    ]
                )
            self._db.create_collection(name, schema, opts)
        return Collection(self._db.open_collection(name))

    def open_collection(self, name: str) -> "Collection":
        """An existing collection; :class:`NotFound` if there is none of that name."""
        return Collection(self._db.open_collection(name))

    __getitem__ = open_collection

    def drop_collection(self, name: str) -> None:
        """Drops collection ``name`` and its files."""
        self._db.drop_collection(name)

    def sql(self, query: str, params: Optional[Sequence[Any]] = None) -> pa.Table:
        """Runs one SQL statement, the server's SQL (``knn()``, ``cosine_distance``, DML), with
        ``params`` bound to ``$1, $2, ...``: a vector as a list, numpy array or Arrow list.
        A statement with parameters is planned once and only bound on later runs."""
        return self._db.sql(query, [_param(p) for p in (params or [])])


class Collection:
    """One collection of an open database."""

    def __init__(self, native: Any):
        self._c = native

    def __repr__(self) -> str:
        return f"omendb.Collection({self.name!r})"

    @property
    def name(self) -> str:
        return self._c.name

    @property
    def dim(self) -> int:
        return self._c.dim

    @property
    def metric(self) -> str:
        return self._c.metric

    @property
    def schema(self) -> pa.Schema:
        return self._c.schema

    def _columns(self, ids: Any, vectors: Any, columns: Mapping[str, Any]) -> dict:
        if ids is None and vectors is None:
            return dict(columns)
        schema = self.schema
        vector_name = next(f.name for f in schema if pa.types.is_fixed_size_list(f.type))
        id_name = "id" if "id" in schema.names else next(n for n in schema.names if n != vector_name)
        out = {}
        if ids is not None:
            out[id_name] = ids
        if vectors is not None:
            out[vector_name] = _vector_array(vectors)
        out.update(columns)
        return out

    def add(self, data: Any = None, *, ids: Any = None, vectors: Any = None, **columns: Any) -> int:
        """Appends rows in one commit: ``data`` (Arrow, pandas, polars, a dict of columns) or
        ``ids=``, ``vectors=`` (a 2-D array) and metadata columns as keywords. Rows whose id is
        stored already are refused, and then nothing is written. Returns the rows written."""
        return self._c.add(_arrow(data, self._columns(ids, vectors, columns)))

    def upsert(self, data: Any = None, *, ids: Any = None, vectors: Any = None, **columns: Any) -> int:
        """As :meth:`add`, replacing stored rows with the same ids."""
        return self._c.upsert(_arrow(data, self._columns(ids, vectors, columns)))

    def search(
        self,
        query: Any,
        k: int = 10,
        where: Optional[str] = None,
        ef: Optional[int] = None,
        nprobe: Optional[int] = None,
        fast: bool = False,
    ) -> pa.Table:
        """The ``k`` nearest rows to ``query`` (a vector), nearest first, with ``_distance``;
        for a matrix of queries, one table with a leading ``_query`` column (the query's row).
        ``where`` is a SQL condition on the collection's columns (``"lang = 'en'"``), planned
        once per text; k rows come back when k rows match. ``ef`` widens the graph search (and
        the candidates an IVF index re-ranks); ``nprobe`` is how many IVF lists are scanned
        (default: the collection's ``nprobe`` setting). ``fast=True`` searches only the rows
        already indexed (LanceDB's ``fast_search``): rows written since the last index build
        are not found, and the exact scan of them is skipped."""
        q, batched = _queries(query)
        if k < 0:
            raise InvalidInput(f"invalid input: k must be non-negative, got {k}")
        if nprobe is not None and nprobe <= 0:
            raise InvalidInput(f"invalid input: nprobe must be a positive integer, got {nprobe}")
        return self._c.search(q, int(k), where, ef, batched, nprobe, fast)

    def get(self, ids: Any) -> pa.Table:
        """The rows with these ids, in the order asked; missing ids are skipped."""
        return self._c.get(_ids(ids))

    def delete(self, ids: Any) -> int:
        """Deletes the rows with these ids; returns how many were stored."""
        return self._c.delete(_ids(ids))

    def count(self) -> int:
        """Live rows."""
        return self._c.count()

    def __len__(self) -> int:
        return self.count()

    def stats(self) -> dict:
        """Counts, sizes and settings: rows, segments, bytes_on_disk, index kinds, ..."""
        return json.loads(self._c.stats_json())

    def build_index(self, min_rows: int = 0) -> int:
        """Indexes every unindexed segment of at least ``min_rows`` rows now; returns how many
        indexes were built."""
        return self._c.build_index(min_rows)

    def wait_for_indexing(self) -> None:
        """Waits for background index builds and merges."""
        self._c.wait_for_indexing()

    def compact(self) -> int:
        """Merges segments and drops deleted rows; returns how many merges ran."""
        return self._c.compact()

    def alter(self, **settings: Any) -> None:
        """Changes settings after creation; those that change:

"""
        self._c.alter(settings)


class DB:
    """One database directory with one collection, ``default``: the short form.

        db = omendb.DB("./vectors", dim=384)
        db.add_batch(vectors, ids=range(len(vectors)))
        db.search(query, k=10)
        db = omendb.DB.load("./vectors")
    """

    COLLECTION = "default"

    def __init__(self, path: PathLike = "omendb-data", dim: Optional[int] = None, metric: str = "cosine", **options: Any):
        self._db = Database(path)
        self._metric = metric
        self._options = options
        self._col: Optional[Collection] = None
        if self.COLLECTION in self._db.list_collections():
            self._col = self._db.open_collection(self.COLLECTION)
            stored = self._col.dim
            if dim is not None and stored != dim:
                self._db.close()
                raise InvalidInput(f"invalid input: {os.fspath(path)} holds vectors of dimension {stored}, not {dim}")
        # Otherwise the collection is made by the first add_batch, with its metadata columns.
        self._dim = dim

    @classmethod
    def load(cls, path: PathLike) -> "DB":
        """Opens an existing database (mapped, not read: it opens at once)."""
        db = cls(path)
        if db._col is None:
            db.close()
            raise NotFound(f"not found: no vectors in {os.fspath(path)}")
        return db

    def _collection(self) -> Collection:
        if self._col is None:
            raise NotFound("not found: nothing added yet")
        return self._col

    def add_batch(self, vectors: Any, ids: Optional[Iterable[Any]] = None, metadata: Any = None) -> int:
        """Adds vectors (a 2-D array) with ``ids`` (default: counting on from the rows stored)
        and ``metadata`` (a dict of columns or a list of dicts, one per vector)."""
        vec = _vector_array(vectors)
        if self._col is None and self._dim is not None and vec.type.list_size != self._dim:
            raise InvalidInput(f"invalid input: vectors have dimension {vec.type.list_size}, this DB {self._dim}")
        if ids is None:
            start = self._col.count() if self._col is not None else 0
            ids = np.arange(start, start + len(vec), dtype=np.int64)
        columns = {"id": pa.array(ids if isinstance(ids, np.ndarray) else list(ids)), "vector": vec}
        if metadata is not None:
            if isinstance(metadata, Mapping):
                columns.update(metadata)
            else:
                for key, values in pa.Table.from_pylist(list(metadata)).to_pydict().items():
                    columns[key] = values
        table = pa.table(columns)
        if self._col is None:
            self._col = self._db.create_collection(self.COLLECTION, data=table, metric=self._metric, **self._options)
            return table.num_rows
        return self._col.add(table)

    def search(
        self,
        query: Any,
        k: int = 10,
        where: Optional[str] = None,
        ef: Optional[int] = None,
        nprobe: Optional[int] = None,
        fast: bool = False,
    ) -> pa.Table:
        return self._collection().search(query, k, where=where, ef=ef, nprobe=nprobe, fast=fast)

    def get(self, ids: Any) -> pa.Table:
        return self._collection().get(ids)

    def delete(self, ids: Any) -> int:
        return self._collection().delete(ids)

    def count(self) -> int:
        return 0 if self._col is None else self._col.count()

    def __len__(self) -> int:
        return self.count()

    def build_index(self) -> int:
        return self._collection().build_index()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "DB":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# The settings' docs come from the engine's one table of settings, so they never drift.
Database.create_collection.__doc__ += _omendb._settings_help()
Collection.alter.__doc__ += _omendb._settings_help(True)
