"""What keeps the evaluation's per-event work from growing with history: the synthetic
data it is measured on, and the incremental parts, held to what they replace."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from models.blend import unseen
from models.evaluation.datasets import load_movielens_csv
from models.evaluation.prequential import SeenIndexes
from models.evaluation.synthetic import Shape, generate, write
from models.sources import OnlineBPR, UserHistory


def test_synthetic_ratings_have_the_asked_shape(tmp_path) -> None:
    shape = Shape(events=3_000, items=800, users=40, seed=3)
    data = generate(shape)
    assert len(data.ratings) == 3_000
    pairs = [(user, item) for user, item, _, _ in data.ratings]
    assert len(set(pairs)) == len(pairs), "a user rates an item at most once"
    times = [ts for *_, ts in data.ratings]
    assert times == sorted(times)
    per_user = Counter(user for user, *_ in data.ratings)
    assert len(per_user) == 40 and min(per_user.values()) >= shape.min_per_user
    popularity = sorted(Counter(item for _, item, _, _ in data.ratings).values(), reverse=True)
    top_share = sum(popularity[: len(popularity) // 100 or 1]) / len(data.ratings)
    assert top_share > 0.05, "the most popular 1% of items take a large share"
    loaded = load_movielens_csv(write(data, tmp_path))
    assert len(loaded.events) == 3_000 and len(loaded.items) == 800


def test_bpr_negative_order_kept_incrementally_equals_a_full_sort() -> None:
    """New items appended as they come equal the canonical order sorted from scratch,
    also when a replica learns an item's earlier first engagement late."""
    rng = np.random.default_rng(0)
    bpr, histories = OnlineBPR(factors=4), {}
    for ts in range(600):
        user, item = f"u{rng.integers(20)}", int(rng.integers(0, 300))
        history = histories.setdefault(user, UserHistory())
        bpr.learn_one(user, item, 1.0, float(ts), history)
        history.add(item, 1.0)
        if ts == 400:  # an earlier first engagement arrives late: a full sort follows
            bpr._count_positive(item, 1.0, (-1.0, 0))
        if ts % 50 == 0:
            order, cumulative = bpr._drawable()
            bpr._order = None
            rebuilt, rebuilt_cumulative = bpr._drawable()
            assert order == rebuilt
            assert np.array_equal(cumulative, rebuilt_cumulative)


@settings(max_examples=40, deadline=None)
@given(
    log=st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 30)), max_size=80),
    max_seen=st.integers(2, 40),
    n_items=st.integers(0, 35),
)
def test_the_replays_seen_indexes_give_the_histories_mask(
    log: list[tuple[str, int]], max_seen: int, n_items: int
) -> None:
    """Repeats, histories at their bound, items past the catalog: the mask is ``unseen``'s."""
    seen, histories = SeenIndexes(), {u: UserHistory(max_seen=max_seen) for u in "ab"}
    for user, item in log:
        seen.add(user, item, histories[user])
        histories[user].add(item, 1.0)
        for name, history in histories.items():
            expected = unseen(n_items, history.seen)
            assert seen.unseen(name, history, n_items).tolist() == expected.tolist()
