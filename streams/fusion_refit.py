"""Refits of a learned fusion from the items users engage with one after the other.

The interaction handler reports each co-engaged pair (``engaged``); a timer calls
``maybe_refit`` every second, which refits once ``fusion_refresh_pairs`` new pairs came
in, or once ``fusion_refresh_interval_s`` passed since the last refit with any new pair.
A refit is bounded so it keeps up with a fast stream: it continues from the current
weights on the latest ``fusion_fit_max_pairs`` pairs for ``fusion_fit_epochs`` passes
(measured on the development machine, one thread, text, image and audio embeddings:
5.5 s for 4,096 pairs and 5 passes, against 120 s for the 20,000 pairs kept and 20
passes that refits took before, by which time a fast stream had moved on).

A copy is trained in a thread while the live model keeps fusing new uploads; the copy
replaces it once saved, and the catalog pass then moves every item, including those
uploaded meanwhile, to the new version through item-updates, so every replica moves.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from encoders.fusion import learned
from encoders.multimodal import MultimodalEncoder
from models.atomic_file import set_aside
from models.hybrid import CF, CONTENT
from models.vector_store import StoredItem, VectorStore
from streams.encoding import modality_embeddings

log = logging.getLogger(__name__)

#: Co-engaged pairs kept for refitting a learned fusion (the most recent ones).
MAX_COENGAGED_PAIRS = 20_000
#: Items re-fused per step after a refit.
REFUSE_PAGE = 256


class FusionRefitter:
    """Keeps the recent co-engaged pairs and refits the encoder's learned fusion on them."""

    def __init__(
        self,
        encoder: MultimodalEncoder,
        store: VectorStore,
        publish_item: Callable[[StoredItem], Awaitable[None]],
        path: Path,
        refresh_pairs: int,
        refresh_interval_s: float = 300.0,
        fit_max_pairs: int = 4096,
        fit_epochs: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.encoder = encoder
        self.store = store
        self.publish_item = publish_item
        self.path = path
        self.refresh_pairs = refresh_pairs
        self.refresh_interval_s = refresh_interval_s
        self.fit_max_pairs = fit_max_pairs
        self.fit_epochs = fit_epochs
        self.clock = clock
        self.last_fit = clock()
        #: Items users engaged with one after the other: what a learned fusion learns from.
        self.coengaged: deque[tuple[str, str]] = deque(maxlen=MAX_COENGAGED_PAIRS)
        self.pairs_since_fit = 0

    def load(self) -> None:
        """Take the saved fusion, if a learned one was saved before.

        The weights are derived (refitted from the interactions to come): a file that
        cannot be read, or holds no weights of this network (cut by a crash, other
        encoders, NaN), is moved aside to ``<name>.unreadable`` (the last one kept, for a
        post-mortem) with one warning, and the worker starts from the average fusion."""
        fusion = learned(self.encoder.fusion)
        if fusion is None or not self.path.exists():
            return
        from encoders.learned_fusion import FusionWeightsError  # imported with the fusion

        try:
            fusion.load(self.path)
        except FusionWeightsError as error:
            try:
                where = f"moved aside to {set_aside(self.path)}"
            except OSError as move:
                where = f"could not be moved aside ({move})"
            log.warning("%s; %s, starting from the average fusion", error, where)
            return
        log.info("loaded fusion %s from %s", fusion.version, self.path)

    def engaged(self, previous: str, item: str) -> None:
        """A user engaged with ``item`` right after ``previous``."""
        if previous != item:
            self.coengaged.append((previous, item))
            self.pairs_since_fit += 1

    def due(self) -> bool:
        """Enough new pairs, or any new pair once the interval has passed."""
        if self.pairs_since_fit >= self.refresh_pairs:
            return True
        waited = self.clock() - self.last_fit
        return self.pairs_since_fit > 0 and waited >= self.refresh_interval_s

    async def maybe_refit(self) -> None:
        if self.due():
            await self.refit()

    async def refit(self) -> dict[str, float]:
        """Fit the learned fusion to the co-engaged pairs, save it, re-fuse the catalog."""
        live = learned(self.encoder.fusion)
        assert live is not None
        pairs = list(self.coengaged)[-self.fit_max_pairs :]
        self.pairs_since_fit = 0
        self.last_fit = self.clock()
        ids = sorted({item for pair in pairs for item in pair})
        stored = self.store.get(ids, with_vectors=True)
        index = {item_id: n for n, item_id in enumerate(i for i in ids if i in stored)}
        usable = [(index[a], index[b]) for a, b in pairs if a in index and b in index]
        if not usable:
            return {"pairs": 0}
        items = [modality_embeddings(stored[item_id]) for item_id in index]
        candidate = copy.deepcopy(live)
        started = time.perf_counter()
        report = await asyncio.to_thread(candidate.fit, items, usable, self.fit_epochs)
        report["seconds"] = round(time.perf_counter() - started, 3)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        candidate.save(self.path)  # atomic: a crash never leaves half a model
        self.encoder.fusion = candidate
        # Store calls stay in the event loop (one caller at a time); only fusing is threaded.
        for page in _pages(self.store.scroll(REFUSE_PAGE), REFUSE_PAGE):
            embeddings = [modality_embeddings(item) for item in page]
            vectors = await asyncio.to_thread(candidate.fuse, embeddings)
            for item, vector in zip(page, vectors, strict=True):
                await self.publish_item(
                    StoredItem(
                        item.item_id,
                        # The CF vector is the replica's to keep, not part of the record.
                        {**{n: v for n, v in item.vectors.items() if n != CF}, CONTENT: vector},
                        {**item.payload, "fusion": candidate.version},
                    )
                )
        log.info("fusion refitted to %s on %d pairs: %s", candidate.version, len(usable), report)
        return report


def _pages(items: Iterator[StoredItem], size: int) -> Iterator[list[StoredItem]]:
    page: list[StoredItem] = []
    for item in items:
        page.append(item)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page
