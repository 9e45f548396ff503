"""Popularity baselines: all-time counts, time-decayed counts, and random scores."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from models.sources.base import ItemDelta, Source, UserHistory, grown


class Popularity(Source):
    """How many interactions each item has had, all time.

    >>> from models.sources.base import UserHistory
    >>> source, history = Popularity(), UserHistory()
    >>> for item in [2, 2, 0]:
    ...     source.learn_one("u", item, 1.0, 0.0, history)
    >>> source.score("u", history, 3, now=0.0).tolist()
    [1.0, 0.0, 2.0]
    """

    name = "popularity"

    def __init__(self) -> None:
        self.counts = np.zeros(0, dtype=np.float64)

    def user_step(
        self, user: str, item: int, weight: float, ts: float, history: UserHistory
    ) -> list[ItemDelta]:
        return [(item, {"count": 1.0})]

    def apply(self, item: int, change: dict[str, Any]) -> None:
        self.counts = grown(self.counts, item + 1)
        self.counts[item] += change["count"]

    def score(self, user: str, history: UserHistory, n_items: int, now: float) -> np.ndarray:
        return grown(self.counts, n_items)[:n_items]

    def item_arrays(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts.copy()}

    def load_item_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.counts = np.asarray(arrays["counts"], dtype=np.float64).copy()


class DecayedPopularity(Source):
    """Interactions counted with weight ``2 ** (-age / half_life_s)``: what is trending now.

    Kept in log space, so no item ever needs re-decaying and an event's change does not
    depend on any other item: ``log_mass[i] = log(sum over events of 2 ** (ts / half_life))``
    (epoch seconds; float64 keeps ~1e-13 relative precision at today's ~1e3 magnitudes).

    >>> from models.sources.base import UserHistory
    >>> source, h = DecayedPopularity(half_life_s=10.0), UserHistory()
    >>> source.learn_one("u", 0, 1.0, 0.0, h); source.learn_one("u", 1, 1.0, 10.0, h)
    >>> source.score("u", h, 2, now=10.0).round(3).tolist()
    [0.5, 1.0]
    """

    name = "trending"

    def __init__(self, half_life_s: float = 7 * 86_400.0) -> None:
        self.rate = math.log(2) / half_life_s
        self.log_mass = np.full(0, -np.inf)

    #: Scores are ``exp(log_mass - rate * now)``: an event time more than about
    #: ``EXP_HEADROOM / rate`` before the newest mass overflows a float64 (13.8 years at
    #: the default one-week half-life).
    EXP_HEADROOM = 500.0

    def earliest_usable_ts(self) -> float | None:
        """The earliest time whose scores stay finite given the masses so far (None while
        nothing is trending)."""
        finite = self.log_mass[np.isfinite(self.log_mass)]
        if finite.size == 0 or self.rate <= 0:
            return None
        return float((finite.max() - self.EXP_HEADROOM) / self.rate)

    def user_step(
        self, user: str, item: int, weight: float, ts: float, history: UserHistory
    ) -> list[ItemDelta]:
        return [(item, {"at": ts})]

    def apply(self, item: int, change: dict[str, Any]) -> None:
        if len(self.log_mass) <= item:
            size = max(item + 1, 2 * len(self.log_mass), 16)
            self.log_mass = np.concatenate(
                [self.log_mass, np.full(size - len(self.log_mass), -np.inf)]
            )
        self.log_mass[item] = np.logaddexp(self.log_mass[item], self.rate * change["at"])

    def score(self, user: str, history: UserHistory, n_items: int, now: float) -> np.ndarray:
        masses = np.full(n_items, -np.inf)
        known = min(n_items, len(self.log_mass))
        masses[:known] = self.log_mass[:known]
        return np.exp(masses - self.rate * now)

    def score_items(
        self, user: str, history: UserHistory, items: np.ndarray, now: float
    ) -> np.ndarray:
        masses = np.full(len(items), -np.inf)
        known = items < len(self.log_mass)
        masses[known] = self.log_mass[items[known]]
        return np.exp(masses - self.rate * now)

    def item_arrays(self) -> dict[str, np.ndarray]:
        return {"log_mass": self.log_mass.copy()}

    def load_item_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.log_mass = np.asarray(arrays["log_mass"], dtype=np.float64).copy()


class RandomScores(Source):
    """Uniform random scores: the floor every recommender must clear."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def score(self, user: str, history: UserHistory, n_items: int, now: float) -> np.ndarray:
        return self.rng.random(n_items)
