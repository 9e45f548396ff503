"""Topic administration and plain producing/consuming with kafka-python (tools, not workers)."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import TopicAlreadyExistsError

from streams.bounds import CHANGELOG_MIN_MESSAGE_BYTES
from streams.connection import BrokerConnectionError, check_connection
from streams.settings import Settings

log = logging.getLogger(__name__)


def topic_names(settings: Settings) -> list[str]:
    return [
        settings.topic_items,
        settings.topic_interactions,
        settings.topic_recommendations,
        settings.topic_item_updates,
        settings.topic_dead_letters,
    ]


#: item-updates is the item side's log: every worker rebuilds its replica from it, so no
#: record may ever be deleted by age or size (compaction would drop per-event changes).
ITEM_UPDATES_CONFIG = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}


class TopicLayoutError(Exception):
    """Existing topics that do not match the settings; the message says how to fix it."""


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Topic-level configs each topic is created with (others take the broker's defaults)."""
    return {settings.topic_item_updates: dict(ITEM_UPDATES_CONFIG)}


def create_topics(settings: Settings, timeout_s: float = 30.0) -> None:
    """Create every missing topic with the configured partitions; refuse existing topics
    whose partition count differs from ``partitions``, and an existing ``item-updates`` or
    users-table changelog that may lose records (``TopicLayoutError``, naming the fix).

    Workers must not rely on auto-creation: an auto-created topic gets the broker's
    default partition count, and Faust then refuses tables co-partitioned with it.
    """
    deadline = time.monotonic() + timeout_s
    while True:  # a broker just started may not answer yet; refused settings fail at once
        try:
            check_connection(settings)
            break
        except BrokerConnectionError as error:
            if not error.retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    while True:
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=settings.effective_bootstrap_servers,
                client_id="streamrec-admin",
                **settings.kafka_client_options(),
            )
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        configs = topic_configs(settings)
        missing = [
            NewTopic(
                name,
                settings.partitions,
                settings.replication_factor,
                topic_configs=configs.get(name, {}),
            )
            for name in topic_names(settings)
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker was first
                admin.create_topics(missing)
        present = [name for name in topic_names(settings) if name in existing]
        if present:
            check_partitions(settings, admin.describe_topics(present))
        kept = [settings.topic_item_updates, settings.users_changelog]
        if present_kept := [name for name in kept if name in existing]:
            described = topic_configs_of(admin, present_kept)
            check_item_updates_kept(settings, described)
            check_changelog_kept(settings, described)
    finally:
        admin.close()


def check_partitions(settings: Settings, described: list[dict[str, Any]]) -> None:
    """Raise ``TopicLayoutError`` naming each described topic whose partition count is not
    ``settings.partitions``, with the fix."""
    counts = {topic["name"]: len(topic["partitions"]) for topic in described}
    wrong = {name: n for name, n in sorted(counts.items()) if n != settings.partitions}
    if not wrong:
        return
    found = ", ".join(f"{name} has {n}" for name, n in wrong.items())
    raise TopicLayoutError(
        f"topics differ from partitions = {settings.partitions}: {found}; "
        "set partitions (STREAMREC_PARTITIONS) to the existing count if all agree, "
        "else recreate these topics (their users-table changelog too) with one count"
    )


def written_topics(settings: Settings) -> list[str]:
    """The topics the worker writes: its outputs and the users table's changelog."""
    return [
        settings.topic_recommendations,
        settings.topic_item_updates,
        settings.topic_dead_letters,
        settings.users_changelog,
    ]


def message_limits(settings: Settings) -> dict[str, int]:
    """Each existing topic the worker writes, with its ``max.message.bytes`` as the broker
    states it (the topic's own, or the broker's default).

    A team may create these topics beforehand with a smaller limit than the producer's
    (1 MB): the broker then refuses a record, or a whole batch of small ones, after the
    worker has sent it, and Faust only logs the refusal, so the list, the item or the
    table entry was lost while the offset of its source was committed. The worker checks
    each record against its topic's limit before sending it, and keeps its batches under
    the smallest (``StreamrecApp``); a topic not yet created (the changelog, before the
    first start) is left out, and takes the broker's default.
    """
    admin = KafkaAdminClient(
        bootstrap_servers=settings.effective_bootstrap_servers,
        client_id="streamrec-admin",
        **settings.kafka_client_options(),
    )
    try:
        existing = set(admin.list_topics())
        topics = [name for name in written_topics(settings) if name in existing]
        if not topics:
            return {}
        described = topic_configs_of(admin, topics)
    finally:
        admin.close()
    limits: dict[str, int] = {}
    for name in topics:
        value = described.get(name, {}).get("max.message.bytes")
        with contextlib.suppress(TypeError, ValueError):
            if int(value) > 0:
                limits[name] = int(value)
    return limits


def topic_configs_of(admin: KafkaAdminClient, topics: list[str]) -> dict[str, dict[str, str]]:
    """Each topic's configs as the broker states them (its own, or the broker's defaults)."""
    answer = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in topics], config_filter="all"
    )
    described = {
        name: {key: str(data.get("value")) for key, data in configs.items()}
        for by_name in answer.values()
        for name, configs in by_name.items()
    }
    # kafka-python drops a resource's error (DescribeConfigs denied, say): nothing stated.
    if unread := [name for name in topics if not described.get(name)]:
        log.warning(
            "the broker stated no configs for %s (is DescribeConfigs allowed?): their "
            "retention and size limits are not checked",
            ", ".join(unread),
        )
    return described


def check_item_updates_kept(settings: Settings, configs: Mapping[str, Mapping[str, str]]) -> None:
    """Raise ``TopicLayoutError`` if ``item-updates`` (its described ``configs``) may lose
    records: compacted, or deleted by age or size.

    Every worker rebuilds its item side from the whole topic, and the interactions' item
    changes are keyed by user: a team's topic created beforehand with
    ``cleanup.policy=compact`` kept each user's latest change only (on Kafka, 11 of one
    user's 14 were gone during a 90 s run), and one with the broker's default retention
    loses every item and engagement older than a week, so a worker started later, or one
    rebuilding after a change of sources, silently serves another catalog and other
    counts than its peers."""
    topic = settings.topic_item_updates
    described = configs.get(topic, {})
    losing = {
        key: described[key]
        for key, kept in ITEM_UPDATES_CONFIG.items()
        if key in described and not _keeps(key, described[key], kept)
    }
    if not losing:
        return
    found = ", ".join(f"{key}={value}" for key, value in losing.items())
    wanted = ",".join(f"{key}={value}" for key, value in ITEM_UPDATES_CONFIG.items())
    raise TopicLayoutError(
        f"{topic} may lose records ({found}): every worker rebuilds its item side from the "
        f"whole topic. Set {wanted} on it (kafka-configs.sh --alter --entity-type topics "
        f"--entity-name {topic} --add-config {wanted}), or delete it with the workers "
        "stopped and let `streamrec topics` create it"
    )


def check_changelog_kept(settings: Settings, configs: Mapping[str, Mapping[str, str]]) -> None:
    """Raise ``TopicLayoutError`` if the users table's changelog (its described ``configs``)
    may lose a user's latest entry: not compacted, compacted and also deleted by age or
    size, or with a ``max.message.bytes`` under what an entry may take.

    A restarted worker, or one taking over a partition, recovers every user's entry from
    this topic; Faust creates it compacted and for ever, but one a team created beforehand
    with the broker's defaults (``cleanup.policy=delete``, a week's retention) would lose
    the state of every user who has not clicked for a week: their history, their lists
    and the event ids that tell a redelivery from a new event."""
    topic = settings.users_changelog
    described = configs.get(topic)
    if described is None:
        return
    policies = set(described.get("cleanup.policy", "compact").replace(" ", "").split(","))
    losing = {} if "compact" in policies else {"cleanup.policy": described["cleanup.policy"]}
    if "delete" in policies:
        losing.update(
            (key, described[key])
            for key in ("retention.ms", "retention.bytes")
            if key in described and not _keeps(key, described[key], "-1")
        )
    # Smaller, and a user whose entry outgrew it would have every click refused.
    with contextlib.suppress(KeyError, ValueError):
        if int(described["max.message.bytes"]) < CHANGELOG_MIN_MESSAGE_BYTES:
            losing["max.message.bytes"] = described["max.message.bytes"]
    if not losing:
        return
    found = ", ".join(f"{key}={value}" for key, value in losing.items())
    wanted = f"cleanup.policy=compact,max.message.bytes={CHANGELOG_MIN_MESSAGE_BYTES}"
    raise TopicLayoutError(
        f"{topic} cannot keep users' state ({found}): a restarted worker recovers each "
        "user's entry from it, and an entry may take up to the producer's 1 MB. Set "
        f"{wanted} or more on it (kafka-configs.sh --alter --entity-type topics "
        f"--entity-name {topic} --add-config {wanted}), or delete it with the workers "
        "stopped and let a worker create it"
    )


def _keeps(key: str, value: str, kept: str) -> bool:
    if key == "cleanup.policy":
        return "compact" not in value.replace(" ", "").split(",")
    try:
        return int(value) < 0  # retention.ms, retention.bytes: -1 is no limit
    except ValueError:
        return value == kept


async def partition_ids(settings: Settings, topic: str) -> set[int]:
    """The partitions of ``topic`` as the broker reports them now (empty: no such topic).

    An aiokafka consumer's ``partitions_for_topic`` only reads its cached metadata, which
    on Kafka holds no topic until the consumer uses one (its first metadata request asks
    for none; noida-db answers it with every topic: docs/kafka.md), so ask the broker.
    """
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.effective_bootstrap_servers.split(","),
        client_id=f"{settings.consumer_group}-admin",
        **settings.aiokafka_options(),  # type: ignore[arg-type]
    )
    try:
        await admin.start()
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return {
        p["partition"]
        for t in described
        if t["topic"] == topic and not t["error_code"]
        for p in t["partitions"]
    }


def producer(settings: Settings) -> KafkaProducer:
    check_connection(settings)  # a wrong setting fails here, in one line, not in a retry loop
    return KafkaProducer(
        bootstrap_servers=settings.effective_bootstrap_servers,
        acks="all",
        linger_ms=5,
        **settings.kafka_client_options(),
    )


def produce(settings: Settings, topic: str, messages: Iterable[tuple[str, Any]]) -> int:
    """Send (key, JSON-serialisable value) pairs; returns how many were sent."""
    client = producer(settings)
    count = 0
    try:
        for key, value in messages:
            data = value if isinstance(value, bytes) else json.dumps(value).encode()
            client.send(topic, key=key.encode(), value=data)
            count += 1
        client.flush()
    finally:
        client.close()
    return count


def read_topic(
    settings: Settings, topic: str, idle_timeout_s: float = 2.0
) -> Iterator[tuple[str | None, bytes]]:
    """Every message of a topic from the beginning to its current end, as (key, value)."""
    check_connection(settings)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.effective_bootstrap_servers,
        enable_auto_commit=False,
        consumer_timeout_ms=int(idle_timeout_s * 1000),
        **settings.kafka_client_options(),
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if end[tp] > 0}
        while remaining:
            batch = consumer.poll(timeout_ms=int(idle_timeout_s * 1000))
            if not batch:
                break
            for tp, records in batch.items():
                for record in records:
                    # A producer's key need not be UTF-8: shown with U+FFFD, never raised.
                    key = record.key.decode(errors="replace") if record.key is not None else None
                    yield key, record.value
                if consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    finally:
        consumer.close()
