"""A user's stored entry that this version cannot read (a crafted or corrupted record on
the users table's changelog) costs that user their history, never their events, and
never the worker's start."""

from __future__ import annotations

from typing import Any

import pytest
from faust.serializers import codecs

from streams.events import Recommendations
from streams.settings import Settings
from streams.users_table import NAME
from tests.unit.interaction_handler import Handler

UNREADABLE: list[Any] = [
    "a string",
    [1, 2, 3],
    42,
    {"offsets": "x"},
    {"positions": 5},
    {"state": "x"},
    {"state": {"history": {"seen": [1, 2], "own": {"cf": "@@"}}}},
    {"state": {"history": {"own": {"cf": [1.0, 2.0]}}}},
    {"state": {"history": {"own": {"content": {"a": 1}}}}},
    {"state": {"history": {"recent": "x"}}},
    {"pending": ["x"]},
    {"latest": "x"},
    {"state": {"history": [[7, 1.0]]}},  # the first stored format, an int for an id
]


@pytest.mark.parametrize("entry", UNREADABLE)
def test_an_unreadable_entry_starts_the_user_afresh_and_their_event_is_served(
    tmp_path, entry: Any
) -> None:
    handler = Handler(tmp_path)
    handler.users["ann"] = entry
    sent = handler.deliver(3, "e-1", "item-1")
    topic = Settings().topic_recommendations
    lists = [Recommendations.model_validate_json(v) for t, v in sent if t == topic]
    assert [m.trigger_event_id for m in lists] == ["e-1"] and lists[0].based_on_events == 1
    stored = handler.handler.hybrid.load_state(handler.users["ann"]["state"])
    assert stored.events_applied == 1
    assert handler.handler.hybrid.catalog.ids == [f"item-{n}" for n in range(6)]
    assert [m.trigger_event_id for m in lists_of(handler.deliver(4, "e-2", "item-2"))] == ["e-2"]


def lists_of(sent: list[tuple[str, bytes]]) -> list[Recommendations]:
    topic = Settings().topic_recommendations
    return [Recommendations.model_validate_json(v) for t, v in sent if t == topic]


@pytest.mark.parametrize("raw", [b"not json{", b"\xff\xfe", b'{"state": ', b""])
def test_a_changelog_value_that_is_not_json_reads_as_no_entry(raw: bytes) -> None:
    codec = codecs.get_codec(NAME)
    assert codec.loads(raw) is None
    entry = {"state": {"event_ids": ["e-1"]}, "offsets": {"0": 3}}
    assert codec.loads(codec.dumps(entry)) == entry
    assert codec.dumps(entry) == codecs.get_codec("json").dumps(entry)
