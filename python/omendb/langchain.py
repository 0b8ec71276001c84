"""LangChain's ``VectorStore`` over an OmenDB collection (``pip install "omendb[langchain]"``).

The documents are an ordinary collection (``id`` string, ``vector``, ``text``, ``metadata`` as
JSON text, ``metadata_pairs``: its top-level pairs a line each, what filters match), in process or on a server (``omendb.connect("grpc://...")``), so any other client
can query them. ::

    from omendb.langchain import OmenDBVectorStore
    store = OmenDBVectorStore(embedding=embeddings, path="./vectors")
    store.add_texts(["first", "second"], metadatas=[{"lang": "en"}, {"lang": "de"}])
    store.similarity_search("first", k=1, filter={"lang": "en"})
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance

import omendb

__all__ = ["OmenDBVectorStore"]


def _metadata_json(metadata: Optional[dict]) -> str:
    return json.dumps(metadata or {}, sort_keys=True, separators=(",", ":"), default=str)


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _pair(key: str, value: Any) -> str:
    return json.dumps({key: value}, sort_keys=True, separators=(",", ":"), default=str)[1:-1]


def _pairs(metadata: Optional[dict]) -> str:
    """The top-level metadata pairs, one JSON `"key":value` per line (JSON text has no raw
    newline): what a filter matches whole lines of."""
    return "\n" + "".join(_pair(k, v) + "\n" for k, v in sorted((metadata or {}).items()))


def _where(filter: Union[None, str, dict]) -> Optional[str]:
    """A LangChain filter as the search's SQL condition: SQL text as it is, or a dict of
    top-level metadata keys and the values they must equal."""
    if filter is None or isinstance(filter, str):
        return filter
    if not isinstance(filter, dict):
        raise omendb.InvalidInput(f"invalid input: a filter is a dict of metadata values or SQL text, not {type(filter).__name__}")
    conditions = [f"strpos(metadata_pairs, {_sql_text(chr(10) + _pair(k, v) + chr(10))}) > 0" for k, v in filter.items()]
    return " AND ".join(conditions) if conditions else None


class OmenDBVectorStore(VectorStore):
    """Documents in collection ``collection_name`` of an OmenDB database: ``db`` (an open
    :class:`omendb.Database`, in process or remote), or one opened at ``path`` (a directory,
    a bucket URL or a server's ``grpc://`` URL). The collection is made at the first write,
    with the embedding's dimension and ``metric``."""

    def __init__(
        self,
        embedding: Embeddings,
        path: Optional[str] = None,
        db: Optional["omendb.Database"] = None,
        collection_name: str = "langchain",
        metric: str = "cosine",
        **connect_options: Any,
    ):
        if (path is None) == (db is None):
            raise omendb.InvalidInput("invalid input: give the database (db=) or where it is (path=), one of them")
        self._db = db if db is not None else omendb.connect(path, **connect_options)
        self._embedding = embedding
        self._name = collection_name
        self._metric = metric
        self._collection: Optional[omendb.Collection] = None

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    @property
    def collection(self) -> Optional["omendb.Collection"]:
        """The collection, once it exists."""
        if self._collection is None and self._name in self._db.list_collections():
            self._collection = self._db.open_collection(self._name)
        return self._collection

    def _collection_for(self, dim: int) -> "omendb.Collection":
        c = self.collection
        if c is None:
            schema = pa.schema([
                pa.field("id", pa.string(), nullable=False),
                pa.field("vector", pa.list_(pa.field("item", pa.float32()), dim), nullable=False),
                pa.field("text", pa.string()),
                pa.field("metadata", pa.string()),
                pa.field("metadata_pairs", pa.string()),
            ])
            try:
                c = self._db.create_collection(self._name, schema=schema, metric=self._metric)
            except omendb.AlreadyExists:
                c = self._db.open_collection(self._name)
            self._collection = c
        return c

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: Optional[List[dict]] = None,
        *,
        ids: Optional[List[Optional[str]]] = None,
        **kwargs: Any,
    ) -> List[str]:
        texts = list(texts)
        if not texts:
            return []
        metadatas = metadatas or [{} for _ in texts]
        ids = [str(i) if i is not None else str(uuid.uuid4()) for i in (ids or [None] * len(texts))]
        if not (len(ids) == len(metadatas) == len(texts)):
            raise omendb.InvalidInput("invalid input: texts, metadatas and ids differ in length")
        vectors = np.asarray(self._embedding.embed_documents(texts), dtype=np.float32)
        c = self._collection_for(vectors.shape[1])
        # The last of repeated ids wins, as repeated writes would.
        last = {i: n for n, i in enumerate(ids)}
        keep = sorted(last.values())
        c.upsert(
            ids=[ids[n] for n in keep],
            vectors=vectors[keep],
            text=[texts[n] for n in keep],
            metadata=[_metadata_json(metadatas[n]) for n in keep],
            metadata_pairs=[_pairs(metadatas[n]) for n in keep],
        )
        return ids

    def add_documents(self, documents: List[Document], **kwargs: Any) -> List[str]:
        if "ids" not in kwargs:
            kwargs["ids"] = [d.id for d in documents]
        return self.add_texts(
            [d.page_content for d in documents], [d.metadata for d in documents], **kwargs
        )

    def delete(self, ids: Optional[List[str]] = None, **kwargs: Any) -> Optional[bool]:
        c = self.collection
        if ids is None:
            if c is not None:
                self._db.drop_collection(self._name)
                self._collection = None
            return True
        if c is not None and ids:
            c.delete([str(i) for i in ids])
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> List[Document]:
        c = self.collection
        if c is None or not ids:
            return []
        return self._documents(c.get([str(i) for i in ids]))

    @staticmethod
    def _documents(rows: pa.Table) -> List[Document]:
        return [
            Document(id=i, page_content=t or "", metadata=json.loads(m) if m else {})
            for i, t, m in zip(
                rows.column("id").to_pylist(), rows.column("text").to_pylist(), rows.column("metadata").to_pylist()
            )
        ]

    def _search(self, vector: Sequence[float], k: int, filter: Any) -> pa.Table:
        c = self.collection
        if c is None or k <= 0:
            return pa.table({"id": [], "text": [], "metadata": [], "_distance": []})
        return c.search(np.asarray(vector, dtype=np.float32), k=k, where=_where(filter))

    def similarity_search_with_score_by_vector(
        self, embedding: List[float], k: int = 4, filter: Any = None, **kwargs: Any
    ) -> List[Tuple[Document, float]]:
        rows = self._search(embedding, k, filter)
        return list(zip(self._documents(rows), rows.column("_distance").to_pylist()))

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: Any = None, **kwargs: Any
    ) -> List[Tuple[Document, float]]:
        """The ``k`` nearest documents with their distances (smaller is nearer); ``filter``
        is a dict of metadata values or a SQL condition, applied before the search."""
        return self.similarity_search_with_score_by_vector(self._embedding.embed_query(query), k, filter)

    def similarity_search_by_vector(
        self, embedding: List[float], k: int = 4, filter: Any = None, **kwargs: Any
    ) -> List[Document]:
        return [d for d, _ in self.similarity_search_with_score_by_vector(embedding, k, filter)]

    def similarity_search(self, query: str, k: int = 4, filter: Any = None, **kwargs: Any) -> List[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, filter)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        # OmenDB's distances: cosine 1 - cos (0..2), l2 squared euclidean, dot -<a, b>.
        return {
            "cosine": lambda d: 1.0 - d,
            "l2": lambda d: 1.0 / (1.0 + d),
            "dot": lambda d: -d,
        }.get(self._metric, lambda d: -d)

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: List[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Any = None,
        **kwargs: Any,
    ) -> List[Document]:
        rows = self._search(embedding, fetch_k, filter)
        if rows.num_rows == 0:
            return []
        vectors = np.asarray(rows.column("vector").to_pylist(), dtype=np.float32)
        chosen = maximal_marginal_relevance(
            np.asarray(embedding, dtype=np.float32), vectors, lambda_mult=lambda_mult, k=k
        )
        docs = self._documents(rows)
        return [docs[i] for i in chosen]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Any = None,
        **kwargs: Any,
    ) -> List[Document]:
        return self.max_marginal_relevance_search_by_vector(
            self._embedding.embed_query(query), k, fetch_k, lambda_mult, filter
        )

    @classmethod
    def from_texts(
        cls,
        texts: List[str],
        embedding: Embeddings,
        metadatas: Optional[List[dict]] = None,
        *,
        ids: Optional[List[str]] = None,
        **kwargs: Any,
    ) -> "OmenDBVectorStore":
        store = cls(embedding=embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store
