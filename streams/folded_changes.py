"""Which item changes a replica folded lately: what recognises a change sent again.

A worker that redoes events after a crash, or a rebalance, sends their item changes again
(``streams/interactions.py: _resend``), and every replica must fold each event's changes
once. A re-sent change has the position of its source interaction ("partition:offset"),
its user and its event, like the original. Only the changes of events the worker's
group had not committed yet are ever re-sent (the others are no longer pending in the
user's entry), so a re-sent change comes back within the commit lag of its partition:
seconds of events. Each source partition's latest ``per_partition`` positions are kept
with their user and event (about 3 MB for 10,000 with UUID event ids), and a change is
re-sent exactly when its (position, user, event) is among them.

Kept per user before (the highest source offset folded per user and partition), this
grew by about 240 bytes for every user a deployment ever saw, on every worker and in
every snapshot; now it is bounded by partitions, whatever the users. A record naming a
position of another user or event (a recreated topic's, a crafted one) is not taken for
a re-sent one, and a crafted offset far ahead no longer silences the changes of its
user's later events, as the highest offset per user did.

The worker does not re-send a change whose position the replica has ``passed``: an
event redelivered by a rewind of its group's offsets, days of events back, is found
applied, and its change, kept in the user's entry, reached the log long ago; beyond the
kept positions it would not be recognised.

>>> folded = FoldedChanges(per_partition=2)
>>> folded.add(0, 10, "ann", "e-1"); folded.add(0, 11, "bob", "e-2")
>>> folded.holds(0, 10, "ann", "e-1"), folded.holds(0, 10, "cy", "e-9")
(True, False)
>>> folded.add(0, 12, "ann", "e-3")   # the partition's oldest (offset 10) makes room
>>> folded.holds(0, 10, "ann", "e-1"), len(folded)
(False, 2)
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

#: Positions kept per source partition. A partition's re-sent changes are those its
#: group had not committed (Faust commits every 2.8 s): 10,000 holds a commit lag at
#: 3,500 events/s on one partition.
PER_PARTITION = 10_000
#: Source partitions kept: a record naming yet another one makes the partition folded
#: least lately give way, so crafted partition numbers cannot grow the replica's memory.
MAX_PARTITIONS = 256

_Key = tuple[int, str, str]
_ROW = "[partition, offset, user, event]"


class FoldedChanges:
    """The latest folded changes of each source partition, by (offset, user, event)."""

    def __init__(
        self, per_partition: int = PER_PARTITION, max_partitions: int = MAX_PARTITIONS
    ) -> None:
        self.per_partition = per_partition
        self.max_partitions = max_partitions
        #: Per partition, its positions oldest first; partitions folded least lately first.
        self._partitions: OrderedDict[int, OrderedDict[_Key, None]] = OrderedDict()

    def __len__(self) -> int:
        return sum(len(keys) for keys in self._partitions.values())

    def holds(self, partition: int, offset: int, user: str, event: str) -> bool:
        keys = self._partitions.get(partition)
        return keys is not None and (offset, user, event) in keys

    def add(self, partition: int, offset: int, user: str, event: str) -> None:
        keys = self._partitions.get(partition)
        if keys is None:
            if len(self._partitions) >= self.max_partitions:
                self._partitions.popitem(last=False)
            keys = self._partitions[partition] = OrderedDict()
        else:
            self._partitions.move_to_end(partition)
        keys[(offset, user, event)] = None
        keys.move_to_end((offset, user, event))
        if len(keys) > self.per_partition:
            keys.popitem(last=False)

    def passed(self, partition: int, offset: int) -> bool:
        """Whether ``per_partition`` changes of ``partition`` after ``offset`` were folded
        lately: a change of ``offset`` reached the log long before them."""
        keys = self._partitions.get(partition)
        return (
            keys is not None
            and len(keys) >= self.per_partition
            and offset < min(key[0] for key in keys)
        )

    def rows(self) -> list[list[Any]]:
        """``[partition, offset, user, event]`` of each, in the order ``from_rows`` restores."""
        return [[p, *key] for p, keys in self._partitions.items() for key in keys]

    @classmethod
    def from_rows(
        cls,
        rows: Any,
        per_partition: int = PER_PARTITION,
        max_partitions: int = MAX_PARTITIONS,
    ) -> FoldedChanges:
        """What ``rows`` wrote; ``ValueError`` or ``TypeError`` for anything else (a
        snapshot of an earlier version, or a crafted one)."""
        if not isinstance(rows, list) or len(rows) > per_partition * max_partitions:
            raise ValueError("folded changes: not a list of at most the positions kept")
        folded = cls(per_partition, max_partitions)
        for row in rows:
            if not isinstance(row, list) or len(row) != 4:
                raise ValueError(f"folded change {str(row)[:80]}: not {_ROW}")
            partition, offset, user, event = row
            if not (
                type(partition) is int
                and type(offset) is int
                and partition >= 0
                and offset >= 0
                and isinstance(user, str)
                and isinstance(event, str)
            ):
                raise ValueError(f"folded change {str(row)[:80]}: not {_ROW}")
            folded.add(partition, offset, user, event)
        return folded
