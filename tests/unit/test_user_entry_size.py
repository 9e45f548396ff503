"""A user's table entry fits the producer's limit as the users table writes it, whatever
the ids of the user's events and items (``streams/user_entry.py``).

Before: the entry was bounded by counts (10,000 items seen, 512 event ids twice) and
only its list and pending changes were measured, in UTF-8, while the table writes JSON
with non-ASCII escaped (an emoji is 12 bytes). One user's clicks with 250-emoji event ids
grew the entry past 1 MB after about 170 events, 256-emoji item ids after about 330
items, 256-character ASCII item ids after about 3,000: a real worker's producer then
crashed on the changelog record and the worker exited
(``tests/integration/test_user_entry_size.py``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from streams.bounds import RECORD_OVERHEAD_BYTES
from streams.delivery_book import MAX_POSITIONS
from streams.events import MAX_TITLE_CHARS, DeadLetter, Recommendations
from streams.user_entry import (
    EVENT_IDS_SHARE,
    POSITIONS_SHARE,
    SEEN_SHARE,
    entry_size,
    within_shares,
    written_size,
)
from tests.unit.interaction_handler import Handler, SentTo

EMOJI = "\U0001f600"
#: Faust's producer refuses a record over this (its ``producer_max_request_size``).
LIMIT = 1_000_000


class Bot:
    """One user's clicks through the worker's interaction handler, dead letters kept."""

    def __init__(self, data_dir: Path, items: list[str], title: str = "t") -> None:
        self.h = Handler(data_dir)
        settings = self.h.settings
        self.h.handler.outbox.topics[settings.topic_dead_letters] = SentTo(
            settings.topic_dead_letters, self.h.sent
        )
        self.h.handler.outbox.max_request_bytes = LIMIT
        rng = np.random.default_rng(3)
        for item in items:
            self.h.handler.hybrid.add_item(item, title, rng.normal(size=8))
        self.offset = 0

    def click(self, event_id: str, item: str) -> list[tuple[str, bytes]]:
        value = {
            "event_id": event_id,
            "user_id": "bot",
            "item_id": item,
            "kind": "click",
            "ts": 1_767_225_600 + self.offset,
        }
        message = SimpleNamespace(
            topic=self.h.settings.topic_interactions,
            partition=0,
            offset=self.offset,
            timestamp=None,
        )
        record = SimpleNamespace(key=b"bot", value=json.dumps(value).encode(), message=message)
        self.offset += 1
        before = len(self.h.sent)
        asyncio.run(self.h.handler.process(record))
        return self.h.sent[before:]

    @property
    def entry(self) -> dict[str, Any]:
        return self.h.users["bot"]

    def record_size(self) -> int:
        """The changelog record the table writes for the user's entry."""
        return written_size("bot") + written_size(self.entry)


def listed(sent: list[tuple[str, bytes]], topic: str) -> Recommendations:
    (value,) = [v for t, v in sent if t == topic]
    return Recommendations.model_validate_json(value)


def test_the_longest_titles_and_ids_leave_the_lists_less_room_and_the_user_answered(
    tmp_path: Path,
) -> None:
    """Titles and ids at their bounds, all emoji: the latest list, the pending changes and
    the recent items took 480 kB beside the lists' shares, and from the 102nd click every
    click of the user was refused, a plain one too. The shares now shrink instead."""
    items = [EMOJI * 250 + f"{n:06d}" for n in range(200)]
    bot = Bot(tmp_path, [*items, "plain"], title=EMOJI * MAX_TITLE_CHARS)
    topic = bot.h.settings.topic_recommendations
    largest = 0
    for n, item in enumerate([*items, "plain"]):
        sent = bot.click(EMOJI * 250 + f"{n:06d}", item)
        assert listed(sent, topic).based_on_events == n + 1
        largest = max(largest, bot.record_size())
    assert largest <= LIMIT - RECORD_OVERHEAD_BYTES
    assert not [v for t, v in bot.h.sent if t == bot.h.settings.topic_dead_letters]
    assert bot.entry["state"]["history"]["seen"][-1] == "plain"


@pytest.mark.parametrize(
    ("event_id", "item_id", "events"),
    [
        (lambda n: EMOJI * 250 + f"{n:06d}", lambda n: f"item-{n % 6}", 400),
        (lambda n: f"e-{n}", lambda n: EMOJI * 250 + f"{n:06d}", 500),
        (lambda n: f"e-{n}", lambda n: f"{n:06d}" + "x" * 250, 4_000),
        (lambda n: "\x00" * 250 + f"{n:06d}", lambda n: "\x00" * 250 + f"{n:06d}", 700),
    ],
    ids=["emoji-event-ids", "emoji-item-ids", "long-ascii-item-ids", "nul-ids"],
)
def test_a_user_s_entry_fits_the_producer_s_limit_as_written_whatever_their_ids(
    tmp_path: Path, event_id: Any, item_id: Any, events: int
) -> None:
    """Every click answered with a list, none dead-lettered, the entry's record within
    the limit after each; the newest remembered ids are the ones kept."""
    items = sorted({item_id(n) for n in range(events)})
    bot = Bot(tmp_path, items)
    topic = bot.h.settings.topic_recommendations
    largest = 0
    for n in range(events):
        sent = bot.click(event_id(n), item_id(n))
        assert listed(sent, topic).based_on_events == n + 1
        largest = max(largest, bot.record_size())
    assert largest <= LIMIT - RECORD_OVERHEAD_BYTES
    assert not [v for t, v in bot.h.sent if t == bot.h.settings.topic_dead_letters]
    state, positions = bot.entry["state"], bot.entry["positions"]
    assert state["event_ids"][-1] == event_id(events - 1)
    assert list(positions.values())[-1] == event_id(events - 1)
    assert state["history"]["seen"][-1] == item_id(events - 1)
    assert written_size(state["history"]["seen"]) <= SEEN_SHARE
    assert written_size(state["event_ids"]) <= EVENT_IDS_SHARE
    assert written_size(positions) <= POSITIONS_SHARE


def test_ids_trimmed_to_fit_still_tell_the_newest_repeats_and_duplicates(
    tmp_path: Path,
) -> None:
    """With emoji event ids past their share: the last event redelivered is a repeat (its
    list sent again), and its id at a new offset a duplicate."""
    bot = Bot(tmp_path, [f"item-{n}" for n in range(6)])
    for n in range(300):
        bot.click(EMOJI * 250 + f"{n:06d}", f"item-{n % 6}")
    last = EMOJI * 250 + f"{299:06d}"
    bot.offset = 299
    again = bot.click(last, "item-5")
    assert listed(again, bot.h.settings.topic_recommendations).trigger_event_id == last
    bot.offset = 300
    (letter,) = [
        DeadLetter.model_validate_json(v)
        for t, v in bot.click(last, "item-5")
        if t == bot.h.settings.topic_dead_letters
    ]
    assert letter.reason == "duplicate"


def test_refused_events_do_not_grow_the_entry_past_the_limit(tmp_path: Path) -> None:
    """A refused event's position is remembered too (its redelivery is then a repeat):
    before, 400 refused clicks with emoji event ids grew the entry past the limit."""
    bot = Bot(tmp_path, [f"item-{n}" for n in range(6)])
    for n in range(120):
        bot.click(EMOJI * 250 + f"{n:06d}", f"item-{n % 6}")
    reasons = []
    for n in range(120, 520):
        sent = bot.click(EMOJI * 250 + f"{n:06d}", "no-such-item")
        reasons += [
            DeadLetter.model_validate_json(v).reason
            for t, v in sent
            if t == bot.h.settings.topic_dead_letters
        ]
        assert bot.record_size() <= LIMIT - RECORD_OVERHEAD_BYTES
    assert set(reasons) == {"unknown-item"} and len(reasons) == 400
    sent = bot.click("after", "item-1")
    assert listed(sent, bot.h.settings.topic_recommendations).based_on_events == 121


def test_within_shares_keeps_the_newest_and_leaves_a_small_entry_as_it_is() -> None:
    small = {
        "state": {"history": {"seen": ["a", "b"]}, "event_ids": ["e1"]},
        "positions": {"0:1": "e1"},
    }
    assert within_shares(small) == small
    seen = [f"{n:05d}" + "y" * 250 for n in range(5_000)]
    positions = {f"0:{n}": EMOJI * 256 for n in range(MAX_POSITIONS)}
    entry = {"state": {"history": {"seen": seen}, "event_ids": seen[:512]}, "positions": positions}
    cut = within_shares(entry)
    assert cut["state"]["history"]["seen"] == seen[-len(cut["state"]["history"]["seen"]) :]
    assert SEEN_SHARE - 300 < written_size(cut["state"]["history"]["seen"]) <= SEEN_SHARE
    assert list(cut["positions"])[-1] == f"0:{MAX_POSITIONS - 1}"
    assert written_size(cut["positions"]) <= POSITIONS_SHARE
    assert entry["positions"] is positions and len(positions) == MAX_POSITIONS  # unchanged
    # Positions count at their full share: one more refused event's position still fits.
    empty = {"positions": {}}
    assert entry_size("bot", empty) == 5 + written_size(empty) - 2 + POSITIONS_SHARE


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(max_size=12)
        # ASCII alone, where the fast measure applies: each character it must escape.
        | st.text(st.characters(max_codepoint=127), max_size=12)
        | st.integers(),
        max_size=30,
    )
)
@example(["\x7f"])  # DEL: escaped by the encoder, once measured as itself
def test_ids_are_measured_as_written_without_encoding_them(ids: list) -> None:
    """The fast measure of a list of ids is the encoder's, whatever the ids hold, and an
    entry measured with its items seen apart is the entry as the codec writes it."""
    from streams.user_entry import _ids_size, _size, written_size

    assert _ids_size(ids) == _size(ids) == written_size(ids)
    entry = {"state": {"history": {"seen": ids, "last": ids[:2]}, "x": "é"}, "positions": {}}
    assert entry_size("ann", entry) == written_size("ann") + written_size(entry) - 2 + (
        POSITIONS_SHARE
    )
