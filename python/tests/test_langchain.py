"""LangChain's own standard suite for vector stores (`langchain-tests`), sync and async, against
`OmenDBVectorStore` on a database in process and on a real server (remote mode)."""

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_tests.integration_tests import VectorStoreIntegrationTests

import omendb
from omendb.langchain import OmenDBVectorStore


@pytest.fixture(params=["dir", "remote"])
def database(request, tmp_path):
    if request.param == "dir":
        db = omendb.connect(tmp_path / "db")
    else:
        db = omendb.connect(request.getfixturevalue("server"))
    yield db
    db.close()


class TestOmenDBVectorStore(VectorStoreIntegrationTests):
    @pytest.fixture()
    def vectorstore(self, database):
        store = OmenDBVectorStore(embedding=self.get_embeddings(), db=database)
        try:
            yield store
        finally:
            store.delete()


def test_metadata_filters_search_before_k_is_taken_and_the_rows_are_a_plain_collection(database):
    store = OmenDBVectorStore(embedding=VectorStoreIntegrationTests.get_embeddings(), db=database,
                              collection_name="docs")
    texts = [f"text {i}" for i in range(200)]
    metadatas = [{"lang": ["en", "de"][i % 2], "n": i, "tags": {"lang": "xx"}} for i in range(200)]
    ids = store.add_texts(texts, metadatas, ids=[f"d{i}" for i in range(200)])
    assert ids[:2] == ["d0", "d1"]
    # 100 rows match: k of them come back, every one matching (a pre-filter, not a post-filter).
    found = store.similarity_search("text 3", k=10, filter={"lang": "de"})
    assert len(found) == 10 and all(d.metadata["lang"] == "de" for d in found)
    assert found[0] == Document(id="d3", page_content="text 3", metadata=metadatas[3])
    # A nested key of the same name is not a match; several keys must all match.
    assert store.similarity_search("text 3", k=5, filter={"lang": "xx"}) == []
    assert [d.id for d in store.similarity_search("text 8", k=5, filter={"lang": "en", "n": 8})] == ["d8"]
    # SQL text works as the filter too, and relevance scores order as distances do.
    assert all(d.id == "d4" for d in store.similarity_search("x", k=3, filter="id = 'd4'"))
    scored = store.similarity_search_with_relevance_scores("text 5", k=3)
    assert scored[0][0].id == "d5" and scored[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [s for _, s in scored] == sorted((s for _, s in scored), reverse=True)
    # MMR returns k distinct documents, the nearest first.
    mmr = store.max_marginal_relevance_search("text 7", k=4, fetch_k=20)
    assert len({d.id for d in mmr}) == 4 and mmr[0].id == "d7"
    # The documents are an ordinary collection: SQL sees them.
    n = database.sql("SELECT count(*) AS n FROM docs WHERE text LIKE 'text 1%'")
    assert n.column("n").to_pylist() == [111]
    store.delete()
    assert "docs" not in database.list_collections()
