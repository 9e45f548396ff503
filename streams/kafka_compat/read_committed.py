"""The worker reads only committed records: an aborted transaction's events never apply.

Teams' producers may be transactional (``transactional.id``: Kafka Streams and Flink with
exactly-once, or any producer that writes several topics atomically). A transaction the
producer aborts leaves its records in the log, marked aborted by a control record that
follows them; a consumer reading ``read_uncommitted`` (Kafka's default) hands them on as
any other. Faust asks aiokafka for ``read_committed`` only when its own
``processing_guarantee`` is ``exactly_once`` (its producers then become transactional
too), so the worker learned from clicks their producer had aborted: seen on both
brokers, an aborted click counted in the user's history and the lists that followed.

This makes the consumer Faust creates for the worker read ``read_committed``: aborted
records are left out by aiokafka, and a partition is read up to its last stable offset
(a transaction still open holds back the records after it until it ends or the broker
aborts it, ``transaction.max.timeout.ms``). The worker's own direct reads of the input
topics (``offset_continuity.CatchUpReader``) read the same way. The offsets a
transaction's control records take are never delivered: the continuity check reads them
and finds nothing; the watchdog does not take them for a stall (``delivery_watchdog``).

Not a broker quirk but Faust's choice of default, so installed on every broker.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from streams.kafka_compat.patching import ClassPatch

#: What the worker's consumers read.
ISOLATION_LEVEL = "read_committed"

_original_create_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer


def _create_worker_consumer_read_committed(
    self: AIOKafkaConsumerThread, transport: Any
) -> AIOKafkaConsumer:
    consumer = _original_create_worker_consumer(self, transport)
    # Read when the consumer starts and builds its fetcher; Faust passes no option for it
    # short of making the whole app exactly-once.
    consumer._isolation_level = ISOLATION_LEVEL
    return consumer


PATCH = ClassPatch(
    name="read_committed",
    owner=AIOKafkaConsumerThread,
    attribute="_create_worker_consumer",
    replacement=_create_worker_consumer_read_committed,
    brokers=frozenset({"noida-db", "kafka"}),
    reason="Faust reads read_uncommitted unless exactly-once: aborted transactions' "
    "records were applied",
)
