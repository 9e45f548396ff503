"""The worker's refits of the "ease" source, in the background.

A timer calls ``maybe_refit`` every ``ease_refit_interval_s``; when item-item's counts
grew since the last fit, they are copied on the event loop (the handler changes them
there), inverted in a thread (LAPACK releases the GIL, so clicks go on being handled),
and the fit is swapped in on the loop. Every replica fits from the same replicated
counts, so replicas that read the same log serve the same fit.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

from models.sources.item_ease import ItemSideEASE

log = logging.getLogger(__name__)


class EaseRefitter:
    """Refits ``ease`` when its counts moved (module docstring)."""

    def __init__(self, ease: ItemSideEASE) -> None:
        self.ease = ease
        self.refits = 0
        self.last_fit_seconds = 0.0

    async def maybe_refit(self) -> bool:
        """Refit if item-item counted engagements since the last fit; whether it did."""
        ease = self.ease
        engagements = ease.engagements
        if engagements == ease.fitted_engagements:
            return False
        started = time.perf_counter()
        gram = ease.gram_rows()
        try:
            fit = await asyncio.to_thread(ease.fit, gram)
        except np.linalg.LinAlgError as error:
            log.warning("EASE refit skipped, the last fit is kept: %s", error)
            return False
        ease.install(fit, engagements)
        self.refits += 1
        self.last_fit_seconds = time.perf_counter() - started
        log.info(
            "EASE refitted over %d items (%.0f engagements) in %.2f s",
            len(fit.items),
            engagements,
            self.last_fit_seconds,
        )
        return True

    def stats(self) -> dict[str, float | int]:
        return {
            "refits": self.refits,
            "items": len(self.ease.fit_.items),
            "engagements": self.ease.fitted_engagements,
            "last_fit_seconds": round(self.last_fit_seconds, 3),
        }
