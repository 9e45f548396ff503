"""Re-read a partition whose records stopped reaching the agents.

Seen on noida-db since the worker got its item-side replica (a second consumer in the
process): after a restart, now and then a worker is assigned a partition, ready, the
partition has records past its committed offset, and none ever reaches the agent
(``tests/integration/test_restart.py``: 2 stalls in 7 runs). The cause inside Faust and
aiokafka is not found yet. The watchdog looks every few seconds: a source partition
with records beyond its committed offset and no record delivered to this worker for
``stalled_after_s``, outside any rebalance or recovery, is sought back to its committed
offset (events apply at most once, so re-reading is safe), with a warning in the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable, Mapping

import faust
from faust.types import TP

log = logging.getLogger(__name__)


class DeliveryWatchdog:
    """``delivered`` is called for every record an agent receives; ``check`` by a timer."""

    def __init__(self, app: faust.App, topics: Collection[str], stalled_after_s: float) -> None:
        self.app = app
        self.topics = set(topics)
        self.stalled_after_s = stalled_after_s
        self._last_delivery: dict[TP, float] = {}
        self._ready_since: float | None = None

    def delivered(self, tp: TP) -> None:
        self._last_delivery[tp] = time.monotonic()

    def quiet(self, assigned: Iterable[TP], now: float, ready_since: float) -> list[TP]:
        """The watched partitions with no delivery for ``stalled_after_s`` since ready."""
        return [
            tp
            for tp in assigned
            if tp.topic in self.topics
            and now - max(self._last_delivery.get(tp, 0.0), ready_since) > self.stalled_after_s
        ]

    async def check(self) -> set[TP]:
        app, now = self.app, time.monotonic()
        if app.rebalancing or app.in_recovery or not app.tables.recovery.completed.is_set():
            self._ready_since = None
            return set()
        if self._ready_since is None:
            self._ready_since = now
        quiet = self.quiet(app.consumer.assignment(), now, self._ready_since)
        if not quiet:
            return set()
        thread = app.consumer._thread  # Faust has no public per-partition seek to committed
        client = thread._ensure_consumer()
        ends = await thread.call_thread(client.end_offsets, quiet)
        offsets = {tp: await thread.call_thread(client.committed, tp) for tp in quiet}
        offsets = behind(ends, offsets)
        stalled = set(offsets)
        if not stalled:
            return set()
        log.warning(
            "no record delivered from %s for %.0f s although the log holds more: "
            "reading again from the committed offsets %s",
            sorted(stalled),
            self.stalled_after_s,
            offsets,
        )
        app.consumer.resume_partitions(stalled)
        committed = {tp: offset for tp, offset in offsets.items() if offset is not None}
        if committed:
            await thread.seek_wait(committed)
        never = [tp for tp, offset in offsets.items() if offset is None]
        if never:  # where a new consumer starts (auto_offset_reset=earliest)
            await thread.seek_to_beginning(*never)
        for tp in stalled:
            self._last_delivery[tp] = now  # give the re-read time before looking again
        return stalled


def behind(ends: Mapping[TP, int], committed: Mapping[TP, int | None]) -> dict[TP, int | None]:
    """The partitions whose log ends past their committed offset, with that offset."""
    return {tp: offset for tp, offset in committed.items() if ends.get(tp, 0) > (offset or 0)}
