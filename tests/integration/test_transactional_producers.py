"""Records from transactional producers, through a real broker and a real worker.

Teams' producers may write in transactions (Kafka Streams or Flink exactly-once, or any
producer with a ``transactional.id``). Faust read ``read_uncommitted``, so a click whose
producer aborted its transaction was applied as any other; and a partition whose log
ended with a transaction's control record was taken for a stalled one and read again
every ``delivery_stalled_after_s`` (``streams/kafka_compat/read_committed.py``,
``delivery_watchdog.py``). ``streamrec replay`` read the aborted clicks back too.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from streams.admin import produce
from streams.broker import Broker
from streams.replay import ReplayRead, read_interactions
from streams.settings import Settings
from tests.conftest import TopicReader, isolated_settings
from tests.integration.helpers import (
    click,
    compat_fired,
    recommendations_for,
    start_worker_with_catalog,
    wait_until_committed,
)

pytestmark = pytest.mark.integration

#: One transaction: whether it commits, and its records (partition, key, value).
Transaction = tuple[bool, Sequence[tuple[int | None, str, dict[str, Any]]]]


def produce_in_transactions(settings: Settings, transactions: Sequence[Transaction]) -> None:
    """Send each transaction's records, then commit or abort it, as a transactional
    producer of another team would."""

    async def send() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.effective_bootstrap_servers.split(","),
            transactional_id=f"other-team-{settings.consumer_group}",
            **settings.aiokafka_options(),
        )
        await producer.start()
        try:
            for commit, records in transactions:
                await producer.begin_transaction()
                for partition, key, value in records:
                    await producer.send_and_wait(
                        settings.topic_interactions,
                        json.dumps(value).encode(),
                        key=key.encode(),
                        partition=partition,
                    )
                if commit:
                    await producer.commit_transaction()
                else:
                    await producer.abort_transaction()
        finally:
            await producer.stop()

    asyncio.run(send())


def test_an_aborted_transaction_s_events_are_never_applied_and_committed_ones_are(
    broker: Broker, tmp_path: Path
) -> None:
    settings = isolated_settings(broker, tmp_path)
    worker = start_worker_with_catalog(settings)
    recs = TopicReader(settings, settings.topic_recommendations)
    try:
        produce(settings, settings.topic_interactions, [("tia", click("t-0", "tia", "space-1"))])
        produce_in_transactions(
            settings,
            [
                (True, [(None, "tia", click("t-1", "tia", "jazz-1", minute=1))]),
                (
                    False,
                    [
                        (None, "tia", click("t-2", "tia", "jazz-2", minute=2)),
                        (None, "tia", click("t-3", "tia", "jazz-3", "purchase", minute=3)),
                    ],
                ),
                (True, [(None, "tia", click("t-4", "tia", "cook-1", minute=4))]),
            ],
        )
        produce(
            settings,
            settings.topic_interactions,
            [("tia", click("t-5", "tia", "cook-2", minute=5))],
        )
        got = recs.wait_for(lambda m: recommendations_for(m, "t-5") is not None, timeout_s=90)
        assert recommendations_for(got, "t-1").based_on_events == 2
        assert recommendations_for(got, "t-4").based_on_events == 3
        assert recommendations_for(got, "t-5").based_on_events == 4  # t-0, t-1, t-4, t-5
        assert recommendations_for(got, "t-2") is None
        assert recommendations_for(got, "t-3") is None
        # Left out, not refused: an aborted record is no dead letter.
        assert worker.stats()["dead_letters"] == {}
        # The aborted records are in the log all the same (the test sent what it meant to).
        interactions = TopicReader(settings, settings.topic_interactions)
        logged = interactions.wait_for(lambda m: len(m) >= 6, timeout_s=30)
        interactions.close()
        assert {json.loads(v)["event_id"] for _, v in logged} >= {"t-2", "t-3"}
    finally:
        recs.close()
        worker.stop()


def test_a_log_ending_in_a_transaction_s_markers_is_not_taken_for_a_stall(
    broker: Broker, tmp_path: Path
) -> None:
    stalled_after_s = 3.0
    settings = isolated_settings(
        broker, tmp_path, partitions=2, delivery_stalled_after_s=stalled_after_s
    )
    worker = start_worker_with_catalog(settings)
    recs = TopicReader(settings, settings.topic_recommendations)
    try:
        # The catalog's partitions, quiet since, are not behind: only the markers can be.
        wait_until_committed(settings, settings.topic_items)
        # Partition 0 ends with a commit marker; partition 1 with an aborted transaction.
        produce_in_transactions(
            settings,
            [
                (True, [(0, "una", click("m-1", "una", "jazz-1", minute=1))]),
                (False, [(1, "ute", click("m-2", "ute", "jazz-2", minute=2))]),
            ],
        )
        recs.wait_for(lambda m: recommendations_for(m, "m-1") is not None, timeout_s=90)
        time.sleep(stalled_after_s)  # past the stall time of the delivery just made
        before = compat_fired(worker)["watchdog_reread"]
        time.sleep(4 * stalled_after_s)
        assert compat_fired(worker)["watchdog_reread"] == before
        assert recommendations_for(recs.wait_for(lambda m: True), "m-2") is None
        assert worker.stats()["processed"][settings.topic_interactions] == 1
    finally:
        recs.close()
        worker.stop()


def test_a_replay_of_the_log_leaves_aborted_events_out(broker: Broker, tmp_path: Path) -> None:
    settings = isolated_settings(broker, tmp_path, partitions=2)
    # Partition 0 ends with an aborted transaction: nothing a poll returns is past it.
    produce_in_transactions(
        settings,
        [
            (True, [(0, "una", click("r-1", "una", "jazz-1", minute=1))]),
            (True, [(1, "ute", click("r-2", "ute", "jazz-2", minute=2))]),
            (False, [(0, "una", click("r-3", "una", "jazz-3", minute=3))]),
        ],
    )
    read: list[ReplayRead] = []
    reader = threading.Thread(target=lambda: read.append(read_interactions(settings)), daemon=True)
    reader.start()
    reader.join(timeout=30)
    assert read, "the replay's read of the log did not end"
    assert [event.event_id for event in read[0].events] == ["r-1", "r-2"]
