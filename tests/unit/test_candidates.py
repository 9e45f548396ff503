"""The candidate stage against a real embedded Qdrant: CF vectors published to its "cf"
vector, and lists ranked from what it retrieves."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from models.hybrid import CF, CONTENT, HybridRecommender
from models.vector_store import EdgeVectorStore, StoredItem
from tests.planted import DIM, PER_TASTE, TASTES, TS, planted_engine, taste


@pytest.fixture
def store(tmp_path) -> Iterator[EdgeVectorStore]:
    hybrid = HybridRecommender(content_dim=DIM)
    with EdgeVectorStore(tmp_path, {CONTENT: DIM, CF: hybrid.cf_vector_size}, {CF: "dot"}) as s:
        yield s


def staged(store: EdgeVectorStore, per_source: int, weights: dict[str, float] | None = None):
    hybrid = HybridRecommender(weights, content_dim=DIM)
    hybrid.use_store(store, dense_max_items=0, per_source=per_source)
    return planted_engine(weights, hybrid=hybrid)


def test_cf_vectors_in_the_store_are_the_item_factors_and_biases(store) -> None:
    engine, _, _ = staged(store, per_source=5)
    hybrid, cf = engine.hybrid, engine.hybrid.cf
    stored = store.get(hybrid.catalog.ids)
    assert len(stored) == TASTES * PER_TASTE
    for item_id, item in stored.items():
        index = hybrid.catalog.index(item_id)
        expected = np.append(cf.items[index], cf.bias[index])
        assert np.allclose(item.vectors[CF], expected, atol=1e-6), item_id
        assert CONTENT in item.vectors  # the CF update left the content vector alone
    # The store's dot-product neighbours of a user's query are the CF's own best items.
    state = engine.users["u1-0"]
    query = cf.retrieval_query("u1-0", state.history, TS)
    unseen = [i for i in hybrid.catalog.ids if hybrid.catalog.index(i) not in state.history.seen]
    hits = store.nearest(query, CF, limit=5, exclude=set(hybrid.catalog.ids) - set(unseen))
    scores = cf.score("u1-0", state.history, len(hybrid), TS)
    best = sorted(unseen, key=lambda i: -scores[hybrid.catalog.index(i)])[:5]
    assert [h.item_id for h in hits] == best


def test_items_not_stored_yet_keep_their_cf_vector_pending(store) -> None:
    hybrid = HybridRecommender(content_dim=DIM)
    hybrid.use_store(store)
    hybrid.add_item("a", "A", np.ones(DIM))
    store.upsert([StoredItem("a", {CONTENT: np.ones(DIM)})])
    hybrid.apply({"a": {CF: {"dq": [0.1] * 32, "db": 0.5}}, "b": {CF: {"dq": [0.2] * 32, "db": 1}}})
    assert hybrid.publish_cf() == 1  # "b" arrived through a change before its record
    store.upsert([StoredItem("b", hybrid.with_cf_vector("b", {CONTENT: np.ones(DIM)}))])
    hybrid.add_item("b", "B", np.ones(DIM))
    assert np.allclose(store.get(["b"])["b"].vectors[CF], [0.2] * 32 + [1.0])
    assert hybrid.publish_cf() == 1 and hybrid.publish_cf() == 0


def test_with_every_item_retrieved_the_lists_are_the_dense_lists(store) -> None:
    """Candidates cover the catalog: ranking them gives exactly what ranking it all gives."""
    engine, _, _ = staged(store, per_source=TASTES * PER_TASTE)
    dense, _, _ = planted_engine()
    for user in engine.users:
        assert engine.recommend(user, 5, TS + 1e4) == dense.recommend(user, 5, TS + 1e4)


def test_few_candidates_per_source_still_find_the_users_taste(store) -> None:
    engine, _, _ = staged(store, per_source=4)
    for user, state in engine.users.items():
        items = engine.hybrid.candidates.retrieve(
            engine.hybrid.sources, engine.hybrid.catalog, user, state.history, TS + 1e4
        )
        assert len(items) <= 4 * len(engine.hybrid.sources)
        assert not set(items.tolist()) & state.history.seen
        recs = engine.recommend(user, k=3, now=TS + 1e4)
        assert sum(taste(r.item_id) == taste(user) for r in recs) >= 2, (user, recs)


def test_a_new_item_is_retrieved_through_qdrant_content_before_any_click(store) -> None:
    weights = {"item-item": 1.0, "trending": 0.3, "cf": 0.2, "content": 0.6}
    engine, directions, rng = staged(store, per_source=3, weights=weights)
    engine.add_item("new", "Brand new", directions[2] + rng.normal(scale=0.1, size=DIM))
    reached = {t: 0 for t in range(TASTES)}
    for user in engine.users:
        new = [r for r in engine.recommend(user, k=10, now=TS + 1e4) if r.item_id == "new"]
        if new:
            reached[taste(user)] += 1
            assert new[0].reasons[0].source == "content"
    assert reached[2] >= 8 and reached[0] == reached[1] == 0, reached


def test_a_cold_user_gets_the_trending_items(store) -> None:
    engine, _, _ = staged(store, per_source=5)
    cold = engine.recommend("newcomer", k=5, now=TS + 1e4)
    trending = engine.hybrid.sources["trending"].score("newcomer", None, len(engine.hybrid), TS)
    most = {engine.hybrid.catalog.ids[i] for i in np.argsort(-trending)[:5]}
    assert {r.item_id for r in cold} == most
