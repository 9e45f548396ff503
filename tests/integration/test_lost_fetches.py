"""A worker whose consumer loses fetched records still recovers its table and handles
every event.

Seen at rebalances on these machines (README, "Known problems"): records fetched from
the broker that never reach the table recovery or the agent, while the consumer's
position has moved past them. Here the worker is started with a fault injected at that
very place (``lost_fetches/sitecustomize.py``: the first batch with records of one topic
loses them), so the recovery of the delivery watchdog and the agents' offset
continuity check are exercised on every run, not only when the race happens.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.admin import produce
from streams.broker import LocalBroker
from streams.process import WorkerProcess
from streams.settings import Settings
from tests.conftest import TopicReader, isolated_settings
from tests.integration.helpers import (
    click,
    compat_fired,
    ready,
    recommendations_for,
    start_worker_with_catalog,
)

pytestmark = pytest.mark.integration

FAULTS = Path(__file__).parent / "lost_fetches"


def restart_losing(
    settings: Settings,
    worker: WorkerProcess,
    topic_suffix: str,
    count: int | None,
    monkeypatch: pytest.MonkeyPatch,
) -> WorkerProcess:
    worker.stop()
    monkeypatch.setenv("PYTHONPATH", str(FAULTS))
    monkeypatch.setenv("LOSE_FETCHED", topic_suffix)
    if count is not None:
        monkeypatch.setenv("LOSE_FETCHED_COUNT", str(count))
    restarted = WorkerProcess(settings, settings.data_dir / "restarted.log")
    restarted.start()
    return restarted


def answer(settings: Settings, reader: TopicReader, event: dict, timeout_s: float = 90):
    produce(settings, settings.topic_interactions, [(event["user_id"], event)])
    got = reader.wait_for(
        lambda m: recommendations_for(m, event["event_id"]) is not None, timeout_s
    )
    return recommendations_for(got, event["event_id"])


def test_a_table_recovery_that_lost_its_records_reads_them_again(
    broker: LocalBroker, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = isolated_settings(broker, tmp_path, delivery_stalled_after_s=4, encoders="hashing")
    worker = start_worker_with_catalog(settings)
    reader = TopicReader(settings, settings.topic_recommendations)
    try:
        for n, item in enumerate(["jazz-1", "jazz-2"]):
            answer(settings, reader, click(f"t-{n}", "fay", item, minute=n))
        worker = restart_losing(settings, worker, "users-changelog", None, monkeypatch)
        worker.wait_until(lambda s: ready(worker), 90, "table recovered")
        assert (
            answer(settings, reader, click("t-2", "fay", "jazz-3", minute=2)).based_on_events == 3
        )
        fired = compat_fired(worker)
    finally:
        worker.stop()
        reader.close()
    assert "FAULT lost" in worker.log_path.read_text(errors="replace")  # the fault struck
    assert fired["recovery_reread"] >= 1, fired


def test_an_interaction_the_consumer_lost_is_read_again_and_handled(
    broker: LocalBroker, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = isolated_settings(broker, tmp_path, encoders="hashing")
    worker = start_worker_with_catalog(settings)
    reader = TopicReader(settings, settings.topic_recommendations)
    try:
        worker = restart_losing(settings, worker, settings.topic_interactions, 1, monkeypatch)
        worker.wait_until(lambda s: ready(worker), 90, "ready")
        produce(settings, settings.topic_interactions, [("gus", click("l-0", "gus", "cook-1"))])
        second = answer(settings, reader, click("l-1", "gus", "cook-2", minute=1))
        first = recommendations_for(reader.messages, "l-0")
        assert first is not None and first.based_on_events == 1, "the lost event was handled"
        assert second.based_on_events == 2, "after it, once"
        fired = compat_fired(worker)
    finally:
        worker.stop()
        reader.close()
    assert "FAULT lost" in worker.log_path.read_text(errors="replace")  # the fault struck
    assert fired["catch_up_read"] >= 1 and fired["catch_up_record"] >= 1, fired
