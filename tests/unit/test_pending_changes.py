"""A user's entry keeps an event's item changes only until they are durable: acknowledged
by the broker, or behind the offset the group committed (re-sent if redelivered before)."""

from __future__ import annotations

import asyncio
from functools import partial
from types import SimpleNamespace

from streams.records import Rejected
from tests.unit.interaction_handler import Handler


def test_acknowledged_item_changes_are_dropped_from_the_users_entry(tmp_path) -> None:
    handler = Handler(tmp_path).handler
    handler.acked_changes = {(0, 5), (1, 9)}
    pending = {"0:5": "acknowledged", "0:6": "in flight", "1:2": "in flight"}
    assert handler.not_durable(pending, "interactions") == {"0:6": "in flight", "1:2": "in flight"}
    assert handler.acked_changes == {(1, 9)}  # forgotten once dropped; the other user's stays


def test_an_event_whose_outputs_are_too_large_is_refused_before_anything_is_stored(
    tmp_path,
) -> None:
    """An oversized list raised as it was sent, after the user's state was stored and the
    item changes sent: the event was both applied and dead-lettered."""
    driven = Handler(tmp_path)
    handler = driven.handler
    # Below the size of one click's item changes and list.
    handler.outbox.max_request_bytes = 900
    letters: list[tuple[str, str]] = []
    handler.outbox.dead_letter = partial(capture, letters)  # type: ignore[method-assign]
    message = SimpleNamespace(topic="interactions", partition=0, offset=3, timestamp=None)
    value = b'{"event_id": "e-1", "user_id": "ann", "item_id": "item-1", "kind": "click", '
    value += b'"ts": "2026-01-01T00:00:00Z"}'
    asyncio.run(handler.process(SimpleNamespace(key=b"ann", value=value, message=message)))
    assert [reason for reason, _ in letters] == ["output-oversized"]
    assert driven.sent == []
    entry = driven.users["ann"]
    assert "state" not in entry and entry["offsets"] == {"0": 3}  # its redelivery: a repeat
    handler.outbox.max_request_bytes = 1_000_000
    assert [topic for topic, _ in driven.deliver(4, "e-2", "item-1")] == [
        "item-updates",
        "recommendations",
    ]


async def capture(letters: list[tuple[str, str]], record: object, rejected: Rejected) -> None:
    letters.append((rejected.reason, rejected.error))
