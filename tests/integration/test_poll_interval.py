"""Workers stay in their consumer group past the max poll interval: under a backlog, and
while they hold no partition.

Kafka drops a consumer that has not polled for ``max.poll.interval`` from its group, and
aiokafka rejoins on the next poll. A Faust worker does not poll while its fetcher hands
a poll's records to agents whose buffers are full, nor while it has no partition to
fetch from; once out of the group it stops its flow for the rebalance and waits, and
aiokafka waits for a poll: the worker is out of the group for good. Found with
MovieLens 100k produced at once (README "Known problems"). The tests shrink the interval
and the agents' buffer so the same situations arise within seconds. Each failed this
way before its fix: ``consumer_max_poll_records`` for the backlog,
``streams/kafka_compat/paused_poll.py`` for the worker without partitions.
"""

from __future__ import annotations

import time

import pytest

from streams.admin import produce
from streams.broker import LocalBroker
from streams.process import WorkerProcess
from tests.conftest import TopicReader, free_port, isolated_settings
from tests.integration.helpers import (
    click,
    event_log,
    readiness,
    ready,
    recommendations_for,
    start_worker_with_catalog,
)

pytestmark = pytest.mark.integration

#: Short enough for a test, long against the heartbeat (every 2 s with these sessions).
INTERVAL_S = 4


def test_a_backlog_is_drained_without_leaving_the_group(broker: LocalBroker, tmp_path) -> None:
    """A poll of at most ``consumer_max_poll_records`` is handed over within the interval.

    With polls unbounded (as before: up to 16 MB per partition) the whole 600-event
    backlog came in one poll, the fetcher waited for room in a 32-event buffer, and the
    worker left its group 4 s after it was ready and never answered again.
    """
    settings = isolated_settings(
        broker,
        tmp_path,
        consumer_max_poll_interval_s=INTERVAL_S,
        consumer_session_timeout_s=6,
        stream_buffer_max_events=32,
        consumer_max_poll_records=50,
        encoders="hashing",
    )
    events = event_log(11, 600)
    worker = start_worker_with_catalog(settings)
    try:
        worker.stop()  # the backlog waits for the worker, so its first fetch brings it all
        produce(
            settings,
            settings.topic_interactions,
            [
                (user, click(event_id, user, item, kind, minute=n))
                for n, (event_id, user, item, kind) in enumerate(events)
            ],
        )
        worker.start()
        reader = TopicReader(settings, settings.topic_recommendations)
        reader.wait_for(lambda messages: len(messages) >= len(events), timeout_s=150)
        reader.close()
        assert ready(worker), "the worker is still in its group, with its partitions"
    finally:
        worker.stop()


@pytest.mark.parametrize("paused_poll", ["installed", "disabled"])
def test_a_worker_without_partitions_takes_over_long_after_joining(
    broker: LocalBroker, tmp_path, paused_poll: str
) -> None:
    """One partition, two workers: one holds nothing for several poll intervals, then the
    other stops, and the idle one must take the partition and answer. Without
    ``paused_poll`` the idle worker leaves the group once the interval has passed and
    stays out ("the group is rebalancing"), as reported for Faust in robinhood/faust#517:
    the ``disabled`` case shows that this happens on each broker (a client bug)."""
    settings = isolated_settings(
        broker,
        tmp_path / "first",
        partitions=1,
        standby_replicas=0,  # or the second worker would read the changelog as a standby
        consumer_max_poll_interval_s=INTERVAL_S,
        consumer_session_timeout_s=6,
        encoders="hashing",
        kafka_compat_disabled=["poll_while_paused"] if paused_poll == "disabled" else [],
    )
    first = start_worker_with_catalog(settings, "worker-1.log")
    second_settings = settings.model_copy(
        update={"data_dir": tmp_path / "second", "web_port": free_port()}
    )
    second = WorkerProcess(second_settings, second_settings.data_dir / "worker.log")
    reader = TopicReader(settings, settings.topic_recommendations)
    try:
        second.start()
        # Watched from the moment it starts: without paused_poll the idle worker says so for
        # at most one interval before it leaves the group.
        idle_reason = "no partitions assigned to this worker"
        second.wait_until(
            lambda s: (
                sorted([ready(first), ready(second)]) == [False, True]
                and idle_reason in {readiness(first)[1], readiness(second)[1]}
            ),
            120,
            "one worker with the partition, one without",
        )
        busy, idle = (first, second) if ready(first) else (second, first)
        time.sleep(3 * INTERVAL_S)  # the idle worker has had nothing to poll all along
        if paused_poll == "disabled":
            for _ in range(2):  # out of its group, and still out an interval later
                assert readiness(idle)[1] == "the group is rebalancing"
                time.sleep(INTERVAL_S)
            return
        assert readiness(idle)[1] == idle_reason
        idle.wait_until(lambda s: s["catalog"] >= 30, 180, "catalog replicated")
        busy.stop()
        produce(settings, settings.topic_interactions, [("eve", click("idle-1", "eve", "jazz-1"))])
        got = reader.wait_for(lambda m: recommendations_for(m, "idle-1") is not None, 90)
        assert recommendations_for(got, "idle-1").based_on_events == 1
        assert idle.stats()["processed"].get(settings.topic_interactions, 0) == 1
    finally:
        for worker in (first, second):
            worker.stop()
        reader.close()
