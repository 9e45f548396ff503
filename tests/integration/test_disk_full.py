"""A worker whose data disk fills up: it keeps serving lists, waits, and catches up.

The embedded Qdrant memory-maps its files, so a write to a full disk killed the worker
with SIGBUS (measured, on a 200 MB disk filled by another file: signal 7, no message).
The store now keeps ``min_free_disk_mb`` in reserve and the item side waits while the
disk is under it (``models/vector_store/edge.py``, ``streams/replica.py``).

The disk is a real tmpfs, mounted by the test (root on Linux; skipped elsewhere).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.admin import produce
from streams.broker import Broker
from tests.conftest import TopicReader, isolated_settings
from tests.integration.helpers import click, recommendations_for, start_worker_with_catalog

pytestmark = pytest.mark.integration


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=200m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(bytes(1 << 20))
        except OSError:  # ENOSPC: the disk is full
            pass
    return filler


def test_a_full_data_disk_pauses_the_item_side_and_lists_are_still_served(
    broker: Broker, small_disk: Path, tmp_path: Path
) -> None:
    settings = isolated_settings(
        broker, small_disk / "data", encoders="hashing", min_free_disk_mb=64
    )
    # Its log on another disk, as a container's standard output would be.
    worker = start_worker_with_catalog(settings, log_name=str(tmp_path / "worker.log"))
    recs = TopicReader(settings, settings.topic_recommendations)
    try:
        items = worker.stats()["items"]
        filler = fill(small_disk)
        produce(settings, settings.topic_items, [("new-1", {"item_id": "new-1", "title": "New"})])
        produce(settings, settings.topic_interactions, [("ann", click("d-1", "ann", "space-1"))])
        recs.wait_for(lambda m: recommendations_for(m, "d-1") is not None, timeout_s=60)
        stats = worker.wait_until(
            lambda s: s["item_side_waiting_for_disk"], timeout_s=30, what="the item side waits"
        )
        assert stats["items"] == items, "nothing is written to the full disk"

        filler.unlink()
        worker.wait_until(lambda s: s["items"] == items + 1, timeout_s=60, what="caught up")
        produce(
            settings, settings.topic_interactions, [("ann", click("d-2", "ann", "new-1", minute=1))]
        )
        got = recs.wait_for(lambda m: recommendations_for(m, "d-2") is not None, timeout_s=60)
        assert recommendations_for(got, "d-2").based_on_events == 2
        assert not worker.stats()["item_side_waiting_for_disk"]
    finally:
        recs.close()
        worker.stop()


def test_with_the_users_table_on_a_full_disk_clicks_wait_and_none_is_lost(
    broker: Broker, small_disk: Path, tmp_path: Path
) -> None:
    settings = isolated_settings(
        broker,
        small_disk / "data",
        encoders="hashing",
        min_free_disk_mb=64,
        users_store="rocksdb",
    )
    worker = start_worker_with_catalog(settings, log_name=str(tmp_path / "worker.log"))
    recs = TopicReader(settings, settings.topic_recommendations)
    try:
        produce(settings, settings.topic_interactions, [("bo", click("w-1", "bo", "space-1"))])
        recs.wait_for(lambda m: recommendations_for(m, "w-1") is not None, timeout_s=60)
        filler = fill(small_disk)
        produce(
            settings, settings.topic_interactions, [("bo", click("w-2", "bo", "jazz-1", minute=1))]
        )
        time.sleep(5)
        assert recommendations_for(recs.wait_for(lambda m: True), "w-2") is None, "it waits"
        filler.unlink()
        got = recs.wait_for(lambda m: recommendations_for(m, "w-2") is not None, timeout_s=60)
        assert recommendations_for(got, "w-2").based_on_events == 2
        assert worker.stats()["dead_letters"] == {}
    finally:
        recs.close()
        worker.stop()
