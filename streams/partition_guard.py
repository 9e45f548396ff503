"""Resume assigned partitions that Faust left out of its active set after a rebalance.

Faust fetches only its "active" partitions: assigned, not paused for recovery, not
held back because a stream buffer is full. Seen with noida-db when a worker took over
partitions from one that left (the rebalance test) or restarted after a SIGKILL (the
crash test): once recovery had ended, ``interactions`` and ``items`` partition 1 were
assigned but neither active nor paused nor buffered (logged: active = interactions 0,
items 0 and a changelog partition), so their records never reached the agents and the
worker sat idle on that partition for good. The guard looks every few seconds; a
partition left out at two checks in a row, outside any rebalance or recovery, is
resumed and sought back to its committed offset (records fetched and dropped meanwhile
are read again; events apply at most once). It logs a warning each time.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

import faust
from faust.types import TP

log = logging.getLogger(__name__)


class ForgottenPartitionGuard:
    """Checks the consumer's active partitions against its assignment; ``check`` is
    run by a Faust timer."""

    def __init__(self, app: faust.App, topics: Collection[str]) -> None:
        self.app = app
        self.topics = set(topics)
        self._suspect: set[TP] = set()

    def forgotten(self) -> set[TP]:
        # Private state of Faust's consumer: there is no public view of these sets.
        consumer = self.app.consumer
        held = (
            consumer._get_active_partitions()
            | consumer._paused_partitions
            | consumer._buffered_partitions
        )
        return {tp for tp in consumer.assignment() if tp.topic in self.topics} - held

    async def check(self) -> set[TP]:
        """Resume and re-seek partitions forgotten at this check and the one before."""
        app = self.app
        if app.rebalancing or app.in_recovery or not app.tables.recovery.completed.is_set():
            self._suspect = set()
            return set()
        forgotten = self.forgotten()
        confirmed, self._suspect = forgotten & self._suspect, forgotten - self._suspect
        if not confirmed:
            return set()
        thread = app.consumer._thread
        client = thread._ensure_consumer()
        offsets = {tp: await thread.call_thread(client.committed, tp) for tp in confirmed}
        log.warning(
            "partitions assigned but not fetched since the last rebalance: %s; resuming "
            "them from their committed offsets %s",
            sorted(confirmed),
            offsets,
        )
        app.consumer.resume_partitions(confirmed)
        committed = {tp: offset for tp, offset in offsets.items() if offset is not None}
        if committed:
            await thread.seek_wait(committed)
        never_committed = [tp for tp, offset in offsets.items() if offset is None]
        if never_committed:  # where a new consumer starts (auto_offset_reset=earliest)
            await thread.seek_to_beginning(*never_committed)
        return confirmed
