"""Re-read a partition whose records stopped reaching the agents or the table recovery.

Seen on noida-db since the worker got its item-side replica (a second consumer in the
process): after a restart, now and then a worker is assigned a partition, ready, the
partition has records past its committed offset, and none ever reaches the agent
(``tests/integration/test_restart.py``: 2 stalls in 7 runs). The cause inside Faust and
aiokafka is not found yet. The watchdog looks every few seconds: a source partition
with records beyond its committed offset and no record delivered to this worker for
``stalled_after_s``, outside any rebalance or recovery, is sought back to its committed
offset (events apply at most once, so re-reading is safe), with a warning in the log.

The same happens to table recovery, and there the worker never becomes ready: caught in
the rebalance test with the consumer's state logged, a changelog partition to recover
from offset -1 to 22 had been fetched to its end (the consumer's position was 23), and
not one record had reached the recovery, which waited for good ("No event received for
active tp"): the fetched records were dropped on their way, during the seeks that start
a recovery. So during recovery the watchdog also looks at each changelog partition still
behind its highwater: when none of its records arrived for ``stalled_after_s``, it is
sought back to the first offset the recovery still needs (the recovery applies each
offset once, so reading again is safe).

A source partition can also be behind its end for good with nothing left to deliver:
its log ends with a transaction's commit marker, or with a transaction its producer
aborted (``read_committed``), offsets no record is delivered from, so none is committed.
It was read again every ``stalled_after_s``, with a warning, for as long as the
partition stayed idle (both brokers). Before a partition is read again the range is
looked at directly (``holds_records``); a range with no record to deliver is remembered
and not looked at again until the committed offset or the end moves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping

import faust
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from faust.types import TP
from mode import Service

from streams.kafka_compat.counts import fire

log = logging.getLogger(__name__)

#: Whether offsets ``first`` to ``end - 1`` of a partition hold a record to deliver.
HoldsRecords = Callable[[TP, int, int], Awaitable[bool]]


class DeliveryWatchdog(Service):
    """``delivered`` is called for every record an agent receives; ``check`` runs every
    ``stalled_after_s / 2``. A service of its own, started with the app: Faust's timers
    only start once the first table recovery is over, which is what it may have to
    rescue."""

    def __init__(
        self,
        app: faust.App,
        topics: Collection[str],
        stalled_after_s: float,
        holds_records: HoldsRecords | None = None,
    ) -> None:
        super().__init__()
        self.app = app
        self.topics = set(topics)
        self.stalled_after_s = stalled_after_s
        self.holds_records = holds_records
        #: Ranges (committed, end) found to hold no record to deliver, by partition.
        self._nothing_to_deliver: dict[TP, tuple[int | None, int]] = {}
        self._last_delivery: dict[TP, float] = {}
        #: When each changelog partition was last sought back during a recovery.
        self._recovery_reread: dict[TP, float] = {}
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

    @Service.task
    async def _check_forever(self) -> None:
        while not self.should_stop:
            await self.sleep(self.stalled_after_s / 2)
            try:
                await self.check()
            except Exception:  # a consumer mid-rebalance or stopping: look again later
                if self.should_stop or self.app.should_stop:
                    return  # the worker is stopping: its consumer thread has gone
                log.exception("delivery watchdog check failed")

    async def check(self) -> set[TP]:
        app, now = self.app, time.monotonic()
        if app._consumer is None:  # not created yet (``app.consumer`` would create it)
            return set()
        if app.in_recovery:
            self._ready_since = None
            return await self._check_recovery(now)
        if app.rebalancing or not app.tables.recovery.completed.is_set():
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
        offsets = {
            tp: offset for tp, offset in offsets.items() if await self._holds(tp, offset, ends[tp])
        }
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
        fire("watchdog_reread", len(stalled))
        app.consumer.resume_partitions(stalled)
        committed = {tp: offset for tp, offset in offsets.items() if offset is not None}
        if committed:
            await thread.seek_wait(committed)
        never = [tp for tp, offset in offsets.items() if offset is None]
        if never:  # where a new consumer starts (auto_offset_reset=earliest)
            # aiokafka's seek_to_beginning takes only its own TopicPartition (Faust's TP is
            # an equal tuple of another type; it raised TypeError here).
            await thread.seek_to_beginning(
                *(TopicPartition(tp.topic, tp.partition) for tp in never)
            )
        for tp in stalled:
            self._last_delivery[tp] = now  # give the re-read time before looking again
        return stalled

    async def _holds(self, tp: TP, committed: int | None, end: int) -> bool:
        """Whether the log past ``committed`` holds a record for the agent. A partition
        whose log ends with a transaction's commit marker, or with an aborted transaction,
        is behind its end for good although nothing is left to deliver: read once to know,
        not read again at every check."""
        if self.holds_records is None:
            return True
        if self._nothing_to_deliver.get(tp) == (committed, end):
            return False
        try:
            if await self.holds_records(tp, committed or 0, end):
                return True
        except (KafkaError, TimeoutError) as error:  # not known: read again, as before
            log.warning("could not look past the committed offset of %s: %s", tp, error)
            return True
        self._nothing_to_deliver[tp] = (committed, end)
        return False

    async def _check_recovery(self, now: float) -> set[TP]:
        recovery = self.app.tables.recovery
        started = recovery._recovery_started_at  # Faust's own stall warning reads the same
        if started is None:
            return set()
        events_at = recovery._active_events_received_at
        received = {
            tp: max(events_at.get(tp, 0.0), self._recovery_reread.get(tp, 0.0))
            for tp in recovery.active_highwaters
        }
        stalled = recovery_stalled(
            recovery.active_offsets,
            recovery.active_highwaters,
            received,
            started,
            now,
            self.stalled_after_s,
        )
        if not stalled:
            return set()
        log.warning(
            "table recovery received nothing from %s for %.0f s although records remain: "
            "reading again from %s",
            sorted(stalled),
            self.stalled_after_s,
            stalled,
        )
        fire("recovery_reread", len(stalled))
        await self.app.consumer._thread.seek_wait(stalled)
        for tp in stalled:
            self._recovery_reread[tp] = now
        return set(stalled)


def recovery_stalled(
    offsets: Mapping[TP, int | None],
    highwaters: Mapping[TP, int | None],
    received_at: Mapping[TP, float],
    started_at: float,
    now: float,
    stalled_after_s: float,
) -> dict[TP, int]:
    """The changelog partitions a recovery still reads (its offset below the highwater,
    both Faust's: last offset applied and last offset in the log) that received nothing
    for ``stalled_after_s``, with the offset to read again from."""
    stalled = {}
    for tp, highwater in highwaters.items():
        offset = offsets.get(tp)
        offset = -1 if offset is None else offset
        if highwater is None or offset >= highwater:
            continue
        if now - max(received_at.get(tp, started_at), started_at) > stalled_after_s:
            stalled[tp] = offset + 1
    return stalled


def behind(ends: Mapping[TP, int], committed: Mapping[TP, int | None]) -> dict[TP, int | None]:
    """The partitions whose log ends past their committed offset, with that offset."""
    return {tp: offset for tp, offset in committed.items() if ends.get(tp, 0) > (offset or 0)}
