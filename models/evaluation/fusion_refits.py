"""A learned fusion refitted during a replay, as a worker refits it.

A worker with ``fusion = "learned"`` collects the pairs of items each user engaged with
one after the other and refits the fusion every ``fusion_refresh_pairs`` new pairs on
the latest ``fusion_fit_max_pairs`` for ``fusion_fit_epochs`` passes, then re-fuses the
catalog (``streams/fusion_refit.py``). ``FusionRefits`` does the same between the events
of a replay (``prequential``'s ``after_event``) and gives the content source the
re-fused vectors, so the evaluation scores what a worker with a learned fusion would
rank. A worker also refits on a timer; a replay's event time runs far faster than a
worker's clock, so here only the pairs count.

>>> from encoders.fusion import ModalityProjection
>>> from encoders.learned_fusion import LearnedFusion
>>> from models.evaluation.datasets import ReplayEvent
>>> from models.sources import Catalog, ContentSimilarity
>>> rng = np.random.default_rng(0)
>>> catalog, content = Catalog(), ContentSimilarity(dim=4)
>>> embeddings = {}
>>> for n in range(6):
...     embeddings[f"i{n}"] = {"text": rng.normal(size=4), "image": rng.normal(size=8)}
...     index = catalog.add(f"i{n}")
>>> fusion = LearnedFusion(ModalityProjection({"text": 4, "image": 8}, common_dim=4))
>>> refits = FusionRefits(fusion, embeddings, catalog, content, refresh_pairs=2)
>>> for n, item in enumerate(["i0", "i1", "i2"]):
...     refits(ReplayEvent("u", item, "click", None, float(n)))
>>> refits.refits, fusion.version, content.n_vectors
(1, 'learned-v1', 6)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

import numpy as np

from encoders.fusion import Embeddings
from encoders.learned_fusion import LearnedFusion
from models.evaluation.datasets import ReplayEvent
from models.signals import signal_weight
from models.sources import Catalog, ContentSimilarity


class FusionRefits:
    """Refits ``fusion`` on the replay's co-engaged pairs; re-fuses every item into
    ``content``."""

    def __init__(
        self,
        fusion: LearnedFusion,
        embeddings: Mapping[str, Embeddings],
        catalog: Catalog,
        content: ContentSimilarity,
        refresh_pairs: int = 500,
        fit_max_pairs: int = 4096,
        fit_epochs: int = 5,
    ) -> None:
        self.fusion = fusion
        self.embeddings = embeddings
        self.catalog = catalog
        self.content = content
        self.refresh_pairs = refresh_pairs
        self.fit_epochs = fit_epochs
        self.pairs: deque[tuple[str, str]] = deque(maxlen=fit_max_pairs)
        self.pairs_since_fit = 0
        self.refits = 0
        #: Per user, the item of their latest positive engagement (as the worker pairs).
        self.previous: dict[str, str] = {}

    def __call__(self, event: ReplayEvent) -> None:
        """After ``event`` is learned: count its pair, refit when due."""
        if signal_weight(event.kind, event.value) <= 0 or event.item not in self.embeddings:
            return
        previous = self.previous.get(event.user)
        self.previous[event.user] = event.item
        if previous is None or previous == event.item:
            return
        self.pairs.append((previous, event.item))
        self.pairs_since_fit += 1
        if self.pairs_since_fit >= self.refresh_pairs:
            self.refit()

    def refit(self) -> None:
        self.pairs_since_fit = 0
        ids = sorted({item for pair in self.pairs for item in pair})
        index = {item_id: n for n, item_id in enumerate(ids)}
        self.fusion.fit(
            [self.embeddings[i] for i in ids],
            [(index[a], index[b]) for a, b in self.pairs],
            self.fit_epochs,
        )
        self.refits += 1
        known = [i for i in self.embeddings if i in self.catalog]
        vectors = self.fusion.fuse([self.embeddings[i] for i in known])
        for item_id, vector in zip(known, vectors, strict=True):
            self.content.set_vector(self.catalog.index(item_id), np.asarray(vector))
