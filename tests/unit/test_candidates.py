"""The candidate stage against a real embedded Qdrant: CF vectors published to its "cf"
vector, and lists ranked from what it retrieves."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.hybrid import CF, CONTENT, HybridRecommender, Recommendation
from models.sources import DecayedPopularity, UserHistory
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
    """Candidates cover the catalog: ranking them gives what ranking it all gives (the
    same items, order and reasons; scores equal to 1e-6, as dense ranking keeps content
    scores updated in float32 steps and candidates are scored in float64 at once)."""
    engine, _, _ = staged(store, per_source=TASTES * PER_TASTE)
    dense, _, _ = planted_engine()
    for user in engine.users:
        staged_list, dense_list = (
            engine.recommend(user, 5, TS + 1e4),
            dense.recommend(user, 5, TS + 1e4),
        )
        assert [explained(r) for r in staged_list] == [explained(r) for r in dense_list]
        for a, b in zip(staged_list, dense_list, strict=True):
            assert a.score == pytest.approx(b.score, rel=1e-6)
            assert [x.score for x in a.reasons] == pytest.approx([x.score for x in b.reasons])


def explained(recommendation: Recommendation) -> tuple[str, list[tuple[str, str | None]]]:
    return recommendation.item_id, [(r.source, r.because_of) for r in recommendation.reasons]


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


@settings(max_examples=60, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.integers(0, 30), st.sampled_from([0.0, 1.0, 5.0, 60.0])), max_size=120
    ),
    seen=st.sets(st.integers(0, 30), max_size=12),
    limit=st.integers(1, 12),
    restored_at=st.integers(0, 120),
)
def test_trending_picks_kept_as_masses_grow_equal_those_ranked_afresh(
    events: list[tuple[int, float]], seen: set[int], limit: int, restored_at: int
) -> None:
    """The trending leaders, kept up to date event by event (and across a checkpoint
    restore), pick what ranking every item's mass afresh picks: the same items, ties
    (equal timestamps) included."""
    kept = DecayedPopularity(half_life_s=30.0, leaders=8)
    history = UserHistory()
    for item in seen:
        history.add(item, 1.0)
    kept.best_items("u", history, limit, 31, 0.0)  # ranks the leaders, kept from here on
    for n, (item, ts) in enumerate(events):
        if n == restored_at:
            restored = DecayedPopularity(half_life_s=30.0, leaders=8)
            restored.load_item_arrays(kept.item_arrays())
            kept = restored
        kept.apply(item, {"at": ts})
    afresh = DecayedPopularity(half_life_s=30.0, leaders=8)
    afresh.load_item_arrays(kept.item_arrays())
    picks = kept.best_items("u", history, limit, 31, 60.0)
    assert picks == afresh.best_items("u", history, limit, 31, 60.0)
    assert not set(picks) & seen
    masses = kept.log_mass
    unseen = sorted(
        (i for i in range(len(masses)) if i not in seen and np.isfinite(masses[i])),
        key=lambda i: (-masses[i], i),
    )
    # As good as any: every pick has at least the mass of the best item left out.
    left_out = [i for i in unseen if i not in picks]
    if picks and left_out:
        assert min(masses[picks]) >= masses[left_out[0]]
    assert len(picks) == min(limit, len(unseen))


def test_ranking_candidates_keeps_no_catalog_sized_array_per_user(store) -> None:
    """Through the candidate stage the content source scores the candidates only: none of
    its per-user or per-item whole-catalog caches fill (at 100k items they grew by about
    1 MB per active user and were 38 of a click's 93 ms)."""
    engine, _, _ = staged(store, per_source=4)
    content = engine.hybrid.content
    assert len(engine.users) == 30 and not content._scores and not content._rows
    assert content._vectors64 is None


def test_the_dense_content_caches_stay_within_their_byte_bound() -> None:
    hybrid = HybridRecommender(content_dim=DIM)
    items = TASTES * PER_TASTE
    hybrid.content.max_cache_bytes = 10 * items * 8  # ten users' float64 scores
    engine, _, _ = planted_engine(hybrid=hybrid)
    assert len(engine.users) == 30 and len(hybrid) == items
    assert len(hybrid.content._scores) == 10
    assert len(hybrid.content._rows) == 20  # of the 36 items clicked: rows of float32


class CountedStore:
    """The real store, counting the candidate queries asked of it."""

    def __init__(self, store: EdgeVectorStore) -> None:
        self.queries = 0
        self.uncounted = store.nearest_ids
        store.nearest_ids = self.nearest_ids  # type: ignore[method-assign]

    def nearest_ids(self, *args, **kwargs) -> list[str]:
        self.queries += 1
        return self.uncounted(*args, **kwargs)


def test_a_click_s_step_ranks_the_candidates_of_the_list_served_without_a_query(store) -> None:
    """The learned blend's step ranks the list the user had: the candidates retrieved for
    it are kept, equal to what retrieving again gives while the store is unchanged, and
    retrieved again once the user's history or the catalog has moved on."""
    hybrid = HybridRecommender(content_dim=DIM, learned=True)
    hybrid.use_store(store, dense_max_items=0, per_source=4)
    engine, directions, _ = planted_engine(hybrid=hybrid)
    stage, counted = hybrid.candidates, CountedStore(store)
    assert stage is not None
    queries_per_list = sum(s.retrieval_vector is not None for s in hybrid.sources.values())
    user, state = "u1-0", engine.users["u1-0"]
    engine.recommend(user, k=5, now=TS + 1e4)
    assert counted.queries == queries_per_list
    args = (hybrid.sources, hybrid.catalog, user, state.history, TS + 1e4)
    kept = stage.last_served(*args)
    assert counted.queries == queries_per_list  # no query: the list's candidates
    assert kept.tolist() == stage.retrieve(*args).tolist()
    # The click's step reads them; the list after it retrieves on the new history.
    engine.process("next-1", user, "t1-9", "click", None, TS + 1e4, k=5)
    assert counted.queries == 3 * queries_per_list
    engine.add_item("new", "New", directions[1])  # the catalog grew: retrieved again
    engine.learn("next-2", user, "t1-8", "click", None, TS + 1e4)
    assert counted.queries == 4 * queries_per_list


def test_kept_candidates_are_bounded_by_users_least_recently_ranked_first(store) -> None:
    hybrid = HybridRecommender(content_dim=DIM, learned=True)
    hybrid.use_store(store, dense_max_items=0, per_source=4)
    engine, _, _ = planted_engine(hybrid=hybrid)
    stage, counted = hybrid.candidates, CountedStore(store)
    assert stage is not None
    stage.remembered_users = 2
    for user in ("u0-0", "u1-0", "u2-0"):
        engine.recommend(user, k=5, now=TS + 1e4)
    before = counted.queries
    for user in ("u1-0", "u2-0"):
        stage.last_served(hybrid.sources, hybrid.catalog, user, engine.users[user].history, TS)
    assert counted.queries == before
    stage.last_served(hybrid.sources, hybrid.catalog, "u0-0", engine.users["u0-0"].history, TS)
    assert counted.queries > before
