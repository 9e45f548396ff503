"""Planted structure for the recommender's tests and evaluation: users with known tastes,
items whose content vectors point along their taste (``planted_engine``), and a planted
multimodal stream with new items arriving while users click (``planted_multimodal``)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from models.blend import Blend
from models.engine import InProcessRecommender
from models.evaluation.datasets import ReplayEvent
from models.evaluation.prequential import Evaluation, prequential
from models.hybrid import HYBRID_WEIGHTS, HybridRecommender
from models.learned_blend import LearnedBlend
from models.sources import (
    Catalog,
    ContentSimilarity,
    DecayedPopularity,
    ItemItemCosine,
    OnlineBPR,
)
from models.sources.ease import EASE

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


@dataclass(frozen=True)
class PlantedItem:
    """One item of the planted multimodal set: its upload time, taste, and one vector
    per modality it has (``text`` always; ``image``, ``audio`` on most items)."""

    item_id: str
    taste: int
    uploaded_at: float
    text_kind: str  # "rich", "weak" or "generic"
    vectors: dict[str, np.ndarray]


@dataclass(frozen=True)
class PlantedSet:
    items: list[PlantedItem]
    events: list[ReplayEvent]

    def content_vectors(self) -> np.ndarray:
        """Each item's fused content vector: its modality vectors averaged (as the
        ``average`` fusion does), unit length."""
        fused = []
        for item in self.items:
            mean = np.mean([v for v in item.vectors.values()], axis=0)
            fused.append(mean / np.linalg.norm(mean))
        return np.array(fused)


def planted_multimodal(
    seed: int = 0,
    tastes: int = 8,
    n_items: int = 600,
    new_items: int = 236,
    n_users: int = 200,
    n_events: int = 8_000,
    dim: int = 32,
    generic_share: float = 0.25,
    media_share: float = 0.85,
) -> PlantedSet:
    """A click stream over items whose taste is carried by text, image and audio.

    Each modality has its own taste directions (as separate encoders would), and every
    modality vector is a shared "any item" direction plus the taste direction plus
    noise. Text comes at three levels: rich (strong taste), weak, and generic titles
    (no taste at all: the same words for every taste). Images and audio are on
    ``media_share`` of the items. ``n_items - new_items`` items are there at the start;
    the rest are uploaded while users click. Each user likes one or two tastes and
    clicks items of those tastes (uploaded by then), favouring recent uploads and, a
    little, popular items, so new items are clicked for the first time during the
    stream: zero-click events.
    """
    rng = np.random.default_rng(seed)
    duration = float(n_events)  # one event per second
    common = {m: rng.normal(size=dim) for m in ("text", "image", "audio")}
    directions = {m: rng.normal(size=(tastes, dim)) for m in ("text", "image", "audio")}
    generic = rng.normal(size=dim)

    def modality(name: str, taste_id: int, strength: float) -> np.ndarray:
        vector = common[name] + strength * directions[name][taste_id]
        return vector + rng.normal(scale=1.0, size=dim)

    items = []
    for n in range(n_items):
        taste_id = int(rng.integers(0, tastes))
        uploaded = 0.0 if n < n_items - new_items else float(rng.uniform(0, 0.9 * duration))
        kind = str(rng.choice(["rich", "weak", "generic"], p=[0.45, 0.3, 0.25]))
        if rng.random() < generic_share:
            kind = "generic"
        text = (
            common["text"] + generic + rng.normal(scale=0.3, size=dim)
            if kind == "generic"
            else modality("text", taste_id, 1.5 if kind == "rich" else 0.6)
        )
        vectors = {"text": text}
        if rng.random() < media_share:
            vectors["image"] = modality("image", taste_id, 1.2)
        if rng.random() < media_share:
            vectors["audio"] = modality("audio", taste_id, 1.0)
        items.append(PlantedItem(f"p{n}", taste_id, uploaded, kind, vectors))
    items.sort(key=lambda item: item.uploaded_at)
    likes = [
        rng.choice(tastes, size=int(rng.integers(1, 3)), replace=False) for _ in range(n_users)
    ]
    activity = rng.pareto(1.5, size=n_users) + 0.2
    activity /= activity.sum()
    by_taste: dict[int, list[int]] = {t: [] for t in range(tastes)}
    for index, item in enumerate(items):
        by_taste[item.taste].append(index)
    clicks = np.zeros(len(items))
    seen: list[set[int]] = [set() for _ in range(n_users)]
    events = []
    for n in range(n_events):
        ts = float(n)
        user = int(rng.choice(n_users, p=activity))
        taste_id = int(rng.choice(likes[user]))
        pool = [i for i in by_taste[taste_id] if items[i].uploaded_at <= ts and i not in seen[user]]
        if not pool:
            continue
        ages = ts - np.array([items[i].uploaded_at for i in pool])
        appeal = np.exp(-ages / (0.15 * duration)) + 0.3 + 0.05 * np.log1p(clicks[pool])
        chosen = pool[int(rng.choice(len(pool), p=appeal / appeal.sum()))]
        seen[user].add(chosen)
        clicks[chosen] += 1
        events.append(ReplayEvent(f"pu{user}", items[chosen].item_id, "click", None, ts, f"p-{n}"))
    return PlantedSet(items, events)


def evaluate_planted(seed: int = 0) -> Evaluation:
    """The planted multimodal stream replayed prequentially: the hybrid with fixed and
    learned weights (with EASE as one more learned source), and references."""
    data = planted_multimodal(seed=seed)
    vectors = data.content_vectors()
    catalog = Catalog()
    content = ContentSimilarity(dim=vectors.shape[1])
    for item, vector in zip(data.items, vectors, strict=True):
        content.set_vector(catalog.add(item.item_id), vector)
    sources = {
        "item-item": ItemItemCosine(),
        "trending": DecayedPopularity(),
        "cf": OnlineBPR(),
        "content": content,
        "ease": EASE(refit_every=500),
    }
    configurations: dict[str, Blend | LearnedBlend] = {
        "hybrid": Blend(HYBRID_WEIGHTS),
        "hybrid (learned)": LearnedBlend(HYBRID_WEIGHTS),
        "hybrid+ease (learned)": LearnedBlend({**HYBRID_WEIGHTS, "ease": 0.1}),
        **{name: Blend({name: 1.0}) for name in ("item-item", "content", "ease")},
    }
    uploaded_at = {item.item_id: item.uploaded_at for item in data.items}
    return prequential(data.events, catalog, sources, configurations, uploaded_at=uploaded_at)


if __name__ == "__main__":  # python -m tests.planted [seed]
    import sys

    from models.evaluation.report import format_table

    print(format_table(evaluate_planted(int(sys.argv[1]) if len(sys.argv) > 1 else 0)))
