"""Every offset of a partition reaches the agent: records skipped in between are caught up.

Seen on a worker taking a partition over in a rebalance (``test_rebalance.py`` under
load): the agent received offsets 10, 13, 14, ... of the partition; 11 and 12 were
fetched but never handed to it, and Faust, which counts offsets missing between two
records it delivers as a gap in the log (compaction, transaction markers), committed
past them: two events were lost for good. Where in Faust's recovery and seeking the two
records go is not found (README, "Known problems").

This check sits in front of the agents. A partition just assigned is expected to go on
from its committed offset, then from each record handled. A record whose offset is past
the next one expected reveals what was skipped: the agent reads that range directly
from the broker (``CatchUpReader``) and handles it first, so each user's events stay in
order. Seeking the group's consumer back instead does not work: the records it had
already fetched after the gap move Faust's read offset past the re-read, which Faust
then drops. Records below the expected offset are ones read again after a seek back to
the committed offsets; they pass (events apply at most once). A partition whose last
records are skipped delivers nothing after them: that is the delivery watchdog's case.

>>> from faust.types import TP
>>> tp = TP("interactions", 0)
>>> check = OffsetContinuity()
>>> check.start(tp, 10)
>>> [check.missing(tp, offset) for offset in (10, 11, 14, 15, 12)]
[None, None, (12, 14), None, None]
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP
from mode import Service

from streams.kafka_compat.counts import fire
from streams.kafka_compat.read_committed import ISOLATION_LEVEL


class OffsetContinuity:
    """``missing`` for each record in delivery order; ``forget`` partitions assigned anew."""

    def __init__(self) -> None:
        self._next: dict[TP, int] = {}

    def expects(self, tp: TP) -> bool:
        """Whether the next offset of ``tp`` is known (else give ``start`` the committed one)."""
        return tp in self._next

    def start(self, tp: TP, committed: int) -> None:
        """Expect ``tp`` to go on from its committed offset (a partition just assigned)."""
        self._next[tp] = committed

    def missing(self, tp: TP, offset: int) -> tuple[int, int] | None:
        """The offsets ``[first, end)`` skipped before this record, or None."""
        expected = self._next.get(tp)
        self._next[tp] = offset + 1
        if expected is not None and offset > expected:
            return expected, offset
        return None

    def forget(self, tps: Iterable[TP]) -> None:
        """Partitions assigned anew: their next record starts from the committed offset."""
        for tp in tps:
            self._next.pop(tp, None)


@dataclass(frozen=True)
class CaughtUpMessage:
    """Where a caught-up record comes from (the fields of Faust's message the agents read)."""

    topic: str
    partition: int
    offset: int
    timestamp: float | None

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


@dataclass(frozen=True)
class CaughtUp:
    """A record read directly from the broker, shaped as the agents read Faust's events."""

    key: bytes | None
    value: bytes | None
    message: CaughtUpMessage


class CatchUpReader(Service):
    """Reads a range of one partition directly (its own consumer, no group)."""

    def __init__(self, options: dict[str, Any], timeout_s: float = 30.0) -> None:
        super().__init__()
        self.options = options
        self.timeout_s = timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        # The agents and the delivery watchdog share the one consumer: one range at a time.
        self._lock = asyncio.Lock()

    async def read(self, tp: TP, first: int, end: int) -> list[CaughtUp]:
        """The records at offsets ``first`` to ``end - 1`` (those the log holds)."""
        fire("catch_up_read")
        records = await self._read(tp, first, end, stop_at_first=False)
        fire("catch_up_record", len(records))
        return records

    async def holds_records(self, tp: TP, first: int, end: int) -> bool:
        """Whether offsets ``first`` to ``end - 1`` hold a record a consumer would deliver
        (not only a transaction's control records, or aborted ones)."""
        return bool(await self._read(tp, first, end, stop_at_first=True))

    async def _read(self, tp: TP, first: int, end: int, stop_at_first: bool) -> list[CaughtUp]:
        async with self._lock:
            return await self._read_alone(tp, first, end, stop_at_first)

    async def _read_alone(
        self, tp: TP, first: int, end: int, stop_at_first: bool
    ) -> list[CaughtUp]:
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level=ISOLATION_LEVEL,  # as the worker's own consumer reads
                **self.options,
            )
            await self._consumer.start()
        consumer, partition = self._consumer, TopicPartition(tp.topic, tp.partition)
        consumer.assign([partition])
        consumer.seek(partition, first)
        records: list[CaughtUp] = []
        polls = max(int(self.timeout_s), 1)
        for _ in range(polls):
            batch = await consumer.getmany(partition, timeout_ms=1000)
            for record in batch.get(partition, []):
                if record.offset >= end:
                    return records
                timestamp = record.timestamp / 1000 if record.timestamp else None
                message = CaughtUpMessage(tp.topic, tp.partition, record.offset, timestamp)
                records.append(CaughtUp(record.key, record.value, message))
                if stop_at_first:
                    return records
            if await consumer.position(partition) >= end:
                return records
        raise TimeoutError(f"{tp}: offsets {first} to {end - 1} not read in {self.timeout_s} s")

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
