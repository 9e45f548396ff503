"""A user's entry keeps an event's item changes only until they are durable: acknowledged
by the broker, or behind the offset the group committed (re-sent if redelivered before)."""

from __future__ import annotations

from tests.unit.interaction_handler import Handler


def test_acknowledged_item_changes_are_dropped_from_the_users_entry(tmp_path) -> None:
    handler = Handler(tmp_path).handler
    handler.acked_changes = {(0, 5), (1, 9)}
    pending = {"0:5": "acknowledged", "0:6": "in flight", "1:2": "in flight"}
    assert handler.not_durable(pending, "interactions") == {"0:6": "in flight", "1:2": "in flight"}
    assert handler.acked_changes == {(1, 9)}  # forgotten once dropped; the other user's stays
