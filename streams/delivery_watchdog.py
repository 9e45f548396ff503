"""A watchdog for records that were fetched but never handed to an agent.

Seen with faust-streaming 0.15 on noida-db after a worker (re)joins its group: the
consumer's position moves past records that the agent never receives, while the read
offset (the last record handed over) stays put, and nothing more arrives until the next
restart. When a partition stays in that state for ``patience`` checks in a row, the
watchdog seeks it back to the read offset so the records are fetched and delivered
again. Redelivery is safe: interactions and item signals are applied at most once
(offsets and event ids are checked), so the cost of a false alarm is a re-read.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

log = logging.getLogger(__name__)


class DeliveryWatchdog:
    """Call ``check`` periodically (a Faust timer); returns the partitions it rewound."""

    def __init__(self, app: Any, topics: Collection[str], patience: int = 3) -> None:
        self.app = app  # its consumer is created when the worker starts, so looked up late
        self.topics = set(topics)
        self.patience = patience
        self._suspect: dict[Any, tuple[int, int, int]] = {}  # tp -> (read, position, count)

    async def check(self) -> list[Any]:
        consumer = self.app.consumer
        if not consumer.flow_active:
            self._suspect.clear()  # a rebalance or a recovery: nothing is expected to flow
            return []
        rewound = []
        for tp in consumer.assignment():
            if tp.topic not in self.topics:
                continue
            # The offset of the last record handed over (or, right after a seek, of the
            # next one); faust keeps it only in this attribute.
            read = consumer._read_offset.get(tp)
            position = await consumer.position(tp)
            if read is None or position is None or position <= read + 1:
                self._suspect.pop(tp, None)
                continue
            last = self._suspect.get(tp)
            count = last[2] + 1 if last and last[:2] == (read, position) else 1
            self._suspect[tp] = (read, position, count)
            if count >= self.patience:
                log.warning(
                    "%s[%s]: records %d..%d were fetched but not delivered for %d checks; "
                    "seeking back to %d",
                    tp.topic,
                    tp.partition,
                    read,
                    position - 1,
                    count,
                    read,
                )
                await consumer.seek(tp, read)
                self._suspect.pop(tp, None)
                rewound.append(tp)
        return rewound
