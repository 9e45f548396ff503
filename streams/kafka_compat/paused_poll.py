"""A worker with nothing to fetch still counts as polling.

Kafka takes a consumer that has not polled for ``max.poll.interval`` for stuck and drops
it from the group; aiokafka rejoins on the consumer's next poll. When a Faust worker has
no partition to fetch from (none assigned, or all paused because their agents' buffers
are full) it does not poll at all, but sleeps and looks again. Past the interval the
consumer leaves its group, and at the next rebalance Faust stops its flow and waits for
the rebalance to end while aiokafka waits for a poll: the worker is out of the group for
good (``tests/integration/test_poll_interval.py``; reported for Faust in
robinhood/faust#517).

A Java consumer keeps polling with its partitions paused, which resets the poll clock
while it works through what it has. This does the same: each round in which Faust finds
nothing to fetch marks a poll on the aiokafka consumer. (A poll's records handed to full
buffers are bounded separately, by ``consumer_max_poll_records``.)

A client bug, so installed on every broker (``test_poll_interval.py`` runs on both).
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport.consumer import Consumer

from streams.kafka_compat.counts import fire
from streams.kafka_compat.patching import ClassPatch

_original_wait_next_records = Consumer._wait_next_records


async def _mark_polled(client: aiokafka.AIOKafkaConsumer) -> None:
    with client._subscription.fetch_context():  # what a poll that returns nothing does
        pass


async def _wait_next_records_polling_when_paused(self: Consumer, timeout: float) -> tuple[Any, Any]:
    records, active_partitions = await _original_wait_next_records(self, timeout)
    if active_partitions is not None and not active_partitions and self.flow_active:
        fire("idle_poll")
        thread = self._thread  # type: ignore[attr-defined]
        await thread.call_thread(_mark_polled, thread._ensure_consumer())
    return records, active_partitions


PATCH = ClassPatch(
    "poll_while_paused",
    Consumer,
    "_wait_next_records",
    _wait_next_records_polling_when_paused,
    brokers=frozenset({"noida-db", "kafka"}),
    reason="a Faust worker with nothing to fetch stops polling and drops out of its group "
    "(robinhood/faust#517)",
)
