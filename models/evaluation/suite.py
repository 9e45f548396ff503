"""An evaluation composed from (data, sources, configurations): the project's standard one.

Every candidate source alone, the hybrid that blends them, and baselines (all-time
popularity, random, the plain item-item reference, and EASE on whole histories), all
on one replay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from models.blend import Blend
from models.evaluation.datasets import ReplayItem
from models.hybrid import HYBRID_WEIGHTS
from models.learned_blend import LearnedBlend
from models.sources import (
    Catalog,
    ContentSimilarity,
    DecayedPopularity,
    ItemItemCosine,
    OnlineBPR,
    Popularity,
    RandomScores,
    Source,
)
from models.sources.ease import EASE
from models.sources.item_ease import ItemSideEASE
from models.sources.modality_profiles import ModalityProfiles


def standard_sources(
    catalog: Catalog,
    items: Sequence[ReplayItem],
    content_vectors: np.ndarray | None,
    ease_l2: float = 500.0,
    ease_refit_every: int = 2_000,
    modalities: ModalityProfiles | None = None,
    embeddings: Sequence[Mapping[str, np.ndarray]] = (),
) -> dict[str, Source]:
    """The hybrid's sources plus the baselines', with the items loaded first; with
    ``modalities``, also content compared modality by modality, given each item's
    ``embeddings`` (in ``items`` order)."""
    content = ContentSimilarity(dim=content_vectors.shape[1] if content_vectors is not None else 1)
    for n, item in enumerate(items):
        index = catalog.add(item.item_id)
        if content_vectors is not None:
            content.set_vector(index, content_vectors[n])
        if modalities is not None:
            modalities.set_vectors(index, embeddings[n])
    item_item = ItemItemCosine()
    sources: dict[str, Source] = {
        "item-item": item_item,
        "trending": DecayedPopularity(),
        "cf": OnlineBPR(),
        "popularity": Popularity(),
        "random": RandomScores(),
        "item-item (plain)": ItemItemCosine(any_interaction=False, recency=1.0),
        # The worker's EASE (from item-item's counts), and EASE on whole histories.
        "ease": ItemSideEASE(item_item, l2=ease_l2, refit_every=ease_refit_every),
        EASE.name: EASE(l2=ease_l2, refit_every=ease_refit_every),
    }
    if content_vectors is not None:
        sources["content"] = content
    if modalities is not None:
        sources[modalities.name] = modalities
    return sources


def standard_configurations(sources: Sequence[str]) -> dict[str, Blend | LearnedBlend]:
    """The hybrid over the sources present (fixed weights, and learned from them), each
    source alone, and each baseline."""
    hybrid = {name: w for name, w in HYBRID_WEIGHTS.items() if name in sources}
    configurations: dict[str, Blend | LearnedBlend] = {
        "hybrid": Blend(hybrid),
        "hybrid (learned)": LearnedBlend(hybrid),
    }
    for extra in ("ease", "modalities"):  # one more source whose trust the blend learns
        if extra in sources:
            configurations[f"hybrid+{extra} (learned)"] = LearnedBlend({**hybrid, extra: 0.1})
    configurations.update({name: Blend({name: 1.0}) for name in sources})
    return configurations
