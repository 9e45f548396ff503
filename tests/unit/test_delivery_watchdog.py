"""The delivery watchdog's decisions: which partitions have gone quiet, which of those
still have records past their committed offset, and which changelog partitions a table
recovery waits for in vain (the re-reads themselves run against real workers in the
restart, crash, rebalance and broker-restart tests)."""

from __future__ import annotations

import asyncio
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


def test_a_range_with_nothing_to_deliver_is_looked_at_once_until_it_moves() -> None:
    looked: list[tuple[TP, int, int]] = []

    async def holds_records(tp: TP, first: int, end: int) -> bool:
        looked.append((tp, first, end))
        return tp == SERVED  # SILENT's range holds only a transaction's markers

    watchdog = DeliveryWatchdog(None, {"interactions"}, 10.0, holds_records)

    async def checks() -> list[bool]:
        return [
            await watchdog._holds(SILENT, 3, 5),
            await watchdog._holds(SILENT, 3, 5),  # remembered: not read again
            await watchdog._holds(SILENT, 3, 6),  # a record came: read again
            await watchdog._holds(SILENT, None, 2),  # never committed: from the start
            await watchdog._holds(SERVED, 4, 9),
        ]

    assert asyncio.run(checks()) == [False, False, False, False, True]
    assert looked == [(SILENT, 3, 5), (SILENT, 3, 6), (SILENT, 0, 2), (SERVED, 4, 9)]
