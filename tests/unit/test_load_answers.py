"""What ``streamrec load`` takes as the answer to one of its interactions: anyone can
write the recommendations and dead-letter topics, and a record there that was no list, or
a dead letter quoting JSON nested past the parser's depth, killed its reader thread (every
later list lost); a list for another user carrying one of its event ids was scored as
the list served."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from streams.events import DeadLetter, Reason, Recommendations, RecommendedItem
from streams.load import letter_of, list_answering


def recommendations(user: str, event_id: str) -> bytes:
    return Recommendations(
        user_id=user,
        items=[
            RecommendedItem(
                item_id="i1", score=1.0, title="", reasons=[Reason(source="x", score=1.0)]
            )
        ],
        trigger_event_id=event_id,
        based_on_events=1,
        generated_at=datetime.now(UTC),
        model_version="v",
    ).to_bytes()


def letter(raw: str, topic: str = "interactions") -> bytes:
    return DeadLetter(
        source_topic=topic,
        partition=0,
        offset=1,
        key="ann",
        reason="schema",
        error="e",
        raw=raw,
        failed_at=datetime.now(UTC),
    ).to_bytes()


@pytest.mark.parametrize(
    "value",
    [None, b"", b"not json", b"[" * 100_000, b"[1, 2]", b'{"user_id": "ann"}', b"\xff\xfe"],
)
def test_a_record_that_is_no_list_answers_nothing(value: bytes | None) -> None:
    assert list_answering(value, {"e-1": "ann"}) is None


def test_only_the_list_of_the_event_s_own_user_answers_it() -> None:
    assert list_answering(recommendations("mallory", "e-1"), {"e-1": "ann"}) is None
    assert list_answering(recommendations("ann", "e-2"), {"e-1": "ann"}) is None
    answer = list_answering(recommendations("ann", "e-1"), {"e-1": "ann"})
    assert answer is not None and answer.trigger_event_id == "e-1"


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"[" * 100_000,
        letter("[" * 3_000),  # what the worker writes for a value of 3,000 "["
        letter("not json"),
        letter("[1, 2]"),
        letter(json.dumps({"event_id": 7})),
        letter(json.dumps({"event_id": "e-1"}), topic="items"),
    ],
)
def test_a_record_that_is_no_letter_of_an_interaction_answers_nothing(
    value: bytes | None,
) -> None:
    assert letter_of(value, "interactions") is None


def test_a_dead_letter_of_an_interaction_answers_it_with_its_reason() -> None:
    value = letter(json.dumps({"event_id": "e-1", "user_id": "ann"}))
    assert letter_of(value, "interactions") == ("e-1", "schema")
