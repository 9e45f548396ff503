"""The hybrid recommender on a real embedded store with planted item vectors."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from models.engine import InProcessRecommender
from models.hybrid import CONTENT, HybridRecommender, UnknownItemError
from models.popularity import ItemStats
from models.vector_store import EdgeVectorStore, StoredItem

TS = 1.7e9


def planted(theme: int, n: int) -> np.ndarray:
    """Items of one theme point the same way, with a small per-item twist."""
    vector = np.zeros(8, dtype=np.float32)
    vector[theme] = 1.0
    vector[4 + n % 4] = 0.2
    return vector


@pytest.fixture
def engine(tmp_path) -> Iterator[InProcessRecommender]:
    store = EdgeVectorStore(tmp_path, {CONTENT: 8})
    store.start()
    store.upsert(
        [
            StoredItem(f"t{theme}-{n}", {CONTENT: planted(theme, n)}, ItemStats().payload())
            for theme in range(4)
            for n in range(5)
        ]
    )
    yield InProcessRecommender(HybridRecommender(store))
    store.stop()


def test_a_click_brings_the_same_theme_with_a_true_reason(engine) -> None:
    engine.learn_one("e1", "u", "t2-0", "click", None, TS)
    recs = engine.recommend("u", k=4)
    assert [r.item_id.split("-")[0] for r in recs] == ["t2"] * 4
    assert all(r.reasons[0].source == "content" and r.reasons[0].because_of == "t2-0" for r in recs)


def test_seen_items_never_come_back(engine) -> None:
    clicked = [f"t1-{n}" for n in range(5)] + ["t0-0", "t3-3"]
    for n, item in enumerate(clicked):
        engine.learn_one(f"e{n}", "u", item, "click", None, TS + n)
    assert not set(clicked) & {r.item_id for r in engine.recommend("u", k=20)}


def test_cold_user_gets_trending_and_explained_as_such(engine) -> None:
    for n in range(3):
        engine.learn_one(f"a{n}", f"fan{n}", "t3-1", "purchase", None, TS + n)
    engine.learn_one("b", "other", "t0-2", "view", None, TS)
    recs = engine.recommend("newcomer", k=3)
    assert [r.item_id for r in recs[:2]] == ["t3-1", "t0-2"]
    assert recs[0].reasons[0].source == "trending"


def test_skips_push_the_profile_away(engine) -> None:
    engine.learn_one("e1", "u", "t0-0", "click", None, TS)
    engine.learn_one("e2", "u", "t0-1", "dislike", None, TS + 1)
    engine.learn_one("e3", "u", "t0-2", "dislike", None, TS + 2)
    assert not any(r.item_id.startswith("t0") and r.score > 0 for r in engine.recommend("u", 3))


def test_duplicates_are_ignored_and_unknown_items_refused(engine) -> None:
    assert engine.learn_one("e1", "u", "t1-0", "click", None, TS)
    assert not engine.learn_one("e1", "u", "t1-0", "click", None, TS)
    assert engine.users["u"].events_applied == 1
    assert engine.items["t1-0"].engagements == 1
    with pytest.raises(UnknownItemError, match="upload the item"):
        engine.learn_one("e2", "u", "missing", "click", None, TS)
    assert engine.users["u"].events_applied == 1
