"""The delivery watchdog's decision: which partitions have gone quiet, and which of those
still have records past their committed offset (the re-read itself runs against a real
worker in the restart and crash tests)."""

from __future__ import annotations

import time

from faust.types import TP

from streams.delivery_watchdog import DeliveryWatchdog, behind

SERVED, SILENT, OTHER = TP("interactions", 0), TP("interactions", 1), TP("dead-letters", 0)


def test_only_watched_partitions_without_a_recent_delivery_are_quiet() -> None:
    watchdog = DeliveryWatchdog(app=None, topics={"interactions"}, stalled_after_s=10.0)
    now = time.monotonic()
    assigned = [SERVED, SILENT, OTHER]
    assert watchdog.quiet(assigned, now, ready_since=now - 5) == []  # ready too recently
    watchdog.delivered(SERVED)
    assert watchdog.quiet(assigned, now + 5, ready_since=now - 20) == [SILENT]
    assert watchdog.quiet(assigned, now + 15, ready_since=now - 20) == [SERVED, SILENT]


def test_a_quiet_partition_is_stalled_only_if_records_wait_past_its_commit() -> None:
    ends = {SERVED: 7, SILENT: 9, OTHER: 0}
    committed = {SERVED: 7, SILENT: 3, OTHER: None}
    assert behind(ends, committed) == {SILENT: 3}
    assert behind({SILENT: 4}, {SILENT: None}) == {SILENT: None}  # never committed
