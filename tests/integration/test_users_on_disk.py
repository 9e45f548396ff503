"""The users table on disk (``users_store = "rocksdb"``): users survive restarts, and a
database that cannot be read is set aside and recovered from the changelog."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streams.admin import produce
from streams.broker import Broker
from tests.conftest import TopicReader, isolated_settings
from tests.integration.helpers import click, ready, recommendations_for, start_worker_with_catalog

pytestmark = pytest.mark.integration

USERS = [f"disk-{n}" for n in range(12)]


def test_users_on_disk_outlive_restarts_and_a_damaged_database_is_rebuilt(
    broker: Broker, tmp_path: Path
) -> None:
    settings = isolated_settings(
        broker, tmp_path / "data", encoders="hashing", users_store="rocksdb"
    )
    worker = start_worker_with_catalog(settings)
    recs = TopicReader(settings, settings.topic_recommendations)

    def clicks(round_: int) -> None:
        produce(
            settings,
            settings.topic_interactions,
            [(u, click(f"{u}-{round_}", u, f"space-{round_ + 1}", minute=round_)) for u in USERS],
        )
        got = recs.wait_for(
            lambda m: all(recommendations_for(m, f"{u}-{round_}") for u in USERS), timeout_s=90
        )
        # Every user's list counts every click so far: their entries came back whole.
        assert {recommendations_for(got, f"{u}-{round_}").based_on_events for u in USERS} == {
            round_ + 1
        }

    def restart() -> None:
        worker.stop()
        worker.start()
        deadline = time.monotonic() + 180
        while not ready(worker):
            assert time.monotonic() < deadline, "the restarted worker never became ready"
            time.sleep(0.5)

    try:
        clicks(0)
        tables = settings.data_dir / "faust"
        databases = sorted(tables.rglob("users-*.db"))
        assert len(databases) == settings.partitions
        restart()
        clicks(1)
        worker.stop()
        for database in databases:  # what a torn write or a bad disk leaves
            (database / "CURRENT").write_text("MANIFEST-999999\n")
        restart()
        clicks(2)
        assert sorted(tables.rglob("users-*.db.unreadable")) == [
            d.with_name(d.name + ".unreadable") for d in databases
        ]
    finally:
        recs.close()
        worker.stop()
