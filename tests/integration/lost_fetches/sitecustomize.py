"""Loaded by a worker started with this directory on PYTHONPATH: its consumer loses
records it has fetched, once, as seen at rebalances (README, "Known problems").

``LOSE_FETCHED`` names the topic (a suffix of its name) whose records the first batch
that has any of them loses: the consumer's position has moved past them, and neither the
agents nor the table recovery ever see them. ``LOSE_FETCHED_COUNT`` (default: all of
that batch) limits how many are lost.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from typing import Any

TOPIC_SUFFIX = os.environ.get("LOSE_FETCHED", "")
COUNT = int(os.environ.get("LOSE_FETCHED_COUNT", "1000000"))

if TOPIC_SUFFIX:
    from faust.transport.consumer import Consumer

    _getmany = Consumer.getmany
    _state = {"lost": 0, "done": False}

    async def _losing_getmany(self: Any, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        losing = False
        async for tp, message in _getmany(self, timeout):
            if not _state["done"] and tp.topic.endswith(TOPIC_SUFFIX):
                losing = True
                if _state["lost"] < COUNT:
                    _state["lost"] += 1
                    print(f"FAULT lost {tp} offset {message.offset}", file=sys.stderr)
                    continue
            yield tp, message
        if losing:
            _state["done"] = True

    Consumer.getmany = _losing_getmany  # type: ignore[method-assign]
