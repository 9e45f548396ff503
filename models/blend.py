"""The hybrid ranker: blends candidate sources' scores, drops seen items, explains the rest.

Each source's scores are min-max normalised over the user's unseen items, so a source
that scores in cosines and one that scores in counts weigh what their weights say.
``score(item) = sum over sources of weight[source] * normalised[source][item]``; an
item's reasons are the sources that contributed to it, largest first.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np


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
    candidates[[i for i in seen if i < n_items]] = False
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
        kth = np.partition(total, len(total) - k)[len(total) - k]
        above = np.flatnonzero(total > kth)
        ties = np.flatnonzero(total == kth)[: k - len(above)]
        top = np.concatenate([above, ties])
        return top[np.lexsort((top, -total[top]))], total
