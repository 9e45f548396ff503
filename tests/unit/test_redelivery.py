"""An event redelivered after its user's state was saved is not applied again, and what
may have been lost with the worker is sent again: its item changes while not known
durable, and its list when it is still the user's latest.

Found under load in the rebalance test: a worker stopped between saving a user's state
and sending the list; the worker that took the partition over found the event applied
and sent nothing, so two events never got a list. The handler runs here on its own (no
broker, no Faust); the messages it would send are collected instead.
"""

from __future__ import annotations

import pytest

from streams.events import ItemChanges, Recommendations
from streams.records import Rejected
from streams.settings import Settings
from tests.unit.interaction_handler import Handler


def lists(sent: list[tuple[str, bytes]]) -> list[Recommendations]:
    topic = Settings().topic_recommendations
    return [Recommendations.model_validate_json(v) for t, v in sent if t == topic]


def test_a_redelivered_latest_event_gets_its_list_again_and_nothing_is_applied_twice(
    tmp_path,
) -> None:
    handler = Handler(tmp_path)
    first = handler.deliver(3, "e-1", "item-1")
    assert [m.trigger_event_id for m in lists(first)] == ["e-1"]
    state = handler.users["ann"]["state"]

    again = handler.deliver(3, "e-1", "item-1")  # the worker stopped after saving ann
    assert lists(again) == lists(first), "the same list, sent again"
    changes = [v for t, v in again if t == Settings().topic_item_updates]
    assert [ItemChanges.model_validate_json(v).event_id for v in changes] == ["e-1"]
    assert handler.users["ann"]["state"] == state, "not applied twice"


def test_a_redelivered_event_with_a_newer_list_sends_no_stale_list(tmp_path) -> None:
    handler = Handler(tmp_path)
    handler.deliver(3, "e-1", "item-1")
    handler.deliver(4, "e-2", "item-2")
    assert lists(handler.deliver(3, "e-1", "item-1")) == []
    assert [m.based_on_events for m in lists(handler.deliver(4, "e-2", "item-2"))] == [2]


def test_a_new_event_at_an_offset_already_applied_is_refused_not_taken_for_a_repeat(
    tmp_path,
) -> None:
    """A broker that lost records gave their offsets to new ones (streams/delivery_book.py):
    the worker refuses the new event with its reason (a dead letter) instead of skipping it
    as redelivered, and applies nothing for it."""
    handler = Handler(tmp_path)
    handler.deliver(3, "e-1", "item-1")
    state = handler.users["ann"]["state"]
    with pytest.raises(Rejected) as refused:
        handler.deliver(3, "e-2", "item-2")
    assert refused.value.reason == "offset-reused" and "'e-2'" in refused.value.error
    assert handler.users["ann"]["state"] == state
    assert [m.trigger_event_id for m in lists(handler.deliver(4, "e-2", "item-2"))] == ["e-2"]


def test_a_refused_event_redelivered_is_a_repeat_not_a_second_dead_letter(tmp_path) -> None:
    """An event refused after it was found new (here: an unknown item) keeps its position:
    redelivered after a later event of the user (a rewind), it is recognised as itself,
    not dead-lettered again as an offset the broker reused."""
    handler = Handler(tmp_path)
    with pytest.raises(Rejected) as refused:
        handler.deliver(3, "e-1", "no-such-item")
    assert refused.value.reason == "unknown-item"
    handler.deliver(4, "e-2", "item-2")
    assert handler.deliver(3, "e-1", "no-such-item") == []  # a repeat: nothing sent, no raise
