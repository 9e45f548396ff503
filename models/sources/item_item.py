"""Incremental item-item cosine similarity over users' recent histories.

Two items are similar when the same users engage with both: ``sim(i, j) =
C[i, j] / sqrt(n[i] * n[j])`` where ``C`` counts co-engagements (an item engaged while
the other is in the user's last 20 items) and ``n`` counts engagements. A user's
candidates are scored by the similarity to each of their last 20 items, the newest
weighted most (``recency ** k`` for the item k places back).

By default every interaction counts (a film rated 2 was still watched, and says what
comes next) and recency is 0.9. ``ItemItemCosine(any_interaction=False, recency=1.0)``
is the plain reference: positive engagements only, all 20 items alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.sources.base import ItemDelta, Source, UserHistory, grown


class ItemItemCosine(Source):
    """Item-item cosine over each user's last items (dense co-occurrence counts).

    >>> from models.sources.base import UserHistory
    >>> source = ItemItemCosine()
    >>> a, b = UserHistory(), UserHistory()
    >>> for user, history, items in [("a", a, [0, 1]), ("b", b, [0, 1, 2])]:
    ...     for item in items:
    ...         source.learn_one(user, item, 1.0, 0.0, history); history.add(item, 1.0)
    >>> new = UserHistory(); new.add(0, 1.0)
    >>> print(source.score("c", new, 3, now=0.0).round(2))  # item 1 goes with item 0
    [0.   1.   0.71]
    >>> source.because_of("c", new, 1)
    0

    Memory is ``4 * items**2`` bytes: fine to tens of thousands of items.
    """

    name = "item-item"

    def __init__(self, any_interaction: bool = True, recency: float = 0.9) -> None:
        self.co = np.zeros((0, 0), dtype=np.float32)
        self.counts = np.zeros(0, dtype=np.float32)
        # 1 / sqrt(counts), 0 where nothing was counted: kept up to date with the counts
        # rather than recomputed over the catalog for every list.
        self._inverse = np.zeros(0, dtype=np.float32)
        self.any_interaction = any_interaction
        self.recency = recency

    def _history(self, history: UserHistory) -> list[int]:
        return list(history.last) if self.any_interaction else history.recent_items

    def user_step(
        self, user: str, item: int, weight: float, ts: float, history: UserHistory
    ) -> list[ItemDelta]:
        # The engaged item's owner counts it and its co-engagements; each earlier item's
        # owner counts the engaged item as co-engaged with it (C stays symmetric).
        others = sorted(set(self._history(history)) - {item})
        return [(item, {"count": 1.0, "co": others}), *((o, {"co": [item]}) for o in others)]

    def learn_one(
        self, user: str, item: int, weight: float, ts: float, history: UserHistory
    ) -> None:
        # user_step + apply in one vectorised update (replay speed; a test holds them equal).
        others = sorted(set(self._history(history)) - {item})
        size = max([item, *others]) + 1
        self.co = grown(self.co, size, axes=(0, 1))
        self._count(item, size, 1.0)
        if others:
            self.co[item, others] += 1.0
            self.co[others, item] += 1.0

    def apply(self, item: int, change: dict[str, Any]) -> None:
        co = change.get("co", [])
        size = max([item, *co]) + 1
        self.co = grown(self.co, size, axes=(0, 1))
        self._count(item, size, change.get("count", 0.0))
        if co:
            self.co[item, co] += 1.0

    def _count(self, item: int, size: int, count: float) -> None:
        self.counts = grown(self.counts, size)
        self._inverse = grown(self._inverse, size)
        self.counts[item] += count
        if self.counts[item] > 0:
            self._inverse[item] = 1.0 / np.sqrt(self.counts[item])

    def _inverse_roots(self, n_items: int) -> np.ndarray:
        """1 / sqrt(engagements) of items 0..n_items-1 (read only)."""
        return grown(self._inverse, n_items)[:n_items]

    def score(self, user: str, history: UserHistory, n_items: int, now: float) -> np.ndarray:
        items = [i for i in self._history(history) if i < n_items]
        if not items:
            return np.zeros(n_items, dtype=np.float32)
        inverse = self._inverse_roots(n_items)
        # Newer history items count more: weight recency ** (how many items came after).
        weights = inverse[items] * self.recency ** np.arange(len(items) - 1, -1, -1)
        # sum_i w_i C[i, j] / sqrt(n_i n_j) without materialising the (items x catalog) matrix.
        rows = grown(self.co, n_items, axes=(0, 1))[items, :n_items]
        return (weights @ rows) * inverse

    def score_items(
        self, user: str, history: UserHistory, items: np.ndarray, now: float
    ) -> np.ndarray:
        recent = [i for i in self._history(history) if i < len(self.counts)]
        scores = np.zeros(len(items))
        known = items < len(self.counts)  # the others: no one engaged with them yet
        if recent and known.any():
            inverse = self._inverse_roots(len(self.counts))
            weights = inverse[recent] * self.recency ** np.arange(len(recent) - 1, -1, -1)
            rows = self.co[np.ix_(recent, items[known])]
            scores[known] = (weights @ rows) * inverse[items[known]]
        return scores

    def because_of(self, user: str, history: UserHistory, item: int) -> int | None:
        items = [i for i in self._history(history) if i < len(self.counts)]
        if not items or item >= len(self.counts):
            return None
        # sim(i, item) ordered over the user's items i: the item's own root is common.
        similarity = self.co[items, item] * self._inverse_roots(len(self.counts))[items]
        return items[int(np.argmax(similarity))] if similarity.max() > 0 else None
