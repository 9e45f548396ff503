"""The hybrid ranker: blends candidate sources' scores, drops seen items, explains the rest.

Each source's scores are min-max normalised over the user's unseen items, so a source
that scores in cosines and one that scores in counts weigh what their weights say.
``score(item) = sum over sources of weight[source] * normalised[source][item]``; an
item's reasons are the sources that contributed to it, largest first.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.topk import kth_largest


@dataclass(frozen=True)
class Ranked:
    """One recommended item index with its blended score and per-source contributions."""

    item: int
    score: float
    contributions: dict[str, float]


def normalised(scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Scores mapped to [0, 1] over the candidate items (all 0 when they do not differ).

    >>> normalised(np.array([2.0, 4.0, 3.0]), np.array([True, True, True])).tolist()
    [0.0, 1.0, 0.5]
    """
    values = scores[candidates]
    if values.size == 0:
        return np.zeros_like(scores, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if not high > low:
        return np.zeros_like(scores, dtype=np.float64)
    return (scores - low) / (high - low)


def unseen(n_items: int, seen: Collection[int]) -> np.ndarray:
    """A mask of the items not in ``seen``."""
    candidates = np.ones(n_items, dtype=bool)
    # fromiter, not a list comprehension: histories of thousands of items (per event).
    items = np.fromiter(seen, dtype=np.int64, count=len(seen))
    candidates[items[items < n_items]] = False
    return candidates


def normalise_all(
    scores: Mapping[str, np.ndarray], candidates: np.ndarray
) -> dict[str, np.ndarray]:
    return {
        name: normalised(np.asarray(values, dtype=np.float64), candidates)
        for name, values in scores.items()
    }


class Blend:
    """Weighted sum of normalised source scores; one source alone when given one weight.

    >>> blend = Blend({"a": 1.0, "b": 0.5})
    >>> scores = {"a": np.array([0.0, 1.0, 2.0]), "b": np.array([9.0, 0.0, 0.0])}
    >>> [(r.item, r.score) for r in blend.rank(scores, seen={2}, k=2)]
    [(1, 1.0), (0, 0.5)]
    """

    def __init__(self, weights: Mapping[str, float]) -> None:
        if not weights or any(w < 0 for w in weights.values()):
            raise ValueError("blend weights must be non-negative, at least one source")
        self.weights = dict(weights)

    @property
    def sources(self) -> list[str]:
        return list(self.weights)

    def rank(self, scores: Mapping[str, np.ndarray], seen: Collection[int], k: int) -> list[Ranked]:
        n_items = len(next(iter(scores.values())))
        candidates = unseen(n_items, seen)
        return self.rank_normalised(normalise_all(scores, candidates), candidates, k)

    def rank_normalised(
        self, normalised_scores: Mapping[str, np.ndarray], candidates: np.ndarray, k: int
    ) -> list[Ranked]:
        """``rank`` on scores already normalised over ``candidates`` (shared by blends)."""
        top, total = self.top(normalised_scores, candidates, k)
        return [
            Ranked(
                int(i),
                float(total[i]),
                {name: w * float(normalised_scores[name][i]) for name, w in self.weights.items()},
            )
            for i in top
        ]

    def top(
        self, normalised_scores: Mapping[str, np.ndarray], candidates: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The indexes of the ``k`` best candidates, best first, and every item's blended score.

        Ties (a cold user's all-equal scores) go to the lower item index, so lists are
        reproducible whatever the engine.
        """
        total = np.zeros(len(candidates))
        for name, weight in self.weights.items():
            if weight > 0:
                total += weight * normalised_scores[name]
        total[~candidates] = -np.inf
        k = min(k, int(candidates.sum()))
        if k <= 0:
            return np.zeros(0, dtype=int), total
        kth = kth_largest(total[None, :], k)[0]
        above = np.flatnonzero(total > kth)
        ties = np.flatnonzero(total == kth)[: k - len(above)]
        top = np.concatenate([above, ties])
        return top[np.lexsort((top, -total[top]))], total


class BlendSet:
    """Several blends of the same sources, ranked at once: what an evaluation asks per
    event of every configuration (the target's rank in its top K, and which items its top
    K holds), without building each list. Totals are summed exactly as ``Blend.top``
    sums them and ties go to the lower index, so the ranks are ``Blend.top``'s
    (``tests/unit/test_blend.py`` holds them equal).

    >>> blends = BlendSet({"a": Blend({"x": 1.0}), "ab": Blend({"x": 1.0, "y": 1.0})}, ["x", "y"])
    >>> scores = {"x": np.array([3.0, 2.0, 1.0, 0.0]), "y": np.array([0.0, 0.0, 3.0, 3.0])}
    >>> candidates = np.array([True, True, True, False])
    >>> totals = blends.totals(blends.normalise(scores, candidates), candidates)
    >>> blends.ranks(totals, item=2, k=2), blends.ranks(totals, item=3, k=2)
    ([None, 1], [None, None])
    >>> recommended = np.zeros((2, 4), dtype=bool)
    >>> kth = blends.mark_tops(totals, 2, recommended); recommended.astype(int).tolist()
    [[1, 1, 0, 0], [1, 0, 1, 0]]
    >>> blends.ranks(totals, item=2, k=2, kth=kth)
    [None, 1]
    """

    def __init__(self, blends: Mapping[str, Blend], sources: Sequence[str]) -> None:
        self.names = list(blends)
        self.sources = list(sources)
        self._terms = [
            [(self.sources.index(name), w) for name, w in blend.weights.items() if w > 0]
            for blend in blends.values()
        ]

    def normalise(self, scores: Mapping[str, np.ndarray], candidates: np.ndarray) -> np.ndarray:
        """``normalised`` for every source: one row per source, in ``sources`` order."""
        stacked = np.stack([np.asarray(scores[name], dtype=np.float64) for name in self.sources])
        if not candidates.any():
            return np.zeros_like(stacked)
        # The others (the user's seen items: few) set to the reduction's identity in this
        # copy and put back: numpy's reductions with ``where=`` take no vectorised path,
        # and ``np.where`` over the catalog copies it twice more.
        others = np.flatnonzero(~candidates)
        held = stacked[:, others]
        stacked[:, others] = np.inf
        low = stacked.min(axis=1)
        stacked[:, others] = -np.inf
        high = stacked.max(axis=1)
        stacked[:, others] = held
        varied = high > low
        stacked -= np.where(varied, low, 0.0)[:, None]
        stacked /= np.where(varied, high - low, 1.0)[:, None]
        stacked[~varied] = 0.0
        return stacked

    def totals(self, normalised_rows: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Every blend's score of every item (one row per blend); -inf off ``candidates``."""
        totals = np.zeros((len(self._terms), normalised_rows.shape[1]))
        for row, terms in zip(totals, self._terms, strict=True):
            for source, weight in terms:
                row += weight * normalised_rows[source]
        totals[:, ~candidates] = -np.inf
        return totals

    def ranks(
        self, totals: np.ndarray, item: int, k: int, kth: np.ndarray | None = None
    ) -> list[int | None]:
        """``item``'s 0-based rank in each blend's top ``k``, or None when not in it.
        ``kth``: what ``mark_tops`` returned for these totals; a blend whose ``item``
        scores under it has ``k`` items above, so only the others are counted."""
        target = totals[:, item]
        counted = np.isfinite(target) if kth is None else np.isfinite(target) & (target >= kth)
        ranks: list[int | None] = [None] * len(target)
        for row in np.flatnonzero(counted):
            scores, value = totals[row], target[row]
            rank = int(np.count_nonzero(scores > value) + np.count_nonzero(scores[:item] == value))
            ranks[row] = rank if rank < k else None
        return ranks

    def mark_tops(self, totals: np.ndarray, k: int, recommended: np.ndarray) -> np.ndarray:
        """Set ``recommended[blend, item]`` for every item in each blend's top ``k``, and
        return each blend's ``k``-th best total (-inf for all when nothing is a candidate)."""
        n_items = totals.shape[1]
        k = min(k, int(np.isfinite(totals[0]).sum()))
        if k <= 0:
            return np.full(len(totals), -np.inf)
        kth = kth_largest(totals, k)
        top = totals >= kth[:, None]  # the top k, and every item tied with the k-th
        for row in np.flatnonzero(np.count_nonzero(top, axis=1) > k):
            # More ties than room: those above, then the ties of lowest index.
            above = totals[row] > kth[row]
            ties = np.flatnonzero(top[row] & ~above)
            top[row, ties[k - np.count_nonzero(above) :]] = False
        recommended[:, :n_items] |= top
        return kth
