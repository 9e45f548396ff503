"""Planted structure for the recommender's tests: users with known tastes, items whose
content vectors point along their taste."""

from __future__ import annotations

import random

import numpy as np

from models.engine import InProcessRecommender
from models.hybrid import HybridRecommender

TS = 1.7e9
TASTES, PER_TASTE, DIM = 3, 12, 16


def taste(item_id: str) -> int:
    return int(item_id.split("-")[0][1:])


def planted_engine(
    weights: dict[str, float] | None = None, seed: int = 0, hybrid: HybridRecommender | None = None
) -> tuple[InProcessRecommender, np.ndarray, np.random.Generator]:
    """Items ``t{taste}-{n}`` whose vectors point along their taste; users ``u{taste}-{n}``
    who engage only with items of their taste, in a shuffled time order."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(TASTES, DIM))
    if hybrid is None:  # (an empty recommender is falsy: it has no items)
        hybrid = HybridRecommender(weights, content_dim=DIM)
    engine = InProcessRecommender(hybrid)
    for t in range(TASTES):
        for n in range(PER_TASTE):
            vector = directions[t] + rng.normal(scale=0.3, size=DIM)
            engine.add_item(f"t{t}-{n}", f"Taste {t} item {n}", vector)
    log = [
        (f"u{t}-{u}", f"t{t}-{int(n)}")
        for t in range(TASTES)
        for u in range(10)
        for n in rng.choice(PER_TASTE, size=6, replace=False)
    ]
    random.Random(seed).shuffle(log)
    for n, (user, item) in enumerate(log):
        engine.process(f"e{n}", user, item, "click", None, TS + n, k=5)
    return engine, directions, rng
