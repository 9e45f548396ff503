"""The prequential harness: metrics by hand, time order, test-before-train, reports."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from models.blend import Blend
from models.evaluation.datasets import ReplayEvent
from models.evaluation.metrics import RankingMetrics, ndcg_at, reciprocal_rank
from models.evaluation.prequential import OutOfOrderError, prequential
from models.evaluation.report import format_table, write_report
from models.sources import Catalog, Popularity, Source, UserHistory


def test_metrics_by_hand() -> None:
    assert ndcg_at(0) == 1.0 and ndcg_at(None) == 0.0
    assert ndcg_at(2) == pytest.approx(0.5)  # 1 / log2(4)
    assert reciprocal_rank(3) == 0.25
    metrics = RankingMetrics(k=5)
    for rank in (0, None, 1, None):
        metrics.add(rank)
    assert metrics.hit_rate == 0.5
    assert metrics.ndcg == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert metrics.mrr == pytest.approx((1 + 0.5) / 4)
    with pytest.raises(ValueError, match="outside the top-5"):
        metrics.add(5)


def events_of(pairs: list[tuple[str, str]]) -> list[ReplayEvent]:
    return [ReplayEvent(u, i, "click", None, float(n), f"e{n}") for n, (u, i) in enumerate(pairs)]


class CallLog(Source):
    """Remembers the order in which the harness calls it."""

    name = "log"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def learn_one(
        self, user: str, item: int, weight: float, ts: float, history: UserHistory
    ) -> None:
        self.calls.append(("learn", user))

    def score(self, user: str, history: UserHistory, n_items: int, now: float) -> np.ndarray:
        self.calls.append(("score", user))
        return np.zeros(n_items)


def test_every_event_is_scored_before_anything_learns_it() -> None:
    log = CallLog()
    events = events_of([("a", "x"), ("b", "y"), ("a", "z")])
    prequential(events, Catalog(), {"log": log}, {"log": Blend({"log": 1.0})}, k=2)
    assert log.calls == [(step, u) for u in ("a", "b", "a") for step in ("score", "learn")]


def test_events_out_of_time_order_are_refused() -> None:
    events = events_of([("a", "x"), ("b", "y")])[::-1]
    with pytest.raises(OutOfOrderError, match="time order"):
        prequential(events, Catalog(), {"p": Popularity()}, {"p": Blend({"p": 1.0})})


class LastLearned(Source):
    """Puts the item it learned most recently (from anyone) first."""

    name = "last"

    def __init__(self) -> None:
        self.last: int | None = None

    def learn_one(
        self, user: str, item: int, weight: float, ts: float, history: UserHistory
    ) -> None:
        self.last = item

    def score(self, user: str, history: UserHistory, n_items: int, now: float) -> np.ndarray:
        scores = np.zeros(n_items)
        if self.last is not None:
            scores[self.last] = 1.0
        return scores


def test_peeking_at_the_event_would_inflate_the_score_the_harness_reports() -> None:
    """Each item is taken by two users in a row. Ranking before learning, "what was just
    taken" predicts exactly the second of each pair: HitRate@1 about 0.5. Learning first (the
    leak this harness rules out) would hit every event."""
    pairs = [(f"u{n}", f"item-{n // 2}") for n in range(200)]
    honest = (
        prequential(
            events_of(pairs),
            Catalog(),
            {"last": LastLearned()},
            {"last": Blend({"last": 1.0})},
            k=1,
        )
        .results["last"]
        .overall.hit_rate
    )
    # Every second event, plus the very first (its item is the catalog's only one).
    assert honest == 101 / 200

    leaky_hits, catalog, source = 0, Catalog(), LastLearned()
    for user, item in pairs:
        index = catalog.add(item)
        source.learn_one(user, index, 1.0, 0.0, UserHistory())  # learns first: the leak
        leaky_hits += int(np.argmax(source.score(user, UserHistory(), len(catalog), 0.0)) == index)
    assert leaky_hits == len(pairs)


def test_reports_are_written_and_well_formed(tmp_path) -> None:
    pairs = [(f"u{n % 7}", f"item-{(n * 3) % 11}") for n in range(120)]
    evaluation = prequential(
        events_of(pairs),
        Catalog(),
        {"p": Popularity()},
        {"popularity": Blend({"p": 1.0})},
        k=3,
        windows=4,
    )
    table = format_table(evaluation)
    assert table.splitlines()[0].startswith("configuration") and "popularity" in table
    paths = write_report(evaluation, "synthetic", tmp_path)
    report = json.loads(paths["json"].read_text())
    assert report["events"] == 120 and report["k"] == 3
    assert len(report["windows"]["hit_rate"]["popularity"]) == 4
    assert report["table"][0]["configuration"] == "popularity"
    assert paths["plot"].read_bytes().startswith(b"\x89PNG")
    assert "| configuration |" in paths["markdown"].read_text()
