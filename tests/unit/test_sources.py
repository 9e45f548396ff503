"""Candidate sources and the hybrid on planted structure: users with known tastes."""

from __future__ import annotations

import json
import uuid

import numpy as np

from models.blend import Blend
from models.sources import (
    Catalog,
    ContentSimilarity,
    DecayedPopularity,
    ItemItemCosine,
    OnlineBPR,
    Popularity,
    UserHistory,
)

TASTES = 2
ITEMS_PER_TASTE = 20


def planted_log(seed: int = 0, users_per_taste: int = 30, events_per_user: int = 12):
    """Users of taste t engage only with items of taste t (items 0-19: taste 0, 20-39: 1)."""
    rng = np.random.default_rng(seed)
    log = []
    for t in range(TASTES):
        for u in range(users_per_taste):
            items = rng.choice(ITEMS_PER_TASTE, size=events_per_user, replace=False)
            log += [(f"t{t}-u{u}", int(t * ITEMS_PER_TASTE + i)) for i in items]
    order = rng.permutation(len(log))
    return [log[i] for i in order]


def train(sources, log, weight=lambda ts: 1.0) -> dict[str, UserHistory]:
    histories: dict[str, UserHistory] = {}
    for ts, (user, item) in enumerate(log):
        history = histories.setdefault(user, UserHistory())
        for source in sources:
            source.learn_one(user, item, weight(ts), float(ts), history)
        history.add(item, weight(ts))
    return histories


def taste_of(item: int) -> int:
    return item // ITEMS_PER_TASTE


def in_taste_share(ranked: list[int], taste: int) -> float:
    return sum(taste_of(i) == taste for i in ranked) / len(ranked)


def test_cf_learns_the_planted_tastes() -> None:
    bpr = OnlineBPR(factors=8, seed=1)
    histories = train([bpr], planted_log() * 3)
    blend = Blend({"cf": 1.0})
    for user, history in histories.items():
        taste = int(user[1])
        scores = {"cf": bpr.score(user, history, TASTES * ITEMS_PER_TASTE, 0.0)}
        ranked = [r.item for r in blend.rank(scores, history.seen, k=5)]
        assert in_taste_share(ranked, taste) >= 0.8, (user, ranked)


def test_item_item_similarity_stays_within_a_taste_and_explains_itself() -> None:
    item_item = ItemItemCosine()
    histories = train([item_item], planted_log())
    user, history = "t1-u0", histories["t1-u0"]
    scores = item_item.score(user, history, TASTES * ITEMS_PER_TASTE, 0.0)
    ranked = [
        r.item for r in Blend({"item-item": 1.0}).rank({"item-item": scores}, history.seen, 8)
    ]
    assert in_taste_share(ranked, 1) == 1.0
    reason = item_item.because_of(user, history, ranked[0])
    assert reason in history.last and taste_of(reason) == 1
    assert item_item.co.get(reason, ranked[0]) > 0, "the named item really was co-engaged"


def test_a_new_item_is_recommended_by_content_before_anyone_clicks_it() -> None:
    rng = np.random.default_rng(2)
    directions = rng.normal(size=(TASTES, 16))
    catalog = Catalog()
    content = ContentSimilarity(dim=16)
    for item in range(TASTES * ITEMS_PER_TASTE):
        catalog.add(str(item))
        content.set_vector(item, directions[taste_of(item)] + rng.normal(scale=0.3, size=16))
    sources = {
        "item-item": ItemItemCosine(),
        "trending": DecayedPopularity(),
        "cf": OnlineBPR(factors=8),
        "content": content,
    }
    histories = train(sources.values(), planted_log())
    # A brand-new taste-0 item: no interactions, only content.
    new = catalog.add("new")
    content.set_vector(new, directions[0] + rng.normal(scale=0.3, size=16))
    hybrid = Blend({"item-item": 1.0, "trending": 0.3, "cf": 0.2, "content": 0.6})
    n = len(catalog)
    recommended_to = {0: 0, 1: 0}
    for user, history in histories.items():
        scores = {name: s.score(user, history, n, 0.0) for name, s in sources.items()}
        ranked = hybrid.rank(scores, history.seen, k=10)
        if new in [r.item for r in ranked]:
            recommended_to[int(user[1])] += 1
            entry = next(r for r in ranked if r.item == new)
            assert entry.contributions["content"] > 0 and entry.contributions["item-item"] == 0
    assert recommended_to[0] >= 20 and recommended_to[1] == 0, recommended_to


def test_seen_items_never_come_back_and_cold_users_get_popular_items() -> None:
    popularity, item_item = Popularity(), ItemItemCosine()
    histories = train([popularity, item_item], planted_log())
    blend = Blend({"item-item": 1.0, "popularity": 0.3})
    n = TASTES * ITEMS_PER_TASTE
    for user, history in histories.items():
        scores = {
            "item-item": item_item.score(user, history, n, 0.0),
            "popularity": popularity.score(user, history, n, 0.0),
        }
        ranked = [r.item for r in blend.rank(scores, history.seen, k=n)]
        assert not set(ranked) & history.seen
        assert len(ranked) == n - len(history.seen)
    newcomer = UserHistory()
    cold = blend.rank(
        {
            "item-item": item_item.score("new", newcomer, n, 0.0),
            "popularity": popularity.score("new", newcomer, n, 0.0),
        },
        newcomer.seen,
        k=3,
    )
    most_popular = list(np.argsort(-popularity.score("new", newcomer, n, 0.0), kind="stable")[:3])
    assert [r.item for r in cold] == most_popular


def test_learning_at_once_equals_the_user_step_then_the_item_changes() -> None:
    """The replay's one-call learn_one and the worker's split path leave the same state."""
    log = planted_log(seed=4)

    def weight(ts: int) -> float:
        return -1.0 if ts % 7 == 3 else 1.0 + ts % 3  # skips, clicks, stronger signals

    at_once, split = (
        (ItemItemCosine(), OnlineBPR(factors=4)),
        (ItemItemCosine(), OnlineBPR(factors=4)),
    )
    histories = train(at_once, log, weight)
    split_histories: dict[str, UserHistory] = {}
    for ts, (user, item) in enumerate(log):
        history = split_histories.setdefault(user, UserHistory())
        for source in split:
            for touched, change in source.user_step(user, item, weight(ts), float(ts), history):
                source.apply(touched, change)
        history.add(item, weight(ts))
    n = len(at_once[0].counts)
    assert np.array_equal(at_once[0].co.to_dense(n), split[0].co.to_dense(n))
    assert np.array_equal(at_once[0].counts, split[0].counts)
    # To the last bit: the evaluation measures exactly what the worker computes.
    assert np.array_equal(at_once[1].items, split[1].items)
    assert np.array_equal(at_once[1].bias, split[1].bias)
    for user, history in histories.items():
        assert np.array_equal(history.own["cf"], split_histories[user].own["cf"])


def test_a_returning_users_cf_factor_has_decayed_by_the_half_life() -> None:
    bpr, history = OnlineBPR(factors=4, half_life_s=10.0), UserHistory()
    for ts, item in enumerate([0, 1, 2]):
        bpr.learn_one("u", item, 1.0, float(ts), history)
        history.add(item, 1.0)
    learned = history.own["cf"].copy()
    assert np.array_equal(bpr.user_factor("u", history, 2.0), learned)
    assert np.allclose(bpr.user_factor("u", history, 12.0), learned / 2)
    # Ranking at a later time reads the decayed factor; the next step starts from it.
    scores = bpr.score("u", history, 3, now=22.0)
    assert np.allclose(scores, bpr.items[:3] @ (learned / 4) + bpr.bias[:3])
    without_decay = OnlineBPR(factors=4, half_life_s=None)
    assert np.array_equal(without_decay.user_factor("u", history, 1e9), learned)


def test_a_users_stored_history_stays_under_a_brokers_message_limit() -> None:
    """A bot that clicks through 30,000 items: the latest 10,000 stay seen, and the user's
    stored history stays far below the 1 MB a default broker accepts per message."""
    ids = [str(uuid.UUID(int=n)) for n in range(30_000)]
    history = UserHistory()
    for item in range(len(ids)):
        history.add(item, 1.0)
    history.add(29_000, 1.0)  # seen again: the most recent now
    assert history.seen == set(range(20_000, 30_000))
    stored = json.dumps(history.to_dict(ids)).encode()
    assert len(stored) < 500_000
    restored = UserHistory.from_dict(json.loads(stored), {i: n for n, i in enumerate(ids)}.get)
    restored.add(30_000 - 1, 1.0)
    restored.add(0, 1.0)  # a new item pushes out the oldest, 20,000, not the re-seen 29,000
    assert 20_000 not in restored.seen and 29_000 in restored.seen and 0 in restored.seen


def test_cf_scores_a_catalog_past_its_learned_items_as_the_padded_product() -> None:
    """Items nobody engaged with score 0 (bias and factors 0): the learned rows alone are
    multiplied, with the same numbers as the factors padded to the catalog."""
    cf = OnlineBPR(seed=3)
    histories = train([cf], planted_log(seed=4, users_per_taste=5))
    history = histories["t0-u1"]
    now = float(len(histories) * 12)
    p = cf._factor_now("t0-u1", history, now)
    assert p is not None
    for n_items in (10, len(cf.bias), 500):
        padded = np.zeros((n_items, cf.factors))
        bias = np.zeros(n_items)
        known = min(n_items, len(cf.bias))
        padded[:known], bias[:known] = cf.items[:known], cf.bias[:known]
        assert cf.score("t0-u1", history, n_items, now).tolist() == (padded @ p + bias).tolist()


def test_a_profile_reloaded_from_the_users_table_reuses_its_cached_scores() -> None:
    """A worker reloads each user's profile from JSON at every event: an equal profile is
    the cached one, so a click costs no product over the whole catalog, and the scores
    are those of multiplying afresh (to float32's precision: the kept scores move by
    rows of the float32 vectors, as in a replay)."""
    rng = np.random.default_rng(2)
    content, history = ContentSimilarity(dim=8), UserHistory()
    for item in range(300):
        content.set_vector(item, rng.normal(size=8))
    products = []
    multiply = content._profile_scores
    content._profile_scores = lambda profile: products.append(1) or multiply(profile)  # type: ignore[method-assign]
    for ts, item in enumerate([3, 17, 42, 8]):
        stored = json.loads(json.dumps(content.dump_user(history.own["content"]))) if ts else None
        if stored is not None:  # the next event starts from the stored state
            history.own["content"] = content.load_user(stored)
        scores = content.score("u", history, 300, float(ts)) if ts else None
        content.learn_one("u", item, 1.0, float(ts), history)
        history.add(item, 1.0)
        if scores is not None:
            profile = history.own["content"][0]
            fresh = multiply(profile) / np.linalg.norm(profile)
            got = content.score("u", history, 300, float(ts))
            np.testing.assert_allclose(got, fresh, rtol=1e-5, atol=1e-6)
    assert len(products) == 1, "only the first scoring multiplies the catalog"


def test_content_explains_a_list_at_once_as_item_by_item() -> None:
    """Each listed item's reason is the user's recent item whose vector is closest to it,
    None for an item without a vector; whatever else is on the list, even between
    recent items with the same vector."""
    rng = np.random.default_rng(7)
    content = ContentSimilarity(dim=16)
    for item in range(40):
        content.set_vector(item, rng.normal(size=16))
    history = UserHistory()
    for item in (3, 17, 25, 8):
        history.add(item, 1.0)
    mine = history.recent_items
    listed = [0, 5, 17, 39, 12, 40]
    expected = [
        mine[int(np.argmax(content.vectors[mine].astype(np.float64) @ content.vectors[item]))]
        for item in listed[:-1]
    ]
    assert content.because_of_each("u", history, listed) == [*expected, None]
    assert [content.because_of("u", history, item) for item in listed] == [*expected, None]

    twins = ContentSimilarity(dim=384)  # 60 items sharing 10 vectors: ties everywhere
    base = rng.normal(size=(10, 384))
    for item in range(60):
        twins.set_vector(item, base[item % 10])
    history = UserHistory()
    for item in rng.permutation(60)[:20].tolist():
        history.add(item, 1.0)
    for _ in range(50):
        listed = rng.permutation(60)[:30].tolist()
        one_by_one = [twins.because_of("u", history, item) for item in listed]
        assert twins.because_of_each("u", history, listed) == one_by_one
