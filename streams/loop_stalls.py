"""How long the worker's event loop is held: every click that arrives meanwhile waits.

A task asks to wake every ``interval_s``; how late it wakes is how long something held the
loop (an engine call that keeps the GIL, a garbage collection, a long handler). The
worker counts this after it is ready, in its stats (``event_loop_stalls``) and as the Prometheus
histogram ``streamrec_event_loop_stall_seconds``: what a p99 well above the p50 comes
from (docs/scale.md#the-pauses-cut-into-steps).

>>> import asyncio, time
>>> async def held_once() -> dict:
...     stalls = LoopStalls(interval_s=0.01)
...     watching = asyncio.ensure_future(stalls.watch())
...     await asyncio.sleep(0.05)
...     time.sleep(0.3)  # what an engine call holding the GIL does to the loop
...     await asyncio.sleep(0.05)
...     watching.cancel()
...     return stalls.stats()
>>> stats = asyncio.run(held_once())
>>> stats["wakes"] > 5, stats["longest_ms"] >= 280, stats["over_250_ms"] >= 1
(True, True, True)
"""

from __future__ import annotations

import asyncio

from prometheus_client import Histogram

#: Stalls counted apart in the stats, in seconds: past these a click's list is late.
COUNTED_OVER_S = (0.1, 0.25)


class LoopStalls:
    def __init__(self, histogram: Histogram | None = None, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.histogram = histogram
        self.wakes = 0
        self.longest_s = 0.0
        self.over = dict.fromkeys(COUNTED_OVER_S, 0)

    async def watch(self) -> None:
        """Wake every ``interval_s`` and note how late, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(self.interval_s)
            self.observe(max(loop.time() - asked - self.interval_s, 0.0))

    def observe(self, late_s: float) -> None:
        self.wakes += 1
        self.longest_s = max(self.longest_s, late_s)
        for threshold in COUNTED_OVER_S:
            if late_s > threshold:
                self.over[threshold] += 1
        if self.histogram is not None:
            self.histogram.observe(late_s)

    def stats(self) -> dict[str, float | int]:
        counted = {f"over_{round(t * 1000)}_ms": n for t, n in self.over.items()}
        return {"wakes": self.wakes, "longest_ms": round(self.longest_s * 1000, 1), **counted}
