"""Ranking metrics for one target item per event, accumulated online.

>>> metrics = RankingMetrics(k=10)
>>> metrics.add(0); metrics.add(2); metrics.add(None); metrics.add(None)
>>> metrics.hit_rate, round(metrics.ndcg, 4), round(metrics.mrr, 4)
(0.5, 0.375, 0.3333)
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def ndcg_at(rank: int | None) -> float:
    """DCG of one relevant item at 0-based ``rank`` (ideal DCG is 1): 1 / log2(rank + 2)."""
    return 0.0 if rank is None else 1.0 / math.log2(rank + 2)


def reciprocal_rank(rank: int | None) -> float:
    return 0.0 if rank is None else 1.0 / (rank + 1)


@dataclass
class RankingMetrics:
    """HitRate@K, NDCG@K and MRR@K over events; ``add`` takes the target's 0-based rank
    in the top-K list, or None when it is not in it."""

    k: int
    events: int = 0
    hits: int = 0
    ndcg_sum: float = 0.0
    rr_sum: float = 0.0

    def add(self, rank: int | None) -> None:
        if rank is not None and not 0 <= rank < self.k:
            raise ValueError(f"rank {rank} is outside the top-{self.k} list")
        self.events += 1
        self.hits += rank is not None
        self.ndcg_sum += ndcg_at(rank)
        self.rr_sum += reciprocal_rank(rank)

    @property
    def hit_rate(self) -> float:
        return self.hits / self.events if self.events else float("nan")

    @property
    def ndcg(self) -> float:
        return self.ndcg_sum / self.events if self.events else float("nan")

    @property
    def mrr(self) -> float:
        return self.rr_sum / self.events if self.events else float("nan")

    def as_dict(self) -> dict[str, float]:
        return {
            "events": self.events,
            f"hit_rate@{self.k}": self.hit_rate,
            f"ndcg@{self.k}": self.ndcg,
            f"mrr@{self.k}": self.mrr,
        }
