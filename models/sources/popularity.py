"""Popularity baselines: all-time counts, time-decayed counts, and random scores."""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from itertools import islice
from typing import Any

import numpy as np

from models.sources.base import ItemDelta, Source, UserHistory, grown, held_up_to
from models.sources.changes import LATEST_MOMENT, moment, number, only

#: ``exp`` of anything smaller is 0.0 in float64: a score of 0, not a pick.
_LOG_SMALLEST = math.log(np.finfo(np.float64).smallest_subnormal)


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

    def check_change(self, change: Mapping[str, Any]) -> None:
        only(change, {"count"})
        number(change, "count")

    def score(self, user: str, history: UserHistory, n_items: int, now: float) -> np.ndarray:
        return grown(self.counts, n_items)[:n_items]

    def item_arrays(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts.copy()}

    def load_item_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.counts = np.asarray(arrays["counts"], dtype=np.float64).copy()

    def items_held(self) -> int:
        return held_up_to(self.counts)


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

    def __init__(self, half_life_s: float = 7 * 86_400.0, leaders: int = 1024) -> None:
        self.rate = math.log(2) / half_life_s
        self.log_mass = np.full(0, -np.inf)
        #: How many of the most trending items ``best_items`` keeps ranked.
        self.leaders = leaders
        # The ``leaders`` items of largest mass, best first (ties: lower index first), kept
        # exact as masses grow, so picking a user's trending candidates reads about
        # ``limit`` items instead of sorting the catalog (None: rank afresh when asked).
        self._leaders: list[int] | None = None

    #: Scores are ``exp(log_mass - rate * now)``: an event time more than about
    #: ``EXP_HEADROOM / rate`` before the newest mass overflows a float64 (13.8 years at
    #: the default one-week half-life).
    EXP_HEADROOM = 500.0

    def earliest_usable_ts(self) -> float | None:
        """The earliest time whose scores stay finite given the masses so far (None while
        nothing is trending)."""
        leaders = self._ranked_leaders()  # the first has the largest finite mass
        if not leaders or self.rate <= 0:
            return None
        return float((self.log_mass[leaders[0]] - self.EXP_HEADROOM) / self.rate)

    def user_step(
        self, user: str, item: int, weight: float, ts: float, history: UserHistory
    ) -> list[ItemDelta]:
        return [(item, {"at": ts})]

    def check_change(self, change: Mapping[str, Any]) -> None:
        only(change, {"at"})
        moment(change, "at")

    def apply(self, item: int, change: dict[str, Any]) -> None:
        if len(self.log_mass) <= item:
            size = max(item + 1, 2 * len(self.log_mass), 16)
            self.log_mass = np.concatenate(
                [self.log_mass, np.full(size - len(self.log_mass), -np.inf)]
            )
        self.log_mass[item] = np.logaddexp(self.log_mass[item], self.rate * change["at"])
        leaders = self._leaders
        if leaders is None:
            return
        # A mass only grows: the item can only move up, or in past the last leader.
        if item in leaders:
            leaders.remove(item)
        elif len(leaders) >= self.leaders:
            if self._key(item) >= self._key(leaders[-1]):
                return
            leaders.pop()
        bisect.insort(leaders, item, key=self._key)

    def _key(self, item: int) -> tuple[float, int]:
        return (-float(self.log_mass[item]), item)

    def _ranked_leaders(self) -> list[int]:
        if self._leaders is None:
            finite = np.flatnonzero(np.isfinite(self.log_mass))
            order = np.lexsort((finite, -self.log_mass[finite]))[: self.leaders]
            self._leaders = finite[order].tolist()
        return self._leaders

    def best_items(
        self, user: str, history: UserHistory, limit: int, n_items: int, now: float
    ) -> list[int]:
        """The leaders the user has not seen; the whole catalog only when a user has seen
        nearly all of them.

        >>> source, h = DecayedPopularity(leaders=2), UserHistory()
        >>> for item, ts in [(0, 0.0), (1, 1.0), (2, 2.0), (2, 3.0)]:
        ...     source.learn_one("u", item, 1.0, ts, h)
        >>> h.add(2, 1.0)
        >>> source.best_items("u", h, 1, 3, now=3.0)   # the leaders are 2 and 1; 2 is seen
        [1]
        >>> sorted(source.best_items("u", h, 2, 3, now=3.0))   # past the leaders: all items
        [0, 1]
        """
        leaders, seen = self._ranked_leaders(), history.seen
        picks = list(islice((i for i in leaders if i < n_items and i not in seen), limit))
        if len(picks) < limit and len(leaders) >= self.leaders:
            return super().best_items(user, history, limit, n_items, now)
        return [i for i in picks if self.log_mass[i] - self.rate * now > _LOG_SMALLEST]

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
        log_mass = np.asarray(arrays["log_mass"], dtype=np.float64)
        # Changes are no later than LATEST_MOMENT: a mass past e**64 events then (1e27)
        # was made by no log, and a finite 1e6 moved every click to the year 29,600.
        if log_mass.ndim != 1 or (log_mass > self.rate * LATEST_MOMENT + 64.0).any():
            raise ValueError("trending masses past what events up to 2100 can add")
        self.log_mass = log_mass.copy()
        self._leaders = None

    def items_held(self) -> int:
        return held_up_to(self.log_mass > -np.inf)


class RandomScores(Source):
    """Uniform random scores: the floor every recommender must clear."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def score(self, user: str, history: UserHistory, n_items: int, now: float) -> np.ndarray:
        return self.rng.random(n_items)
