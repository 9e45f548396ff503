"""The embedded engine (qdrant-edge) and qdrant-client's in-process mode give the same answers."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from models.vector_store import (
    TRENDING_FIELD,
    EdgeVectorStore,
    QdrantServerStore,
    StoredItem,
    VectorStore,
    open_vector_store,
)

DIM = 16


@pytest.fixture
def stores(tmp_path) -> Iterator[tuple[VectorStore, VectorStore]]:
    rng = np.random.default_rng(7)
    # Distinct trending values: the engines order ties differently (the ranker breaks ties
    # by item id itself), so ties would test nothing but that.
    trending = rng.permutation(300)
    items = [
        StoredItem(
            f"item-{n}",
            {"content": rng.normal(size=DIM).astype(np.float32)},
            {"title": f"Item {n}", TRENDING_FIELD: float(trending[n])},
        )
        for n in range(300)
    ]
    edge = EdgeVectorStore(tmp_path / "edge", {"content": DIM})
    memory = QdrantServerStore(":memory:", {"content": DIM})
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


def test_top_by_payload_and_set_payload_agree(stores) -> None:
    edge, memory = stores
    for store in stores:
        store.set_payload("item-3", {TRENDING_FIELD: 5000.0})
    a = edge.top_by(TRENDING_FIELD, 15, exclude={"item-4"})
    b = memory.top_by(TRENDING_FIELD, 15, exclude={"item-4"})
    assert [(h.item_id, h.score) for h in a] == [(h.item_id, h.score) for h in b]
    assert a[0].item_id == "item-3" and a[0].payload["title"] == "Item 3"


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
