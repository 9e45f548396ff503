"""The pause after an empty fetch: it pauses, and a fetcher closing during it stops cleanly."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from streams.kafka_compat import fetch_backoff


async def _run(got: bool, cancel_after_s: float | None, monkeypatch: Any) -> tuple[Any, float]:
    async def answered(self: Any, *args: Any, **kwargs: Any) -> bool:
        return got

    monkeypatch.setattr(fetch_backoff, "_original_proc_fetch_request", answered)
    monkeypatch.setattr(fetch_backoff, "_backoff_s", 0.2)
    started = time.perf_counter()
    task = asyncio.ensure_future(fetch_backoff._proc_fetch_request_with_backoff(object()))
    if cancel_after_s is not None:
        await asyncio.sleep(cancel_after_s)
        task.cancel()  # what aiokafka's Fetcher.close does to its pending requests
    result = await task  # Fetcher.close awaits them: this must not raise
    return result, time.perf_counter() - started


def test_an_empty_fetch_pauses_and_a_full_one_does_not(monkeypatch: Any) -> None:
    assert asyncio.run(_run(False, None, monkeypatch))[1] >= 0.2
    assert asyncio.run(_run(True, None, monkeypatch))[1] < 0.1


def test_closing_the_fetcher_during_the_pause_ends_the_request_quietly(monkeypatch: Any) -> None:
    result, elapsed = asyncio.run(_run(False, 0.05, monkeypatch))
    assert result is False and elapsed < 0.2
