"""The embedded engine (qdrant-edge) and qdrant-client's in-process mode give the same answers."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from qdrant_client import models as qm

from models.vector_store import (
    EdgeVectorStore,
    IncompatibleStoreError,
    QdrantServerStore,
    StoredItem,
    VectorStore,
    open_vector_store,
)

DIM = 16
SIZES = {"content": DIM, "cf": 5}
DISTANCES = {"cf": "dot"}


@pytest.fixture
def stores(tmp_path) -> Iterator[tuple[VectorStore, VectorStore]]:
    rng = np.random.default_rng(7)
    items = [
        StoredItem(
            f"item-{n}",
            {"content": rng.normal(size=DIM).astype(np.float32)},
            {"title": f"Item {n}"},
        )
        for n in range(300)
    ]
    edge = EdgeVectorStore(tmp_path / "edge", SIZES, DISTANCES)
    memory = QdrantServerStore(":memory:", SIZES, DISTANCES)
    for store in (edge, memory):
        store.start()
        store.upsert(items)
    yield edge, memory
    edge.stop()
    memory.stop()


def test_nearest_gives_the_same_top_k_with_exclusions(stores) -> None:
    edge, memory = stores
    rng = np.random.default_rng(11)
    for _ in range(20):
        query = rng.normal(size=DIM).astype(np.float32)
        exclude = {f"item-{n}" for n in rng.integers(0, 300, size=25)}
        a = edge.nearest(query, "content", 10, exclude)
        b = memory.nearest(query, "content", 10, exclude)
        assert [h.item_id for h in a] == [h.item_id for h in b]
        assert np.allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
        assert not exclude & {h.item_id for h in a}


def test_set_vectors_adds_a_dot_product_vector_and_keeps_the_rest(stores) -> None:
    """CF vectors (factor and bias) are compared by dot product: length counts."""
    rng = np.random.default_rng(5)
    cf = {f"item-{n}": {"cf": rng.normal(size=5).astype(np.float32)} for n in range(0, 300, 2)}
    for store in stores:
        before = store.get(["item-2"])["item-2"]
        store.set_vectors(cf)
        after = store.get(["item-2"])["item-2"]
        assert np.allclose(after.vectors["content"], before.vectors["content"])
        assert after.payload["title"] == "Item 2"
    query = rng.normal(size=5).astype(np.float32)
    a, b = (store.nearest(query, "cf", 10, exclude={"item-0"}) for store in stores)
    assert [h.item_id for h in a] == [h.item_id for h in b]
    expected = sorted(cf, key=lambda i: -float(cf[i]["cf"] @ query))
    assert [h.item_id for h in a] == [i for i in expected if i != "item-0"][:10]
    assert np.allclose([h.score for h in a], [cf[h.item_id]["cf"] @ query for h in a], atol=1e-4)


def test_a_store_with_other_vectors_is_named_and_can_be_reset(tmp_path) -> None:
    """A collection made by an older version (no "cf" vector) is refused with what it
    has; reset() starts it afresh with the store's vectors."""
    with EdgeVectorStore(tmp_path, {"content": 2}) as old:
        old.upsert([StoredItem("a", {"content": np.array([1.0, 0.0])})])
    server = QdrantServerStore(":memory:", SIZES, DISTANCES)
    server._connect().create_collection(  # as an older version made it
        "items", vectors_config={"content": qm.VectorParams(size=2, distance=qm.Distance.COSINE)}
    )
    for store in (EdgeVectorStore(tmp_path, SIZES, DISTANCES), server):
        with pytest.raises(IncompatibleStoreError, match="cf"):
            store.start()
        store.reset()
        store.upsert([StoredItem("b", {"content": np.ones(DIM), "cf": np.ones(5)})])
        assert store.count() == 1
        store.stop()


def test_get_count_and_reupsert_agree(stores) -> None:
    edge, memory = stores
    got_edge, got_memory = edge.get(["item-1", "nope"]), memory.get(["item-1", "nope"])
    assert set(got_edge) == set(got_memory) == {"item-1"}
    assert np.allclose(
        got_edge["item-1"].vectors["content"], got_memory["item-1"].vectors["content"]
    )
    assert edge.count() == memory.count() == 300
    replacement = StoredItem(
        "item-1", {"content": np.ones(DIM, dtype=np.float32)}, {"title": "new"}
    )
    for store in stores:
        store.upsert([replacement])
        assert store.count() == 300
        assert store.get(["item-1"])["item-1"].payload["title"] == "new"


def test_scroll_returns_every_item_with_its_vectors(stores) -> None:
    edge, memory = stores
    scrolled = [{i.item_id: i for i in store.scroll(batch_size=64)} for store in (edge, memory)]
    assert set(scrolled[0]) == set(scrolled[1]) == {f"item-{n}" for n in range(300)}
    assert np.allclose(
        scrolled[0]["item-7"].vectors["content"], scrolled[1]["item-7"].vectors["content"]
    )
    for store in stores:  # payloads only, for listings
        bare = list(store.scroll(batch_size=64, with_vectors=False))
        assert len(bare) == 300 and not any(item.vectors for item in bare)
        assert {item.item_id: item.payload for item in bare} == {
            item_id: item.payload for item_id, item in scrolled[0].items()
        }


def test_items_may_lack_a_named_vector(tmp_path) -> None:
    """A text-only item has no "image" vector; both engines store and search it alike."""
    sizes = {"content": 2, "image": 3}
    items = [
        StoredItem("text-only", {"content": np.array([1.0, 0.0])}),
        StoredItem("both", {"content": np.array([0.0, 1.0]), "image": np.array([1.0, 0, 0])}),
    ]
    results = []
    for store in (EdgeVectorStore(tmp_path / "edge", sizes), QdrantServerStore(":memory:", sizes)):
        with store:
            store.upsert(items)
            results.append(
                (
                    [h.item_id for h in store.nearest(np.array([1.0, 0, 0]), "image", limit=5)],
                    sorted(store.get(["text-only"])["text-only"].vectors),
                )
            )
    assert results[0] == results[1] == (["both"], ["content"])


def test_embedded_store_persists_across_reopen(tmp_path) -> None:
    store = open_vector_store(tmp_path, {"content": 2})
    assert isinstance(store, EdgeVectorStore)
    with store:
        store.upsert([StoredItem("a", {"content": np.array([1.0, 0.0])})])
    with open_vector_store(tmp_path, {"content": 2}) as reopened:
        assert reopened.count() == 1 and "a" in reopened.get(["a"])


def test_wrong_vector_shape_is_refused_with_its_name(tmp_path) -> None:
    with (
        EdgeVectorStore(tmp_path, {"content": 2}) as store,
        pytest.raises(ValueError, match="content"),
    ):
        store.upsert([StoredItem("a", {"content": np.zeros(3)})])


def test_nearest_ids_are_the_nearest_items_ids(stores) -> None:
    rng = np.random.default_rng(3)
    for _ in range(10):
        query = rng.normal(size=DIM).astype(np.float32)
        exclude = {f"item-{n}" for n in rng.integers(0, 300, size=25)}
        expected = [h.item_id for h in stores[0].nearest(query, "content", 50, exclude)]
        for store in stores:
            assert store.nearest_ids(query, "content", 50, exclude) == expected
