"""A pause after an empty fetch, for brokers that answer empty fetches at once (noida-db only).

A Kafka broker holds a fetch until data arrives or ``fetch.max.wait.ms`` passes, so an
idle consumer costs nothing. noida-db (the local broker) answers at once, and aiokafka
then fetches again immediately: an idle worker spins a whole core, which on a small
machine halves the CPU left for the encoders. Pausing briefly after a fetch that
brought nothing bounds that loop. On a real broker an empty answer only comes after the
broker's own wait (``fetch.max.wait.ms``), so it is not installed there:
``tests/integration/test_broker_differences.py`` counts the fetches of an idle consumer on each
broker.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.consumer.fetcher import Fetcher

from streams.kafka_compat.counts import fire
from streams.kafka_compat.patching import ClassPatch

_original_proc_fetch_request = Fetcher._proc_fetch_request
_backoff_s = 0.0


async def _proc_fetch_request_with_backoff(self: Fetcher, *args: Any, **kwargs: Any) -> bool:
    got_something = await _original_proc_fetch_request(self, *args, **kwargs)
    if not got_something and _backoff_s > 0:
        fire("empty_fetch_pause")
        # The node stays "in flight" while this task sleeps, so no new fetch goes out.
        try:
            await asyncio.sleep(_backoff_s)
        except asyncio.CancelledError:
            # The fetcher is closing and awaits this task: end quietly, as aiokafka's own
            # request handler does, or the consumer's stop fails before closing its client.
            return False
    return got_something


def set_backoff(seconds: float) -> None:
    """How long every aiokafka consumer in this process pauses after an empty fetch."""
    global _backoff_s
    _backoff_s = seconds


PATCH = ClassPatch(
    "empty_fetch_backoff",
    Fetcher,
    "_proc_fetch_request",
    _proc_fetch_request_with_backoff,
    brokers=frozenset({"noida-db"}),
    reason="noida-db answers an empty fetch at once (no long-poll): an idle consumer spins",
)
