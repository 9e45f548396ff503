"""Seek back to committed offsets of 0 and "none yet" too, so no fetched record is lost.

After a rebalance or a table recovery Faust seeks every partition back to its committed
offset, relying on that to re-read the records it fetched meanwhile and dropped (its
``Consumer.getmany`` drops records of partitions that stopped being active while the
fetch was in flight, and the consumer's position has already moved past them).
aiokafka's ``seek_to_committed`` only seeks partitions whose committed offset is above
0: a partition with nothing committed yet (a worker killed before its first commit) or
committed at 0 keeps its position, and the dropped records are never delivered. Found
in a worker restarted after a SIGKILL: records 26-30 of an interactions partition were
fetched during recovery, dropped, and the worker then sat idle with nothing to fetch.

The fix completes the seek: with ``auto_offset_reset = "earliest"`` (the app's setting)
a partition with no committed offset, or offset 0, goes back to its beginning, exactly
where a fresh consumer would start. Changelog partitions are left to Faust's recovery,
which positions them itself. Redelivery is safe: events apply at most once.

A client bug (aiokafka ``AIOKafkaConsumer.seek_to_committed``: ``if offset and offset >
0``), so installed on every broker; the issue that asked for this package names it
aio-libs/aiokafka#1003. ``tests/integration/test_broker_differences.py`` shows it on Kafka.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from streams.kafka_compat.counts import fire
from streams.kafka_compat.patching import ClassPatch

_original_seek_to_committed = AIOKafkaConsumerThread.seek_to_committed


async def _seek_to_committed_from_the_beginning(self: AIOKafkaConsumerThread) -> Mapping[Any, int]:
    committed = await _original_seek_to_committed(self)
    if self.app.conf.consumer_auto_offset_reset != "earliest":
        return committed
    changelogs = self.app.tables.changelog_topics
    unsought = [tp for tp, offset in committed.items() if not offset and tp.topic not in changelogs]
    if unsought:
        fire("seek_to_beginning", len(unsought))
        await self.call_thread(self._ensure_consumer().seek_to_beginning, *unsought)
    return committed


PATCH = ClassPatch(
    "full_seek_to_committed",
    AIOKafkaConsumerThread,
    "seek_to_committed",
    _seek_to_committed_from_the_beginning,
    brokers=frozenset({"noida-db", "kafka"}),
    reason="aiokafka's seek_to_committed skips offsets 0 and none: fetched records are lost",
)
