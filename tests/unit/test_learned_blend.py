"""The learned blend: starts as the fixed blend, learns from clicks, replicates by changes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from models.blend import Blend, normalise_all
from models.hybrid import HYBRID_WEIGHTS, HybridRecommender
from models.learned_blend import LearnedBlend
from models.user_state import UserState


def _scores(rng: np.random.Generator, n_items: int) -> dict[str, np.ndarray]:
    return {name: rng.random(n_items) for name in HYBRID_WEIGHTS}


def test_before_any_click_it_ranks_as_the_fixed_blend_it_starts_from() -> None:
    """With the collaborative sources trusted in full (no evidence discount)."""
    rng = np.random.default_rng(0)
    fixed = Blend(HYBRID_WEIGHTS)
    learned = LearnedBlend(HYBRID_WEIGHTS, collaborative_half_events=0)
    for _ in range(20):
        scores = _scores(rng, 50)
        candidates = rng.random(50) > 0.2
        normalised = normalise_all(scores, candidates)
        rows = np.stack([normalised[name] for name in learned.sources])
        context = learned.context(np.arange(50), user_events=7, catalog_size=50, now=0.0)
        expected, _ = fixed.top(normalised, candidates, 10)
        got = learned.top(learned.totals(rows, candidates, context), 10)
        assert got.tolist() == expected.tolist()


def _zero_click_stream(blend: LearnedBlend, events: int) -> tuple[np.ndarray, np.ndarray]:
    """Users who click the never-clicked item content vouches for, over the popular ones."""
    rng = np.random.default_rng(1)
    n_items = 40
    for item in range(20):  # items 0-19 have been clicked a lot
        for _ in range(12):
            blend.apply_item(item, blend.engaged(0.0))
    rows = np.zeros((len(blend.sources), n_items))
    for n in range(events):
        rows = np.zeros((len(blend.sources), n_items))
        rows[blend.sources.index("item-item"), :20] = rng.random(20)
        rows[blend.sources.index("trending"), :20] = rng.random(20)
        rows[blend.sources.index("content")] = rng.random(n_items) * 0.5
        clicked = 20 + int(rng.integers(0, 20))  # a zero-click item...
        rows[blend.sources.index("content"), clicked] = 1.0  # ...that content vouches for
        candidates = np.ones(n_items, dtype=bool)
        context = blend.context(np.arange(n_items), 10, n_items, 0.0)
        blend.apply(blend.step(rows, candidates, context, clicked, k=10, seed=n))
    return rows, blend.weights


def test_zero_click_items_learn_to_compete_on_their_content() -> None:
    blend = LearnedBlend(HYBRID_WEIGHTS, learning_rate=0.05)
    n_items = 40
    rows, _ = _zero_click_stream(blend, 0)
    rows[blend.sources.index("item-item"), :20] = 1.0
    rows[blend.sources.index("content"), 30] = 1.0
    candidates = np.ones(n_items, dtype=bool)
    context = blend.context(np.arange(n_items), 10, n_items, 0.0)
    assert 30 not in blend.top(blend.totals(rows, candidates, context), 10)  # the prior
    _zero_click_stream(blend, 300)
    assert blend.top(blend.totals(rows, candidates, context), 10)[0] == 30
    content = blend.weights_by_source()["content"]
    assert content["count"][0] > 0.5  # content is trusted on zero-click items


def test_steps_add_up_in_any_order() -> None:
    one, other = LearnedBlend(HYBRID_WEIGHTS), LearnedBlend(HYBRID_WEIGHTS)
    rng = np.random.default_rng(2)
    steps = []
    for n in range(30):
        scores = _scores(rng, 30)
        candidates = np.ones(30, dtype=bool)
        normalised = normalise_all(scores, candidates)
        rows = np.stack([normalised[name] for name in one.sources])
        context = one.context(np.arange(30), n, 30, float(n))
        steps.append(one.step(rows, candidates, context, int(rng.integers(0, 30)), k=10, seed=n))
    for step in steps:
        one.apply(step)
    for step in reversed(steps):
        other.apply(step)
    np.testing.assert_allclose(one.weights, other.weights, atol=1e-12)


def _catalog(hybrid: HybridRecommender) -> None:
    rng = np.random.default_rng(3)
    for n in range(30):
        hybrid.add_item(f"i{n}", f"item {n}", rng.normal(size=4))


def test_a_replica_that_applies_the_changes_ranks_as_the_learner() -> None:
    """The worker's split: the user side's changes carry the blend's step and counts;
    a replica that only applies them (in reverse order) holds the same blend."""
    learner = HybridRecommender(content_dim=4, learned=True)
    replica = HybridRecommender(content_dim=4, learned=True)
    _catalog(learner), _catalog(replica)
    rng = np.random.default_rng(4)
    users: dict[str, UserState] = {}
    sent = []
    for n in range(120):
        user = f"u{int(rng.integers(0, 6))}"
        state = users.setdefault(user, UserState())
        item = f"i{int(rng.integers(0, 30))}"
        changes = learner.learn_one(user, state, f"e{n}", item, 1.0, float(n))
        assert changes is not None
        learner.apply(changes)
        sent.append(changes)
    assert any("blend" in by_source for c in sent for by_source in c.values())
    for changes in reversed(sent):
        replica.apply(changes)
    assert learner.learned is not None and replica.learned is not None
    np.testing.assert_allclose(learner.learned.weights, replica.learned.weights, atol=1e-9)
    assert not np.allclose(learner.learned.weights, learner.learned.prior)
    np.testing.assert_array_equal(learner.learned.counts[:30], replica.learned.counts[:30])
    for user, state in users.items():
        got = replica.recommend(user, state, k=10, now=200.0)
        expected = learner.recommend(user, state, k=10, now=200.0)
        assert [r.item_id for r in got] == [r.item_id for r in expected]


def _learned_log(n_events: int) -> tuple[HybridRecommender, list[dict]]:
    """A learner with the default sources, and the changes it sent, in order."""
    learner = HybridRecommender(content_dim=4, learned=True)
    _catalog(learner)
    rng = np.random.default_rng(5)
    users: dict[str, UserState] = {}
    sent = []
    for n in range(n_events):
        user = f"u{int(rng.integers(0, 6))}"
        changes = learner.learn_one(
            user,
            users.setdefault(user, UserState()),
            f"e{n}",
            f"i{int(rng.integers(0, 30))}",
            1.0,
            float(n),
        )
        assert changes is not None
        learner.apply(changes)
        sent.append(changes)
    return learner, sent


@pytest.mark.parametrize(
    "weights",
    [
        {"item-item": 1.0, "cf": 0.2, "content": 0.1},  # trending dropped
        {"content": 0.1, "trending": 0.3, "item-item": 1.0, "cf": 0.2, "ease": 0.1},  # added
    ],
    ids=["a source dropped", "a source added, the order changed"],
)
def test_a_worker_blending_other_sources_keeps_every_change_of_the_log(weights) -> None:
    """A change of configuration rebuilds the item side from the log: each step's rows
    go to the sources of the same names, and nothing else of a record is lost (a step
    that did not fit once made every record that carried one be skipped whole)."""
    learner, sent = _learned_log(120)
    other = HybridRecommender(weights, content_dim=4, learned=True)
    _catalog(other)
    for changes in sent:
        other.check_changes(changes, {})
        other.apply(changes)
    assert learner.learned is not None and other.learned is not None
    np.testing.assert_array_equal(learner.learned.counts, other.learned.counts)
    for row, name in enumerate(other.learned.sources):
        expected = (
            learner.learned.weights[learner.learned.sources.index(name)]
            if name in learner.learned.sources
            else other.learned.prior[row]
        )
        np.testing.assert_allclose(other.learned.weights[row], expected, atol=1e-12)
    for name in set(learner.sources) & set(other.sources):
        assert (
            learner.sources[name].item_arrays().keys() == other.sources[name].item_arrays().keys()
        )
        for key, array in learner.sources[name].item_arrays().items():
            np.testing.assert_array_equal(array, other.sources[name].item_arrays()[key], key)
    assert other.learned.unplaced_steps == 0


def test_a_step_that_names_no_sources_is_applied_where_it_fits_and_counted_where_not() -> None:
    """Steps written before they named their sources: a worker of the same sources adds
    them; one of other sources cannot place them and counts them, keeping the rest of
    each record."""
    learner, sent = _learned_log(60)
    unnamed = [
        {
            item: {
                s: {k: v for k, v in c.items() if not (s == "blend" and k == "sources")}
                for s, c in by_source.items()
            }
            for item, by_source in changes.items()
        }
        for changes in sent
    ]
    steps = sum("step" in by_source.get("blend", {}) for c in unnamed for by_source in c.values())
    assert steps > 0
    same = HybridRecommender(content_dim=4, learned=True)
    fewer = HybridRecommender({"item-item": 1.0, "cf": 0.2}, content_dim=4, learned=True)
    for hybrid in (same, fewer):
        _catalog(hybrid)
        for changes in unnamed:
            hybrid.check_changes(changes, {})
            hybrid.apply(changes)
    assert learner.learned is not None and same.learned is not None and fewer.learned is not None
    np.testing.assert_allclose(same.learned.weights, learner.learned.weights, atol=1e-12)
    assert same.learned.unplaced_steps == 0
    assert fewer.learned.unplaced_steps == steps
    np.testing.assert_array_equal(fewer.learned.weights, fewer.learned.prior)
    np.testing.assert_array_equal(
        fewer.sources["item-item"].counts, learner.sources["item-item"].counts
    )


def test_a_list_never_pads_with_items_no_source_vouches_for() -> None:
    hybrid = HybridRecommender(weights={"item-item": 1.0, "trending": 0.3}, learned=True)
    for n in range(30):
        hybrid.add_item(f"i{n}", f"item {n}", None)
    ann, ben = UserState(), UserState()
    for n, (user, state, item) in enumerate(
        [("ann", ann, "i5"), ("ann", ann, "i9"), ("ben", ben, "i5"), ("ben", ben, "i20")]
    ):
        changes = hybrid.learn_one(user, state, f"e{n}", item, 1.0, float(n))
        assert changes is not None
        hybrid.apply(changes)
    top = hybrid.recommend("ann", ann, k=10, now=10.0)
    vouched = [r.item_id for r in top if r.reasons[0].source != "catalog"]
    assert vouched[:1] == ["i20"]  # co-engaged with i5, and trending
    assert set(vouched) == {"i20"}  # the only unseen item any source scores above 0


def test_on_the_planted_multimodal_set_zero_click_items_reach_users() -> None:
    """New items, nobody's click yet, their taste in their content: the fixed blend
    cannot put them on a list, the learned one learns to trust content on them, more so
    with its negatives drawn by engagement count than uniformly."""
    from models.evaluation.prequential import prequential
    from models.sources import (
        Catalog,
        ContentSimilarity,
        DecayedPopularity,
        ItemItemCosine,
        OnlineBPR,
    )
    from tests.planted import planted_multimodal

    data = planted_multimodal(seed=1, n_items=200, new_items=80, n_users=60, n_events=2_500)
    vectors = data.content_vectors()
    catalog, content = Catalog(), ContentSimilarity(dim=vectors.shape[1])
    for item, vector in zip(data.items, vectors, strict=True):
        content.set_vector(catalog.add(item.item_id), vector)
    sources = {
        "item-item": ItemItemCosine(),
        "trending": DecayedPopularity(),
        "cf": OnlineBPR(),
        "content": content,
    }
    configurations = {
        "fixed": Blend(HYBRID_WEIGHTS),
        "learned": LearnedBlend(HYBRID_WEIGHTS),
        "uniform": LearnedBlend(HYBRID_WEIGHTS, draw_by_count=False),
    }
    uploaded_at = {item.item_id: item.uploaded_at for item in data.items}
    evaluation = prequential(data.events, catalog, sources, configurations, uploaded_at=uploaded_at)
    fixed, learned = evaluation.results["fixed"], evaluation.results["learned"]
    uniform = evaluation.results["uniform"]
    assert fixed.zero_click and learned.zero_click and uniform.zero_click
    assert learned.zero_click.events > 100
    assert learned.zero_click.hit_rate >= 0.10 > fixed.zero_click.hit_rate
    assert learned.overall.hit_rate >= 0.98 * fixed.overall.hit_rate
    # 0.475 against 0.36 when written, overall 0.619 against 0.608.
    assert learned.zero_click.hit_rate >= uniform.zero_click.hit_rate + 0.05
    assert learned.overall.hit_rate >= 0.98 * uniform.overall.hit_rate


def test_a_new_item_reaches_the_users_it_fits_without_their_click() -> None:
    from tests.planted import DIM, TS, planted_engine, taste

    engine, directions, rng = planted_engine(
        hybrid=HybridRecommender(content_dim=DIM, learned=True)
    )
    engine.add_item("t0-new", "new", directions[0] + rng.normal(scale=0.3, size=DIM))
    pushed = engine.push_new_item("t0-new", limit=8, k=10, now=TS + 1_000)
    assert len(pushed) == 8  # bounded
    assert all(user.startswith("u0-") for user in pushed)  # the taste's users
    for recommendations in pushed.values():
        new = [r for r in recommendations if r.item_id == "t0-new"]
        assert new and new[0].reasons[0].source == "content"
        assert taste(new[0].reasons[0].because_of or "t1-0") == 0


def test_at_scale_it_learns_and_ranks_on_the_retrieved_candidates(tmp_path) -> None:
    """Above ``dense_max_items`` the blend's step and list read the candidate stage's
    items (a real embedded Qdrant), not the whole catalog; the lists match the dense
    ranking's on a catalog the candidates cover whole."""
    from models.hybrid import CF, CONTENT
    from models.vector_store import EdgeVectorStore
    from tests.planted import DIM, TS, planted_engine

    dense, _, _ = planted_engine(hybrid=HybridRecommender(content_dim=DIM, learned=True))
    staged = HybridRecommender(content_dim=DIM, learned=True)
    with EdgeVectorStore(tmp_path, {CONTENT: DIM, CF: staged.cf_vector_size}, {CF: "dot"}) as store:
        staged.use_store(store, dense_max_items=0, per_source=100)
        engine, _, _ = planted_engine(hybrid=staged)
        assert staged.learned is not None and dense.hybrid.learned is not None
        # Dense ranking keeps content scores updated in float32 steps; candidates are
        # scored in float64 at once (models/sources/content.py).
        np.testing.assert_allclose(staged.learned.weights, dense.hybrid.learned.weights, rtol=1e-5)
        for user in ("u0-0", "u1-3", "u2-7"):
            got = engine.recommend(user, k=5, now=TS + 1_000)
            expected = dense.recommend(user, k=5, now=TS + 1_000)
            assert [r.item_id for r in got] == [r.item_id for r in expected]


def test_the_weights_looked_up_by_bucket_are_the_sum_of_the_item_s_columns() -> None:
    """``effective`` reads a (count, age) table; it equals summing each item's five
    columns and clipping at 0, item by item."""
    from models.learned_blend import _OFFSETS

    rng = np.random.default_rng(4)
    blend = LearnedBlend(HYBRID_WEIGHTS)
    blend.weights = rng.normal(size=blend.weights.shape)
    for item in range(30):
        for _ in range(int(rng.integers(0, 40))):
            blend.apply_item(item, blend.engaged(float(rng.uniform(0, 90 * 86_400))))
    context = blend.context(np.arange(40), user_events=12, catalog_size=40, now=100 * 86_400.0)
    w = blend.weights
    for item in range(40):
        columns = [
            _OFFSETS["base"],
            _OFFSETS["user"] + context.user,
            _OFFSETS["count"] + context.count[item],
            _OFFSETS["age"] + context.age[item],
            _OFFSETS["catalog"] + context.catalog,
        ]
        expected = np.maximum(w[:, columns].sum(axis=1), 0.0) * blend.trust()
        assert np.allclose(blend.effective(context)[:, item], expected, rtol=1e-12, atol=0)
        assert np.allclose(blend.effective(context, np.array([item]))[:, 0], expected)


def test_context_buckets_are_the_edges_definition() -> None:
    """``searchsorted(edges, v, side="right")`` per item: counts past the last edge, ages
    exactly on an edge, items never engaged and items past the blend's arrays."""
    from models.learned_blend import ITEM_AGE_EDGES, ITEM_COUNT_EDGES

    rng = np.random.default_rng(5)
    blend, now = LearnedBlend(HYBRID_WEIGHTS), 40 * 86_400.0
    at = [now - edge for edge in ITEM_AGE_EDGES] + list(rng.uniform(0, now, 20))
    for item, first in enumerate(at):
        for _ in range(int(rng.choice([1, 2, 3, 9, 10, 99, 100, 250]))):
            blend.apply_item(item, blend.engaged(first))
    items = np.arange(len(at) + 5)  # the last 5: never engaged
    context = blend.context(items, user_events=4, catalog_size=len(items), now=now)
    counts = np.array([blend.counts[i] if i < len(at) else 0 for i in items])
    ages = np.array([now - at[i] if i < len(at) else 0.0 for i in items])
    expected_age = np.where(counts > 0, 1 + np.searchsorted(ITEM_AGE_EDGES, ages, "right"), 0)
    assert context.count.tolist() == np.searchsorted(ITEM_COUNT_EDGES, counts, "right").tolist()
    assert context.age.tolist() == expected_age.tolist()


def test_the_drawn_negatives_are_the_smallest_keys_of_all_candidates() -> None:
    """``_draw`` keys only the hashes past a cut: the same items as keying every
    candidate (``-log(u) / (1 + count bucket)``, smallest first), whatever the
    candidates, keys and buckets, drawn by count or uniformly."""
    from models.learned_blend import _mix, _mix_one

    rng = np.random.default_rng(6)
    for trial in range(400):
        blend = LearnedBlend(HYBRID_WEIGHTS, samples=30, draw_by_count=trial % 4 != 0)
        n = int(rng.integers(1, 3_000))
        candidates = rng.random(n) < rng.random()
        count = rng.integers(0, 6, n) if trial % 3 else np.full(n, int(rng.integers(0, 6)))
        clicked, seed = int(rng.integers(0, n)), int(rng.integers(0, 2**40))
        keys = rng.permutation(n).astype(np.uint64) if trial % 2 else None
        hashes = _mix(
            (np.arange(n, dtype=np.uint64) if keys is None else keys) ^ np.uint64(_mix_one(seed))
        )
        u = ((hashes >> np.uint64(11)).astype(np.float64) + 1.0) / 2.0**53
        weight = 1.0 + count if blend.draw_by_count else np.ones(n)
        eligible = candidates.copy()
        eligible[clicked] = False
        indexes = np.flatnonzero(eligible)
        expected = indexes[np.sort(np.argsort(-np.log(u[indexes]) / weight[indexes])[:30])]
        assert blend._draw(candidates, clicked, seed, keys, count).tolist() == expected.tolist()


def test_negatives_are_drawn_in_proportion_to_one_plus_the_count_bucket() -> None:
    """Over many events, an item in count bucket 5 is drawn about six times as often as
    a zero-click one (and as often when drawing uniformly)."""
    blend = LearnedBlend(HYBRID_WEIGHTS, samples=1)
    uniform = LearnedBlend(HYBRID_WEIGHTS, samples=1, draw_by_count=False)
    count = np.array([0, 5] * 50)
    candidates = np.ones(len(count), dtype=bool)
    by_count, alike = np.zeros(2), np.zeros(2)
    for seed in range(6_000):
        by_count[count[blend._draw(candidates, 0, seed, None, count)] // 5] += 1
        alike[count[uniform._draw(candidates, 0, seed, None, count)] // 5] += 1
    assert 5.0 < by_count[1] / by_count[0] < 7.2
    assert 0.85 < alike[1] / alike[0] < 1.2


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["engage", "rank", "rank", "checkpoint", "restore"]),
            st.integers(0, 12),  # an item, or the catalog's size
            # Times on and beside the age edges, anywhere, and not a time at all.
            st.sampled_from([0.0, 1.0, 3_599.0, 3_600.0, 3_600.5, 86_400.0, 86_400.5])
            | st.floats(0.0, 40 * 86_400.0)
            | st.just(float("nan")),
        ),
        max_size=60,
    )
)
# An age reaching an edge between two rankings, with nothing engaged in between, and
# falling back under it (a worker ranks at event times and at wall-clock times).
@example(
    steps=[
        ("engage", 0, 0.0),
        ("rank", 2, 1.0),
        ("rank", 2, 3_600.0),
        ("rank", 2, 3_599.5),
    ]
)
def test_the_catalog_s_buckets_kept_between_rankings_are_those_computed_afresh(
    steps: list[tuple[str, int, float]],
) -> None:
    """``catalog_context`` re-buckets only the items engaged since or near an age edge:
    after any engagements, rankings at earlier, later or no times, grown catalogs and
    restored checkpoints, the same buckets as ``context`` over the whole catalog."""
    blend = LearnedBlend(HYBRID_WEIGHTS)
    saved = blend.item_arrays()
    for action, number, at in steps:
        if action == "engage":
            blend.apply_item(number, blend.engaged(0.0 if math.isnan(at) else at))
        elif action == "checkpoint":
            saved = blend.item_arrays()
        elif action == "restore":
            blend.load_item_arrays(saved)
        else:
            kept = blend.catalog_context(user_events=3, catalog_size=number, now=at)
            fresh = blend.context(np.arange(number), user_events=3, catalog_size=number, now=at)
            assert kept.count.tolist() == fresh.count.tolist()
            assert kept.age.tolist() == fresh.age.tolist()
            assert (kept.user, kept.catalog) == (fresh.user, fresh.catalog)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_items=st.integers(2, 400),
    engaged=st.integers(0, 3_000),
    user_events=st.integers(0, 200),
)
def test_a_step_without_the_rankings_totals_is_the_step_with_them(
    seed: int, n_items: int, engaged: int, user_events: int
) -> None:
    """The worker's step sums the pairs' totals alone, the replay's reads the totals it
    ranked with: the same step to the bit, whatever the weights, counts and candidates."""
    rng = np.random.default_rng(seed)
    blend = LearnedBlend(HYBRID_WEIGHTS)
    blend.weights += rng.normal(scale=0.5, size=blend.weights.shape)  # some clipped at 0
    for _ in range(engaged % 200):
        blend.apply_item(int(rng.integers(0, n_items)), blend.engaged(float(rng.integers(0, 9e6))))
    scores = _scores(rng, n_items)
    candidates = rng.random(n_items) > 0.3
    clicked = int(rng.integers(0, n_items))
    candidates[clicked] = True
    rows = np.stack([normalise_all(scores, candidates)[name] for name in blend.sources])
    context = blend.context(np.arange(n_items), user_events, n_items, 1e7)
    total = blend.totals(rows, candidates, context)
    with_totals = blend.step(rows, candidates, context, clicked, 10, seed, total=total)
    assert blend.step(rows, candidates, context, clicked, 10, seed) == with_totals
