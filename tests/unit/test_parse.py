"""How the agents classify a raw message before any state is touched (no broker needed)."""

from __future__ import annotations

import json

import pytest

from streams.events import Interaction, ItemUpload
from streams.records import Rejected, parse

GOOD = {
    "event_id": "e1",
    "user_id": "u1",
    "item_id": "i1",
    "kind": "click",
    "ts": "2026-01-01T00:00:00Z",
}


def reason(model, raw, key) -> str:
    with pytest.raises(Rejected) as info:
        parse(model, raw, key)
    return info.value.reason


def test_good_message_parses_and_key_may_be_absent() -> None:
    assert parse(Interaction, json.dumps(GOOD).encode(), "u1").user_id == "u1"
    assert parse(Interaction, json.dumps(GOOD).encode(), None).item_id == "i1"


@pytest.mark.parametrize(
    ("raw", "key", "expected"),
    [
        (b"{not json", "u1", "invalid-json"),
        (b"", "u1", "invalid-json"),
        (None, "u1", "schema"),
        (b"[1, 2]", "u1", "schema"),
        (json.dumps({**GOOD, "kind": "teleport"}).encode(), "u1", "schema"),
        (json.dumps({**GOOD, "value": "NaN"}).encode(), "u1", "schema"),
        (json.dumps(GOOD).encode(), "someone-else", "key-mismatch"),
    ],
)
def test_bad_interactions_are_rejected_with_a_reason(raw, key, expected) -> None:
    assert reason(Interaction, raw, key) == expected


def test_item_key_must_match_item_id() -> None:
    raw = json.dumps({"item_id": "a", "title": "A"}).encode()
    assert parse(ItemUpload, raw, "a").title == "A"
    assert reason(ItemUpload, raw, "b") == "key-mismatch"
