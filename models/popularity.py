"""Trending: each item's time-decayed engagement count, kept in log space.

A decayed count compared across items updated at different times would need every
item re-decayed to "now". Instead each item stores ``log(sum_i w_i * 2**(t_i / half_life))``
(times in epoch seconds): the ordering equals the decayed-count ordering at any common
time, an update touches one item only, and the log keeps it finite for any time span.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: The trending score of an item nobody engaged with yet (any engagement ranks above it).
NEVER_ENGAGED = 0.0


@dataclass
class ItemStats:
    """What the item's owner keeps: its trending score and how many engagements it had."""

    trending: float = NEVER_ENGAGED
    engagements: int = 0

    def payload(self) -> dict[str, Any]:
        """The fields published to the vector store, where candidate retrieval reads them."""
        return {"trending": self.trending, "engagements": self.engagements}


@dataclass(frozen=True)
class TrendingPopularity:
    """Updates an item's trending score with one engagement (negative signals are ignored).

    >>> trending, stats = TrendingPopularity(half_life_s=10.0), ItemStats()
    >>> trending.learn_one(stats, weight=1.0, ts=100.0)
    >>> first = stats.trending
    >>> trending.learn_one(stats, weight=1.0, ts=110.0)  # one half-life later: counts twice
    >>> round(math.exp(stats.trending - first), 3), stats.engagements
    (3.0, 2)
    """

    half_life_s: float = 3 * 24 * 3600.0

    def learn_one(self, stats: ItemStats, weight: float, ts: float) -> None:
        if weight <= 0:
            return
        contribution = math.log(weight) + ts * math.log(2) / self.half_life_s
        if stats.engagements == 0:
            stats.trending = contribution
        else:
            high, low = max(stats.trending, contribution), min(stats.trending, contribution)
            stats.trending = high + math.log1p(math.exp(low - high))
        stats.engagements += 1
