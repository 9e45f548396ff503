"""Repeats are recognised by event id, not by offset alone (streams/delivery_book.py): the
bookkeeping driven without Faust, as the worker drives it for one user."""

from __future__ import annotations

import random
from typing import Any

from streams.delivery_book import MAX_POSITIONS, DeliveryBook


class User:
    """One user's table entry and what the worker did with each record."""

    def __init__(self) -> None:
        self.entry: dict[str, Any] = {}
        self.applied: list[str] = []
        self.refused: list[tuple[str, str]] = []
        self.repeats: list[str] = []

    def deliver(self, offset: int, event_id: str, partition: int = 0) -> str:
        book = DeliveryBook(self.entry)
        decision = book.decide(partition, offset, event_id)
        if decision.verdict == "apply":
            self.applied.append(event_id)
            self.entry = {**self.entry, **book.after(partition, offset, event_id)}
        elif decision.verdict == "repeat":
            self.repeats.append(event_id)
        else:
            self.refused.append((event_id, decision.reason))
        return decision.verdict


def test_a_record_delivered_again_is_a_repeat_at_its_position_and_after_a_rewind() -> None:
    user = User()
    for offset in range(5):
        assert user.deliver(offset, f"e-{offset}") == "apply"
    assert user.deliver(3, "e-3") == "repeat"  # redelivered after a restart
    assert [user.deliver(o, f"e-{o}") for o in range(5)] == ["repeat"] * 5  # rewound to 0
    assert user.applied == [f"e-{o}" for o in range(5)]


def test_events_at_offsets_the_broker_reused_are_dead_lettered_not_skipped() -> None:
    """The hostile-user finding: noida-db, killed, lost acknowledged records and gave their
    offsets to later ones; the worker took three new events of one user for repeats."""
    user = User()
    for offset in (10, 11, 12):
        user.deliver(offset, f"before-{offset}")
    # Records 11 and 12 were lost with the broker; the next ones got their offsets.
    assert user.deliver(11, "after-1") == "refuse"
    assert user.deliver(12, "after-2") == "refuse"
    assert user.deliver(13, "after-3") == "apply"
    assert user.refused == [("after-1", "offset-reused"), ("after-2", "offset-reused")]
    # Produced again from the dead letters they get new offsets and are applied once.
    assert user.deliver(14, "after-1") == "apply" and user.deliver(15, "after-2") == "apply"
    assert user.deliver(14, "after-1") == "repeat"


def test_an_event_at_a_passed_offset_older_than_what_is_remembered_is_undecidable() -> None:
    user = User()
    for offset in range(MAX_POSITIONS + 10):
        user.deliver(offset, f"e-{offset}")
    assert user.deliver(3, "e-3") == "refuse"  # applied long ago, or new: cannot tell
    assert user.refused == [("e-3", "undecidable-repeat")]
    assert user.deliver(MAX_POSITIONS + 5, f"e-{MAX_POSITIONS + 5}") == "repeat"


def test_partitions_are_kept_apart_and_an_entry_from_before_keeps_the_offset_rule() -> None:
    user = User()
    user.deliver(7, "e-7", partition=0)
    assert user.deliver(2, "p1-2", partition=1) == "apply"  # another partition's offsets
    legacy = DeliveryBook({"offsets": {"0": 7}})  # written before positions were kept
    assert legacy.decide(0, 5, "anything").verdict == "repeat"
    assert legacy.decide(0, 8, "anything").verdict == "apply"


def test_no_event_is_skipped_silently_whatever_the_broker_redelivers_or_reuses() -> None:
    """Random rewinds and offset reuse: every event is applied once, or dead-lettered;
    a record is taken for a repeat only when its event id was applied."""
    rng = random.Random(17)
    for _ in range(200):
        user, log, next_id = User(), [], 0
        for _ in range(rng.randint(5, 60)):
            action = rng.random()
            if action < 0.2 and log:  # a rewind: redeliver from an earlier offset
                for offset, event_id in log[rng.randrange(len(log)) :]:
                    user.deliver(offset, event_id)
            elif action < 0.3 and log:  # the broker loses the tail; offsets are reused
                log = log[: rng.randrange(len(log))]
            offset = len(log)
            log.append((offset, f"e-{next_id}"))
            user.deliver(offset, f"e-{next_id}")
            next_id += 1
        assert len(user.applied) == len(set(user.applied)), "an event applied twice"
        assert set(user.repeats) <= set(user.applied), "a repeat of an event never applied"
        handled = set(user.applied) | {event_id for event_id, _ in user.refused}
        assert handled == {f"e-{n}" for n in range(next_id)}, "an event skipped silently"


def test_a_legacy_entry_keeps_its_offsets_as_repeats_once_it_has_positions() -> None:
    """An entry written before positions were kept (offsets only) gets positions with its
    next event; records at or below its old offsets stay repeats after that."""
    legacy = {"offsets": {"0": 41}}
    entry = DeliveryBook(legacy).after(0, 42, "e-42")
    book = DeliveryBook(entry)
    assert book.decide(0, 40, "e-40").verdict == "repeat"
    assert book.decide(0, 42, "e-other").verdict == "refuse"
    assert DeliveryBook(book.after(0, 43, "e-43")).decide(0, 41, "e-41").verdict == "repeat"
