"""The delivery watchdog's decisions: which partitions have gone quiet, which of those
still have records past their committed offset, and which changelog partitions a table
recovery waits for in vain (the re-reads themselves run against real workers in the
restart, crash, rebalance and broker-restart tests)."""

from __future__ import annotations

import time

from faust.types import TP

from streams.kafka_compat.delivery_watchdog import DeliveryWatchdog, behind, recovery_stalled

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


def test_a_recovery_is_read_again_where_a_changelog_partition_stopped_receiving() -> None:
    done, waiting, quiet_since_start = (TP("users-changelog", p) for p in range(3))
    offsets = {done: 7, waiting: 3, quiet_since_start: -1}
    highwaters = {done: 7, waiting: 9, quiet_since_start: 22}
    started = 100.0
    received = {waiting: 108.0}
    assert recovery_stalled(offsets, highwaters, received, started, 105.0, 10.0) == {}
    assert recovery_stalled(offsets, highwaters, received, started, 111.0, 10.0) == {
        quiet_since_start: 0
    }
    assert recovery_stalled(offsets, highwaters, received, started, 119.0, 10.0) == {
        waiting: 4,
        quiet_since_start: 0,
    }
    assert recovery_stalled({}, {done: None}, {}, started, 200.0, 10.0) == {}  # empty log
