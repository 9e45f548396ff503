"""A record on the users table's changelog that this version cannot read (not JSON, or
JSON that is no user entry) never keeps a worker from starting and serving: before, one
such record made Faust's table recovery fail on it and read it again every 10 s, and
the restarted worker never became ready (``streams/users_table.py``)."""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer, KafkaProducer

from streams.admin import produce
from streams.broker import LocalBroker
from streams.process import WorkerProcess
from streams.settings import Settings
from tests.conftest import TopicReader, isolated_settings
from tests.integration.helpers import click, recommendations_for, start_worker_with_catalog

pytestmark = pytest.mark.integration


def changelog_key_of(settings: Settings, topic: str, user: str) -> bytes:
    """The key the users table wrote ``user``'s entry under."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.effective_bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    try:
        return next(m.key for m in consumer if user.encode() in m.key)
    finally:
        consumer.close()


def test_a_worker_restarts_past_unreadable_changelog_records_and_serves_those_users(
    broker: LocalBroker, tmp_path
) -> None:
    settings = isolated_settings(broker, tmp_path / "data", encoders="hashing")
    changelog = f"{settings.consumer_group}-users-changelog"
    reader = TopicReader(settings, settings.topic_recommendations)

    def click_and_wait(event_id: str, user: str, minute: int):
        event = click(event_id, user, "jazz-2", minute=minute)
        produce(settings, settings.topic_interactions, [(user, event)])
        messages = reader.wait_for(lambda m: recommendations_for(m, event_id) is not None, 120)
        return recommendations_for(messages, event_id)

    worker = start_worker_with_catalog(settings, "worker-1.log")
    try:
        for n, user in enumerate(["erin", "mallory"]):
            click_and_wait(f"a-{n}", user, n)
    finally:
        worker.stop()
    erin, mallory = (changelog_key_of(settings, changelog, u) for u in ("erin", "mallory"))
    producer = KafkaProducer(bootstrap_servers=settings.effective_bootstrap_servers)
    producer.send(changelog, key=erin, value=b"not json{")
    producer.send(changelog, key=mallory, value=b'"a string, not an entry"')
    producer.flush()
    producer.close()

    worker = WorkerProcess(settings, settings.data_dir / "worker-2.log")
    worker.start()
    try:
        worker.wait_until(lambda s: True, 180, "web server up")
        served = {
            user: click_and_wait(f"b-{n}", user, 10 + n)
            for n, user in enumerate(["erin", "mallory", "ann"])
        }
    finally:
        worker.stop()
        reader.close()
    # Their unreadable entries are gone: each starts afresh from this click.
    assert {user: r.based_on_events for user, r in served.items()} == {
        "erin": 1,
        "mallory": 1,
        "ann": 1,
    }
    log = (settings.data_dir / "worker-2.log").read_text()
    assert "users table: a changelog value that is not JSON read as none" in log
    assert "user mallory: stored entry unreadable, starting afresh" in log
