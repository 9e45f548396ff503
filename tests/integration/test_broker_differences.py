"""Where noida-db and Apache Kafka answer the same client differently, and which of the
compatibility patches (streams/kafka_compat/) each broker needs. Each test runs on both
brokers (``--broker=both``) and states what each does; docs/kafka.md sums them up.
No worker here: plain aiokafka clients against the real broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.consumer.fetcher import Fetcher
from kafka.admin import KafkaAdminClient, NewTopic

from streams.broker import Broker
from streams.kafka_compat import PATCHES

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def upstream_behaviour() -> Iterator[None]:
    """No patch in place: these tests observe the broker and the unpatched clients."""
    before = {patch.name: patch.installed for patch in PATCHES}
    for patch in PATCHES:
        patch.uninstall()
    yield
    for patch in PATCHES:
        patch.install() if before[patch.name] else patch.uninstall()


def new_topic(broker: Broker, partitions: int = 1) -> str:
    name = f"diff-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()
    return name


async def produce(broker: Broker, topic: str, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for i in range(n):
            await producer.send_and_wait(topic, f"record-{i}".encode(), partition=0)
    finally:
        await producer.stop()


def test_an_empty_fetch_is_held_by_kafka_and_answered_at_once_by_noida_db(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why ``fetch_backoff`` is installed on noida-db only: Kafka holds a fetch that finds
    nothing for ``fetch.max.wait.ms``; noida-db answers it at once, so an idle consumer
    fetches in a tight loop (a core of CPU) unless it pauses."""
    topic = new_topic(broker)
    durations: list[float] = []
    original = Fetcher._proc_fetch_request

    async def timed(self: Fetcher, *args: object, **kwargs: object) -> bool:
        started = time.monotonic()
        got = await original(self, *args, **kwargs)
        durations.append(time.monotonic() - started)
        return got

    monkeypatch.setattr(Fetcher, "_proc_fetch_request", timed)
    wait_s = 3.0

    async def idle_fetches() -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap_servers, fetch_max_wait_ms=int(wait_s * 1000)
        )
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, 0)])
            await consumer.seek_to_beginning()
            deadline = time.monotonic() + 2 * wait_s + 10
            while len(durations) < 3 and time.monotonic() < deadline:
                await consumer.getmany(timeout_ms=500)
        finally:
            await consumer.stop()

    asyncio.run(idle_fetches())
    assert len(durations) >= 2, durations
    typical = sorted(durations)[len(durations) // 2]
    if broker.flavour == "kafka":
        assert typical >= wait_s * 0.9, f"Kafka held empty fetches only {durations}"
    else:
        assert typical < wait_s / 2, f"noida-db held empty fetches {durations}"


def test_a_new_clients_first_metadata_names_every_topic_on_noida_db_only(
    broker: Broker,
) -> None:
    """Why the item-side replica asks the broker for its topic's partitions
    (``streams.admin.partition_ids``): aiokafka bootstraps with a metadata request for
    no topic; Kafka answers with none, noida-db with all of them, and
    ``partitions_for_topic`` reads only that cache."""
    topic = new_topic(broker, partitions=2)

    async def cached_partitions() -> set[int] | None:
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap_servers)
        await consumer.start()
        try:
            await consumer.topics()  # a metadata request for all topics, not cached
            return consumer.partitions_for_topic(topic)
        finally:
            await consumer.stop()

    cached = asyncio.run(cached_partitions())
    if broker.flavour == "kafka":
        assert cached is None
    else:
        assert cached == {0, 1}


def test_aiokafka_seek_to_committed_skips_a_partition_committed_at_zero_on_any_broker(
    broker: Broker,
) -> None:
    """Why ``committed_seek`` is installed on every broker: the client, not the broker,
    leaves a partition committed at 0 where it is, past records it fetched."""
    topic = new_topic(broker)
    tp = TopicPartition(topic, 0)

    async def position_after_seek_to_committed() -> int:
        await produce(broker, topic, 3)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap_servers,
            group_id=f"g-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.commit({tp: 0})
            read = 0
            deadline = time.monotonic() + 30
            while read < 3 and time.monotonic() < deadline:
                read += len((await consumer.getmany(tp, timeout_ms=500)).get(tp, []))
            assert read == 3
            await consumer.seek_to_committed(tp)
            return await consumer.position(tp)
        finally:
            await consumer.stop()

    assert asyncio.run(position_after_seek_to_committed()) == 3, "sought back to 0 after all"


def test_a_silent_static_member_is_expired_by_kafka_and_kept_for_ever_by_noida_db(
    broker: Broker,
) -> None:
    """Why ``group_membership`` (a static member leaves on a clean stop) is installed on
    noida-db only. A static member that goes away without LeaveGroup (aiokafka sends none
    for static members, by KIP-345's design) keeps its partitions until its session
    times out: Kafka then hands them to the others; noida-db never does."""
    topic = new_topic(broker, partitions=2)
    group, session_ms = f"g-{uuid.uuid4().hex[:8]}", 6000

    async def partitions_of_the_survivor() -> tuple[int, float]:
        def member(instance: str) -> AIOKafkaConsumer:
            return AIOKafkaConsumer(
                topic,
                bootstrap_servers=broker.bootstrap_servers,
                group_id=group,
                group_instance_id=instance,
                session_timeout_ms=session_ms,
                heartbeat_interval_ms=1000,
                enable_auto_commit=False,
            )

        leaving, staying = member("leaving"), member("staying")
        await leaving.start()
        await staying.start()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # both members hold one partition each
                await asyncio.gather(
                    leaving.getmany(timeout_ms=300), staying.getmany(timeout_ms=300)
                )
                if len(leaving.assignment()) == 1 and len(staying.assignment()) == 1:
                    break
            assert len(staying.assignment()) == 1, "the group never settled"
        finally:
            await leaving.stop()  # static: no LeaveGroup
        stopped = time.monotonic()
        try:
            # Three session timeouts: ample for an expiry, and the member's heartbeats
            # keep the staying consumer's own session alive meanwhile.
            while time.monotonic() < stopped + 3 * session_ms / 1000:
                await staying.getmany(timeout_ms=300)
                if len(staying.assignment()) == 2:
                    break
            return len(staying.assignment()), time.monotonic() - stopped
        finally:
            await staying.stop()

    held, after_s = asyncio.run(partitions_of_the_survivor())
    if broker.flavour == "kafka":
        assert held == 2, "Kafka expires the silent static member and moves its partition"
        assert after_s >= session_ms / 1000 * 0.8, "not before its session timed out"
    else:
        assert held == 1, "noida-db keeps the silent static member: its partition waits"
