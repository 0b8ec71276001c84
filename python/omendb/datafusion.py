"""OmenDB in a DataFusion ``SessionContext`` of your own (the ``datafusion`` package, 55.x).

``register(ctx, db)`` adds an in-process database's collections as tables, ``knn`` as a table
function and the distance functions (``cosine_distance``, ``l2_distance``, ``inner_product``,
``negative_inner_product``) to ``ctx``, through DataFusion's FFI: they run in this package's
engine, beside the session's own tables (Parquet, CSV, DataFrames)::

    import datafusion, omendb, omendb.datafusion

    ctx = datafusion.SessionContext()
    db = omendb.connect("./data")
    omendb.datafusion.register(ctx, db)
    ctx.register_parquet("clicks", "clicks.parquet")
    ctx.sql(
        "SELECT k.id, k._distance, c.clicks FROM knn('docs', $q, 10) k "
        "JOIN clicks c ON c.id = k.id WHERE k.lang = 'en'",
        q=omendb.datafusion.vector(query),
    ).to_pandas()

``WHERE`` conditions on a knn() call's columns reach the search as a pre-filter (k matching
rows come back whenever k match). A table function's arguments are fixed when a statement is
planned, so the query vector is given in the text: ``vector(v)`` writes it as a literal for
datafusion-python's named substitution (``q=...`` above); ``param_values`` cannot bind it.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from . import _omendb
from ._omendb import Error, InvalidInput


def _check_version(datafusion: Any) -> None:
    """Refuses a ``datafusion`` whose FFI is not the one this package speaks."""
    ours = _omendb._datafusion_ffi_version()
    theirs = str(getattr(datafusion, "__version__", "unknown"))
    if theirs.split(".")[0] != str(ours):
        raise Error(
            f"omendb.datafusion speaks the FFI of DataFusion {ours}, but the installed "
            f"datafusion package is {theirs}: install datafusion=={ours}.*"
        )


def register(ctx: Any, db: Any, collections: Optional[Sequence[str]] = None) -> None:
    """Adds ``db``'s collections (or those named in ``collections``) as tables of ``ctx``
    (a ``datafusion.SessionContext``), ``knn`` as a table function and the distance functions
    as scalar functions. ``db`` is an in-process database (``omendb.connect(path)``); a
    server's collections are reached over Flight SQL instead."""
    import datafusion

    _check_version(datafusion)
    native = getattr(db, "_db", db)
    if not isinstance(native, _omendb.Database):
        raise InvalidInput(
            "invalid input: omendb.datafusion.register takes an in-process database "
            "(omendb.connect(path)), not a server's: query a server over Flight SQL"
        )
    names = native.list_collections() if collections is None else list(collections)
    for name in names:
        ctx.register_table(name, _omendb.DataFusionTable(native, name))
    ctx.register_udtf(datafusion.udtf(_omendb.DataFusionKnn(native), "knn"))
    for name in _omendb.DataFusionDistance.names():
        ctx.register_udf(datafusion.udf(_omendb.DataFusionDistance(name)))


def vector(values: Any) -> str:
    """A query vector (a list, numpy array or Arrow array of numbers) as an SQL list literal,
    exact for float32 values: for ``ctx.sql(text, q=vector(v))``, which writes it where the
    text has ``$q``."""
    array = np.asarray(values, dtype=np.float32)
    if array.ndim != 1:
        raise InvalidInput(f"invalid input: a query vector has one dimension, got shape {array.shape}")
    return "[" + ", ".join(repr(float(x)) for x in array) + "]"
