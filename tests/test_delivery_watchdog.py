"""The delivery watchdog against a consumer double: it rewinds only a partition whose
position stays past its read offset with nothing delivered, and only when flow is on."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from faust.types import TP

from streams.delivery_watchdog import DeliveryWatchdog

STUCK, FINE, OTHER = TP("interactions", 0), TP("interactions", 1), TP("recommendations", 0)


class ConsumerDouble:
    def __init__(self) -> None:
        self.flow_active = True
        self._read_offset = {STUCK: 0, FINE: 4, OTHER: 0}
        self.positions = {STUCK: 6, FINE: 5, OTHER: 9}
        self.seeks: list[tuple[TP, int]] = []

    def assignment(self) -> set[TP]:
        return {STUCK, FINE, OTHER}

    async def position(self, tp: TP) -> int:
        return self.positions[tp]

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))
        self.positions[tp] = offset
        self._read_offset[tp] = offset


def run(watchdog: DeliveryWatchdog) -> list[TP]:
    return asyncio.run(watchdog.check())


def test_rewinds_a_stuck_partition_after_patience_checks() -> None:
    consumer = ConsumerDouble()
    watchdog = DeliveryWatchdog(SimpleNamespace(consumer=consumer), {"interactions"}, patience=3)
    assert run(watchdog) == [] and run(watchdog) == []
    assert run(watchdog) == [STUCK]
    assert consumer.seeks == [(STUCK, 0)], "the healthy and the unwatched partitions are left"


def test_progress_or_a_rebalance_resets_the_count() -> None:
    consumer = ConsumerDouble()
    watchdog = DeliveryWatchdog(SimpleNamespace(consumer=consumer), {"interactions"}, patience=2)
    run(watchdog)
    consumer._read_offset[STUCK] = 2  # a record was delivered: not stuck after all
    assert run(watchdog) == []
    consumer.flow_active = False  # rebalancing: nothing is expected to flow
    assert run(watchdog) == []
    consumer.flow_active = True
    assert run(watchdog) == [] and run(watchdog) == [STUCK]
