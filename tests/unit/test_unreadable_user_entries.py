"""A user's stored entry that this version cannot read (a crafted or corrupted record on
the users table's changelog) costs that user their history, never their events, and
never the worker's start."""

from __future__ import annotations

import json
import logging
import math
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.serializers import codecs

from streams.events import Recommendations
from streams.settings import Settings
from streams.users_table import NAME, users_table
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
    # Bookkeeping unlike what the handler writes: a NaN or a float offset passed every
    # comparison (each later event vanished), the others dead-lettered each later event.
    {"offsets": {"0": float("nan")}},
    {"offsets": {"0": 1e30}},
    {"offsets": {"0": None}},
    {"offsets": {"x": 3}},
    {"offsets": {"0": 3}, "positions": {"0:3": 5}},
    {"offsets": {"0": 3}, "positions": {"nocolon": "e-0"}},
    {"offsets": {"0": 3}, "legacy_offsets": {"0": "3"}},
    {"pending": {"nocolon": "{}"}},
    {"pending": {"0:1": 5}},
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


def test_a_deep_changelog_value_reads_as_no_entry() -> None:
    assert codecs.get_codec(NAME).loads(b"[" * 100_000 + b"]" * 100_000) is None


def test_a_changelog_record_whose_key_is_not_a_user_id_is_skipped_and_the_batch_restored() -> None:
    """A JSON object as a key is not hashable: the batch's restore raised, and Faust's
    recovery retried it forever."""
    logging.disable(logging.CRITICAL)
    try:
        table = users_table(faust.App("t", broker="kafka://127.0.0.1:1", store="memory://"), 1)
    finally:
        logging.disable(logging.NOTSET)
    topic = table.changelog_topic

    def record(key: bytes, offset: int) -> SimpleNamespace:
        message = SimpleNamespace(
            key=key, value=b"{}", partition=0, offset=offset, topic="c", headers=[]
        )
        key_ = topic.schema.loads_key(table.app, message, serializer=topic.key_serializer)
        value = topic.schema.loads_value(table.app, message, serializer=topic.value_serializer)
        return SimpleNamespace(key=key_, value=value, message=message)

    keys = [b'"ann"', b"{}", b"[[1]]", b"null", b"7", b'"cy"']
    table.apply_changelog_batch([record(key, n) for n, key in enumerate(keys)])
    assert sorted(table.data) == ["ann", "cy"]


def crafted_pending(at: str, changes: dict[str, Any], user: str = "ann") -> str:
    partition, offset = at.split(":")
    return json.dumps(
        {
            "type": "changes",
            "event_id": "e-5",
            "user_id": user,
            "source_partition": int(partition),
            "source_offset": int(offset),
            "changes": changes,
            "user_steps": {},
        }
    )


@pytest.mark.parametrize(
    "pending",
    [
        crafted_pending("0:5", {"item-1": {"trending": {"at": math.inf}}}),
        crafted_pending("0:5", {"item-2": {"item-item": {"count": -1e308}}}),
        crafted_pending("0:5", {"item-2": {"item-item": {"count": 10**400}}}),
        # Another event's position: applied, it would make the replica skip that event.
        crafted_pending("0:9", {"item-1": {"trending": {"at": 1.7e9}}}),
        crafted_pending("0:5", {"item-1": {"trending": {"at": 1.7e9}}}, user="bob"),
        "{not json",
    ],
)
def test_stored_changes_unlike_the_workers_are_neither_applied_nor_resent(
    tmp_path, pending: str
) -> None:
    """A redelivered event re-sends the item changes its entry kept; those are read back
    from the table, so they are checked as the log's records are."""
    handler = Handler(tmp_path)
    handler.users["ann"] = {
        "state": {},
        "offsets": {"0": 5},
        "positions": {"0:5": "e-5"},
        "pending": {"0:5": pending},
    }
    before = item_side_of(handler)
    assert handler.deliver(5, "e-5", "item-1") == []
    assert item_side_of(handler) == before
    assert not handler.handler.item_side.applied_locally
    assert [m.trigger_event_id for m in lists_of(handler.deliver(6, "e-6", "item-2"))] == ["e-6"]


def item_side_of(handler: Handler) -> tuple[bytes, ...]:
    sources = handler.handler.hybrid.sources
    return (
        sources["trending"].log_mass.tobytes(),
        sources["item-item"].counts.tobytes(),
    )
