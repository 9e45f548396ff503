"""Incremental item-item cosine similarity over users' recent histories.

Two items are similar when the same users engage with both: ``sim(i, j) =
C[i, j] / sqrt(n[i] * n[j])`` where ``C`` counts co-engagements (an item engaged while
the other is in the user's last 20 items) and ``n`` counts engagements. A user's
candidates are scored by the similarity to each of their last 20 items, the newest
weighted most (``recency ** k`` for the item k places back).

By default every interaction counts (a film rated 2 was still watched, and says what
comes next) and recency is 0.9. ``ItemItemCosine(any_interaction=False, recency=1.0)``
is the plain reference: positive engagements only, all 20 items alike.

``C`` is sparse (``CoEngagements``): each item keeps a row of at most
``max_neighbours`` co-engaged items with their counts, so memory grows with
items x neighbours, never items squared. A full row makes room for a new neighbour by
the Space-Saving rule (Metwally et al., 2005): the least counted neighbour gives its
place, and its count, to the new one. The most co-engaged neighbours, the ones that
decide rankings, are kept with counts that are exact until the row first fills and
over-estimated by at most the row's smallest count after.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.sources.base import ItemDelta, Source, UserHistory, grown, held_up_to
from models.sources.changes import ids, number, only

#: The default bound of a row. On MovieLens 100k (1,682 items) 63 rows reach it and
#: item-item alone scores as with exact counts (HitRate@10 0.1950 against 0.1949; 512
#: neighbours: 0.1940). A row costs at most 8 bytes per neighbour: 8 KB per item.
MAX_NEIGHBOURS = 1024

_NO_ITEMS = np.zeros(0, dtype=np.int32)
_NO_COUNTS = np.zeros(0, dtype=np.float32)


class CoEngagements:
    """Sparse co-engagement counts: per item, its neighbours' indexes and counts.

    >>> co = CoEngagements(max_neighbours=2)
    >>> co.add(0, [1, 2]); co.add(0, [1])
    >>> co.get(0, 1), co.get(0, 2), co.get(0, 3)
    (2.0, 1.0, 0.0)
    >>> co.add(2, [0]); co.column([0, 1, 2], 1).tolist(), co.column([0, 1, 2], 0).tolist()
    ([2.0, 0.0, 0.0], [0.0, 0.0, 1.0])
    >>> co.add(0, [3])   # the row is full: 3 takes 2's place and count, plus one
    >>> co.row(0)[0].tolist(), co.row(0)[1].tolist()
    ([1, 3], [2.0, 2.0])
    """

    def __init__(self, max_neighbours: int = MAX_NEIGHBOURS) -> None:
        if max_neighbours < 1:
            raise ValueError("max_neighbours must be at least 1")
        self.max_neighbours = max_neighbours
        # One pair of arrays per item, filled up to ``sizes[item]`` and grown by doubling
        # up to ``max_neighbours``; items without neighbours share the empty arrays.
        self._items: list[np.ndarray] = []
        self._counts: list[np.ndarray] = []
        self.sizes = np.zeros(0, dtype=np.int32)
        #: ``add`` calls so far, and what ``column`` last concatenated (rows change only there).
        self._added = 0
        self._rows_of: tuple[tuple[int, tuple[int, ...]], np.ndarray, np.ndarray, np.ndarray] | None
        self._rows_of = None

    def __len__(self) -> int:
        """Rows held (items 0..len-1; the others have no neighbours)."""
        return len(self._items)

    def neighbours_held(self) -> int:
        """One past the largest neighbour index in any row (0: none)."""
        rows = zip(self._items, self.sizes[: len(self)], strict=True)
        return max((int(items[:size].max()) for items, size in rows if size), default=-1) + 1

    @property
    def entries(self) -> int:
        return int(self.sizes[: len(self)].sum())

    @property
    def nbytes(self) -> int:
        """Bytes held by the rows' arrays (their capacity, not just their entries)."""
        return sum(a.nbytes for a in self._items) + sum(c.nbytes for c in self._counts)

    def _ensure(self, item: int) -> None:
        missing = item + 1 - len(self._items)
        if missing > 0:
            self._items.extend([_NO_ITEMS] * missing)
            self._counts.extend([_NO_COUNTS] * missing)
            self.sizes = grown(self.sizes, item + 1)

    def row(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        """The item's neighbours and their counts (views: read only)."""
        if item >= len(self._items):
            return _NO_ITEMS, _NO_COUNTS
        n = int(self.sizes[item])
        return self._items[item][:n], self._counts[item][:n]

    def get(self, item: int, neighbour: int) -> float:
        neighbours, counts = self.row(item)
        at = np.flatnonzero(neighbours == neighbour)
        return float(counts[at[0]]) if len(at) else 0.0

    def column(self, items: Sequence[int], neighbour: int) -> np.ndarray:
        """``get(i, neighbour)`` for each of ``items``, read from their rows at once."""
        return self.columns(items, [neighbour])[:, 0]

    def columns(self, items: Sequence[int], neighbours: Sequence[int]) -> np.ndarray:
        """``get(i, n)`` for each of ``items`` (rows) and ``neighbours`` (columns), read
        from the items' rows in one pass.

        A list explains all its items against the same user's items: their rows are
        concatenated once and kept until the next ``add`` (one lookup per listed item and
        history item was once more than ranking took)."""
        key = (self._added, tuple(items))
        if self._rows_of is None or self._rows_of[0] != key:
            rows = [self.row(i) for i in items]
            self._rows_of = (
                key,
                np.concatenate([r[0] for r in rows]) if rows else _NO_ITEMS,
                np.concatenate([r[1] for r in rows]) if rows else _NO_COUNTS,
                np.repeat(np.arange(len(items)), [len(r[0]) for r in rows]),
            )
        _, held, counts, owners = self._rows_of
        wanted, column_of = np.unique(np.asarray(neighbours, dtype=np.int64), return_inverse=True)
        table = np.zeros((len(items), len(wanted)), dtype=np.float32)
        if len(wanted) and len(held):
            at = np.minimum(np.searchsorted(wanted, held), len(wanted) - 1)
            hits = np.flatnonzero(wanted[at] == held)  # a row holds a neighbour once
            table[owners[hits], at[hits]] = counts[hits]
        return table[:, column_of.reshape(-1)]

    def add(self, item: int, neighbours: Sequence[int], amount: float = 1.0) -> None:
        """Count ``amount`` more co-engagements of ``item`` with each of ``neighbours``
        (distinct indexes)."""
        if not len(neighbours):
            return
        self._added += 1
        self._ensure(item)
        wanted = np.asarray(neighbours, dtype=np.int32)
        n = int(self.sizes[item])
        held, counts = self._items[item], self._counts[item]
        if n:
            if len(wanted) == 1:  # one neighbour: the path of every earlier item's row
                at = np.flatnonzero(held[:n] == wanted[0])
                if len(at):
                    counts[at[0]] += amount
                    return
                new = wanted
            else:
                match = held[:n, None] == wanted[None, :]
                found = match.any(axis=0)
                counts[match.argmax(axis=0)[found]] += amount
                new = wanted[~found]
        else:
            new = wanted
        self._insert(item, new, amount)

    def add_to_each(self, items: Sequence[int], neighbour: int, amount: float = 1.0) -> None:
        """``add(item, [neighbour], amount)`` for each of ``items`` (distinct), their rows
        searched at once: a replay adds each click to the rows of the user's last items,
        and one search per row was most of item-item's learning."""
        if not len(items):
            return
        self._added += 1
        self._ensure(max(items))
        sizes = self.sizes[list(items)]
        rows = zip(items, sizes.tolist(), strict=True)
        held = np.concatenate([self._items[i][:n] for i, n in rows])
        found = np.flatnonzero(held == neighbour)  # a row holds a neighbour once
        ends = np.cumsum(sizes)
        owners = np.searchsorted(ends, found, side="right")
        slots = dict(zip(owners.tolist(), (found - (ends - sizes)[owners]).tolist(), strict=True))
        new = np.array([neighbour], dtype=np.int32)
        for position, item in enumerate(items):
            slot = slots.get(position)
            if slot is None:
                self._insert(item, new, amount)
            else:
                self._counts[item][slot] += amount

    def _insert(self, item: int, new: np.ndarray, amount: float) -> None:
        """Put ``new`` neighbours (none of them in the row yet) in the item's row."""
        if not len(new):
            return
        n = int(self.sizes[item])
        held, counts = self._items[item], self._counts[item]
        room = min(self.max_neighbours - n, len(new))
        if room > 0:
            if n + room > len(held):
                capacity = min(self.max_neighbours, max(n + room, 2 * len(held), 8))
                held = np.concatenate([held[:n], np.zeros(capacity - n, dtype=np.int32)])
                counts = np.concatenate([counts[:n], np.zeros(capacity - n, dtype=np.float32)])
                self._items[item], self._counts[item] = held, counts
            held[n : n + room] = new[:room]
            counts[n : n + room] = amount
            n += room
            self.sizes[item] = n
            new = new[room:]
        while len(new):
            # Space-Saving: each newcomer takes the place of one of the least counted
            # (in turns when more arrive at once than the row holds).
            arriving, new = new[:n], new[n:]
            smallest = np.argpartition(counts[:n], len(arriving) - 1)[: len(arriving)]
            held[smallest] = arriving
            counts[smallest] += amount

    def to_dense(self, n_items: int) -> np.ndarray:
        """The counts as an (n_items x n_items) matrix (tests, small catalogs only)."""
        dense = np.zeros((n_items, n_items), dtype=np.float32)
        for item in range(min(n_items, len(self))):
            neighbours, counts = self.row(item)
            keep = neighbours < n_items
            dense[item, neighbours[keep]] = counts[keep]
        return dense

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The rows in compressed sparse row form (what a checkpoint stores)."""
        sizes = self.sizes[: len(self)].astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        # Taken on the worker's event loop for a checkpoint: only the rows that hold
        # something are sliced (through ``row``, every row: 0.3 s at 100k items).
        held = np.flatnonzero(sizes).tolist()
        if held:
            rows = list(zip(held, sizes[held].tolist(), strict=True))
            items = np.concatenate([self._items[i][:n] for i, n in rows])
            counts = np.concatenate([self._counts[i][:n] for i, n in rows])
        else:
            items, counts = _NO_ITEMS, _NO_COUNTS
        return {"offsets": offsets, "items": items.astype(np.int32), "counts": counts}

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], max_neighbours: int = MAX_NEIGHBOURS
    ) -> CoEngagements:
        co = cls(max_neighbours)
        offsets, items, counts = arrays["offsets"], arrays["items"], arrays["counts"]
        sizes = np.diff(offsets)
        # What ``to_arrays`` writes: a negative neighbour failed every score reading its row.
        if not (
            offsets.ndim == items.ndim == counts.ndim == 1
            and len(offsets)
            and offsets[0] == 0
            and offsets[-1] == len(items) == len(counts)
            and ((sizes >= 0) & (sizes <= max_neighbours)).all()
            and (not len(items) or 0 <= items.min() <= items.max() <= np.iinfo(np.int32).max)
            and (counts >= 0).all()
        ):
            raise ValueError("co-engagement rows: not what a checkpoint writes")
        rows = len(offsets) - 1
        co.sizes = sizes.astype(np.int32)
        co._items, co._counts = [_NO_ITEMS] * rows, [_NO_COUNTS] * rows
        for row in np.flatnonzero(sizes).tolist():  # empty rows share the empty arrays
            start, end = int(offsets[row]), int(offsets[row + 1])
            co._items[row] = items[start:end].astype(np.int32)  # a copy: rows grow
            co._counts[row] = counts[start:end].astype(np.float32)
        return co


class ItemItemCosine(Source):
    """Item-item cosine over each user's last items (sparse co-occurrence counts).

    >>> from models.sources.base import UserHistory
    >>> source = ItemItemCosine()
    >>> a, b = UserHistory(), UserHistory()
    >>> for user, history, items in [("a", a, [0, 1]), ("b", b, [0, 1, 2])]:
    ...     for item in items:
    ...         source.learn_one(user, item, 1.0, 0.0, history); history.add(item, 1.0)
    >>> new = UserHistory(); new.add(0, 1.0)
    >>> print(source.score("c", new, 3, now=0.0).round(2))  # item 1 goes with item 0
    [0.   1.   0.71]
    >>> source.because_of("c", new, 1)
    0

    Memory: ``8 * max_neighbours`` bytes per item at most for the counts.
    """

    name = "item-item"

    def __init__(
        self,
        any_interaction: bool = True,
        recency: float = 0.9,
        max_neighbours: int = MAX_NEIGHBOURS,
    ) -> None:
        self.co = CoEngagements(max_neighbours)
        # float64: a float32 count stopped at 2**24 (a hot item's, within hours at 1,000
        # clicks/s), adding 1 rounding back to the same number.
        self.counts = np.zeros(0, dtype=np.float64)
        # 1 / sqrt(counts), 0 where nothing was counted: kept up to date with the counts
        # rather than recomputed over the catalog for every list.
        self._inverse = np.zeros(0, dtype=np.float32)
        self.any_interaction = any_interaction
        self.recency = recency

    def _history(self, history: UserHistory) -> list[int]:
        return list(history.last) if self.any_interaction else history.recent_items

    def user_step(
        self, user: str, item: int, weight: float, ts: float, history: UserHistory
    ) -> list[ItemDelta]:
        # The engaged item's owner counts it and its co-engagements; each earlier item's
        # owner counts the engaged item as co-engaged with it (C stays symmetric).
        others = sorted(set(self._history(history)) - {item})
        return [(item, {"count": 1.0, "co": others}), *((o, {"co": [item]}) for o in others)]

    def learn_one(
        self, user: str, item: int, weight: float, ts: float, history: UserHistory
    ) -> None:
        # user_step + apply without building the changes (replay speed; a test holds
        # them equal).
        others = sorted(set(self._history(history)) - {item})
        self._count(item, 1.0)
        self.co.add(item, others)
        self.co.add_to_each(others, item)

    def apply(self, item: int, change: dict[str, Any]) -> None:
        self._count(item, change.get("count", 0.0))
        self.co.add(item, change.get("co", []))

    def apply_each(self, changes: Sequence[ItemDelta]) -> None:
        """``apply`` each change; one event's changes add its item to each of the rows of
        the user's last items (``user_step``), and those rows are searched at once, as
        ``learn_one`` does (one search per row was most of a worker's item-side fold)."""
        alone: dict[int, list[int]] = {}  # the one co-engaged neighbour -> rows adding it
        for item, change in changes:
            co = change.get("co", [])
            if len(co) == 1 and change.get("count", 0.0) == 0.0:
                alone.setdefault(int(co[0]), []).append(item)
            else:
                self.apply(item, change)
        for neighbour, items in alone.items():
            self._count(max(items), 0.0)  # the arrays cover every row, as ``apply`` grows them
            self.co.add_to_each(items, neighbour)

    def check_change(self, change: Mapping[str, Any]) -> None:
        only(change, {"count", "co"})
        if "count" in change:
            number(change, "count", 0.0)
        if "co" in change:
            ids(change, "co")

    def _count(self, item: int, count: float) -> None:
        self.counts = grown(self.counts, item + 1)
        self._inverse = grown(self._inverse, item + 1)
        self.counts[item] += count
        if self.counts[item] > 0:  # in float32, as the weights it scales
            self._inverse[item] = 1.0 / np.sqrt(np.float32(self.counts[item]))

    def _weighted_rows(self, items: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The user's items' rows, concatenated, each count times the row's weight
        (``recency ** places back / sqrt(n_i)``)."""
        inverse = grown(self._inverse, max(items) + 1)
        weights = inverse[items] * self.recency ** np.arange(len(items) - 1, -1, -1)
        rows = [self.co.row(i) for i in items]
        neighbours = np.concatenate([r[0] for r in rows])
        counts = np.concatenate([r[1] for r in rows])
        return neighbours, counts * np.repeat(weights, [len(r[0]) for r in rows])

    def _scores_up_to(self, items: list[int], size: int) -> np.ndarray:
        """``sum_i w_i C[i, j]`` for j < ``size``: work in the rows' entries, not the catalog."""
        neighbours, counts = self._weighted_rows(items)
        keep = neighbours < size
        return np.bincount(neighbours[keep], weights=counts[keep], minlength=size)[:size]

    def score(self, user: str, history: UserHistory, n_items: int, now: float) -> np.ndarray:
        items = self._history(history)
        if not items or n_items == 0:
            return np.zeros(n_items)
        return self._scores_up_to(items, n_items) * grown(self._inverse, n_items)[:n_items]

    def score_items(
        self, user: str, history: UserHistory, items: np.ndarray, now: float
    ) -> np.ndarray:
        recent = self._history(history)
        scores = np.zeros(len(items))
        known = items < len(self.counts)  # the others: no one engaged with them yet
        if recent and known.any():
            totals = self._scores_up_to(recent, len(self.counts))
            scores[known] = totals[items[known]] * self._inverse[items[known]]
        return scores

    def because_of(self, user: str, history: UserHistory, item: int) -> int | None:
        return self.because_of_each(user, history, [item])[0]

    def because_of_each(
        self, user: str, history: UserHistory, items: Sequence[int]
    ) -> list[int | None]:
        """Per item, the user's item most similar to it (None where none is)."""
        mine = [i for i in self._history(history) if i < len(self.counts)]
        found: list[int | None] = [None] * len(items)
        known = [n for n, item in enumerate(items) if item < len(self.counts)]
        if not mine or not known:
            return found
        # sim(i, item) ordered over the user's items i: the item's own root is common.
        similarity = self.co.columns(mine, [items[n] for n in known])
        similarity *= self._inverse[mine][:, None]
        best, most = similarity.argmax(axis=0), similarity.max(axis=0)
        for column, n in enumerate(known):
            if most[column] > 0:
                found[n] = mine[int(best[column])]
        return found

    # -- the item side as arrays (checkpoints) ----------------------------------------

    def item_arrays(self) -> dict[str, np.ndarray]:
        # The rows' keys (offsets, items, counts) are prefixed: "counts" is taken.
        rows = {f"rows_{key}": value for key, value in self.co.to_arrays().items()}
        return {"counts": self.counts.copy(), "inverse": self._inverse.copy(), **rows}

    def load_item_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        counts = np.asarray(arrays["counts"], dtype=np.float64)
        inverse = np.asarray(arrays["inverse"], dtype=np.float32)
        if counts.ndim != 1 or inverse.ndim != 1 or (counts < 0).any() or (inverse < 0).any():
            raise ValueError("item-item engagement counts: not counts")
        self.counts, self._inverse = counts.copy(), inverse.copy()
        rows = {
            key[len("rows_") :]: value for key, value in arrays.items() if key.startswith("rows_")
        }
        self.co = CoEngagements.from_arrays(rows, self.co.max_neighbours)

    def items_held(self) -> int:
        # A row, even empty, is made only for an engaged item: none past the catalog.
        held = held_up_to(self.counts, self._inverse)
        return max(held, len(self.co), self.co.neighbours_held())
