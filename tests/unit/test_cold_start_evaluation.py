"""The evaluation's cold-start measures (zero-click items, the cold threshold as an
option), the EASE baseline, and learned blends evaluated beside fixed ones."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from models.blend import Blend
from models.evaluation.datasets import ReplayEvent
from models.evaluation.prequential import prequential
from models.learned_blend import LearnedBlend
from models.sources import Catalog, Popularity
from models.sources.base import UserHistory
from models.sources.ease import EASE


def _events() -> list[ReplayEvent]:
    # Every user clicks a, then b, then a never-clicked item of their own.
    events = []
    for n in range(6):
        for step, item in enumerate(["a", "b", f"new-{n}"]):
            events.append(ReplayEvent(f"u{n}", item, "click", None, float(3 * n + step)))
    return events


def test_zero_click_events_are_the_first_engagement_of_an_item() -> None:
    evaluation = prequential(
        _events(), Catalog(), {"popularity": Popularity()}, {"pop": Blend({"popularity": 1.0})}
    )
    result = evaluation.results["pop"]
    assert result.zero_click is not None
    # a, b and the six new items: 8 first engagements, none predictable by popularity
    # except by ties (every unseen item scores 0 before anything is clicked).
    assert result.zero_click.events == 8
    assert result.cold_items.events == 5 + 5 + 6  # a and b: cold for their first 5 users
    row = evaluation.table()[0]
    assert "zero-click HitRate@10" in row


def test_the_cold_threshold_is_an_option() -> None:
    sources = {"popularity": Popularity()}
    strict = prequential(
        _events(), Catalog(), sources, {"pop": Blend({"popularity": 1.0})}, cold_threshold=1
    )
    assert strict.cold_threshold == 1
    assert strict.results["pop"].cold_items.events == strict.results["pop"].zero_click.events
    assert strict.results["pop"].cold_users.events == 6  # each user's first event


def test_a_learned_blend_is_evaluated_beside_the_fixed_one() -> None:
    configurations = {
        "fixed": Blend({"popularity": 1.0}),
        "learned": LearnedBlend({"popularity": 1.0}),
    }
    evaluation = prequential(_events(), Catalog(), {"popularity": Popularity()}, configurations)
    assert set(evaluation.results) == {"fixed", "learned"}
    # Before it learns anything the learned blend ranks as the fixed: the first event agrees.
    assert evaluation.results["learned"].overall.events == len(_events())
    assert configurations["learned"].counts[:2].tolist() == [6, 6]  # a and b, counted


def test_ease_recommends_what_co_occurs_across_all_users() -> None:
    ease = EASE(l2=1.0, refit_every=1)
    histories = {u: UserHistory() for u in "abcd"}
    for user, items in [("a", [0, 1]), ("b", [0, 1]), ("c", [0, 1, 2]), ("d", [3])]:
        for item in items:
            ease.learn_one(user, item, 1.0, 0.0, histories[user])
            histories[user].add(item, 1.0)
    new = UserHistory()
    new.add(0, 1.0)
    scores = ease.score("new", new, 4, 0.0)
    assert scores[1] > scores[2] > scores[3]


def test_ease_is_disabled_above_max_items_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    ease = EASE(refit_every=1, max_items=3)
    history = UserHistory()
    with caplog.at_level(logging.WARNING):
        for item in range(5):  # 5 users x 5 items: both sides above 3
            ease.learn_one(f"u{item}", item, 1.0, 0.0, history)
            history.add(item, 1.0)
    assert ease.disabled
    assert "EASE disabled" in caplog.text
    assert not np.any(ease.score("u", history, 5, 0.0))
