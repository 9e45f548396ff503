"""Which interactions of one user were applied, by position and by event id: what decides
whether a record the worker receives again is a repeat.

The worker remembers, in each user's table entry, the highest offset applied per source
partition and the event id applied at each of the user's recent positions. A record at
a position past the highest is new (the hybrid still refuses an event id it already
applied: a duplicate). A record at a position already passed is decided by its event id:

- applied before (at this position or another): a repeat, redelivered after a restart or
  a rewind; the worker re-sends what may have been lost with it, applies nothing;
- not applied, and the position is within what is remembered: a different event at an
  offset the broker gave out again after losing records (seen on noida-db killed with
  ``acks=all`` records unflushed). Refused to the dead-letter topic (``offset-reused``),
  not applied in place: the replicas recognise repeated item changes by their source
  offset (streams/replica.py), so they would drop its changes. Produced again from the
  dead letter it gets a new offset and is applied once;
- not applied, and the position older than everything remembered: it cannot be decided
  whether it was applied long ago or is new: dead-lettered (``undecidable-repeat``).

Entries written before positions were remembered carry only the offsets: a record at or
below them counts as a repeat, as it always did, also once the entry has positions (the
offsets it had then are kept as ``legacy_offsets``). A record refused after it was found
new (an unknown item, a non-finite value) has its position remembered too, so its
redelivery is a repeat, not a second dead letter with another reason.

>>> book = DeliveryBook({})
>>> book.decide(0, 5, "e-1").verdict
'apply'
>>> entry = book.after(0, 5, "e-1")
>>> DeliveryBook(entry).decide(0, 5, "e-1").verdict, DeliveryBook(entry).decide(0, 5, "e-9").verdict
('repeat', 'refuse')
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from streams.events import MAX_OFFSET

#: Positions remembered per user: as many as the event ids the user state remembers.
MAX_POSITIONS = 512
#: A partition, and a position ("partition:offset"), as the table's JSON keys hold them.
PARTITION = re.compile(r"\d{1,9}")
POSITION = re.compile(r"\d{1,9}:\d{1,19}")
#: Positions joined by newlines: a user's 512 are checked at each of their events, in one
#: match (a third of the time of one match per key).
_POSITIONS = re.compile(rf"{POSITION.pattern}(?:\n{POSITION.pattern})*")


@dataclass(frozen=True)
class Decision:
    """``apply`` (new), ``repeat`` (applied before, at ``applied_at``: "partition:offset"),
    or ``refuse`` (a dead letter: ``reason`` is its code, ``error`` says why)."""

    verdict: Literal["apply", "repeat", "refuse"]
    applied_at: str | None = None
    reason: str = ""
    error: str = ""


class DeliveryBook:
    """The bookkeeping of one user's table entry (its ``offsets`` and ``positions``)."""

    def __init__(self, entry: Mapping[str, Any]) -> None:
        """Raises ``ValueError`` where the entry's bookkeeping is not what ``after`` writes
        (a crafted or corrupted changelog record): a NaN offset passed every comparison,
        so each later event of the user vanished without a list or a dead letter."""
        #: Highest offset applied, per source partition (as a string, the table's JSON).
        self.offsets = _offsets(entry.get("offsets", {}), "offsets")
        #: "partition:offset" -> event id applied there, oldest first; None: a legacy entry.
        positions = entry.get("positions")
        self.positions: dict[str, str] | None = None
        if positions is not None:
            keys = "\n".join(positions) if isinstance(positions, dict) else ""
            if (
                not isinstance(positions, dict)
                or (positions and _POSITIONS.fullmatch(keys) is None)
                # A key holding a newline would pass as two.
                or keys.count("\n") != max(len(positions) - 1, 0)
                or not set(map(type, positions.values())) <= {str}
            ):
                raise ValueError("positions: not 'partition:offset' keys with event ids")
            self.positions = dict(positions)
        #: Offsets applied before positions were kept: at or below them, a repeat.
        self.legacy_offsets = (
            _offsets(entry["legacy_offsets"], "legacy_offsets")
            if "legacy_offsets" in entry
            else (self.offsets if positions is None else {})
        )

    def decide(self, partition: int, offset: int, event_id: str) -> Decision:
        highest = self.offsets.get(str(partition), -1)
        if offset > highest:
            return Decision("apply")
        key = f"{partition}:{offset}"
        if self.positions is None or offset <= self.legacy_offsets.get(str(partition), -1):
            return Decision("repeat", applied_at=key)  # passed before positions were kept
        for position, applied in self.positions.items():
            if applied == event_id:
                return Decision("repeat", applied_at=position)
        passed = f"offset {offset} of partition {partition} was passed (applied up to {highest})"
        oldest = min(
            (int(p.split(":")[1]) for p in self.positions if p.startswith(f"{partition}:")),
            default=None,
        )
        if oldest is not None and offset >= oldest:
            held = self.positions.get(key)
            before = f"event {held!r}" if held else "no event of this user"
            return Decision(
                "refuse",
                reason="offset-reused",
                error=(
                    f"{passed}, where {before} was applied, and event_id {event_id!r} never "
                    "was: the broker gave this offset out again after losing records; "
                    "produce this event again to apply it"
                ),
            )
        return Decision(
            "refuse",
            reason="undecidable-repeat",
            error=(
                f"{passed} and event_id {event_id!r} is not among the last {MAX_POSITIONS} "
                "applied for this user: a repeat older than what is remembered or an event "
                "at an offset the broker reused; produce it again if it is new"
            ),
        )

    def after(self, partition: int, offset: int, event_id: str) -> dict[str, Any]:
        """The entry's ``offsets`` and ``positions`` once this event is applied."""
        offsets = {
            **self.offsets,
            str(partition): max(offset, self.offsets.get(str(partition), -1)),
        }
        positions = dict(self.positions or {})
        positions[f"{partition}:{offset}"] = event_id
        while len(positions) > MAX_POSITIONS:
            del positions[next(iter(positions))]
        kept: dict[str, Any] = {"offsets": offsets, "positions": positions}
        if self.legacy_offsets:
            kept["legacy_offsets"] = self.legacy_offsets
        return kept


def _offsets(value: Any, name: str) -> dict[str, int]:
    """Offsets by partition, as ``after`` writes them, or ``ValueError``."""
    if not isinstance(value, dict) or not all(
        isinstance(key, str)
        and PARTITION.fullmatch(key)
        and type(offset) is int
        and -1 <= offset <= MAX_OFFSET
        for key, offset in value.items()
    ):
        raise ValueError(f"{name}: not offsets by partition")
    return dict(value)
