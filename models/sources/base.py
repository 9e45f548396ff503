"""What every candidate source shares: the catalog's item index, the user's recent history,
and the ``learn_one`` / ``score`` interface, split by owner (``user_step`` / ``apply``)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, KeysView, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.sources.changes import MAX_ID_CHARS, InvalidChange

#: What one source tells the owner of one item about one event: (item index, change).
#: A change is a dict of numbers, lists and numpy arrays (sent packed: models/packed.py);
#: any item indexes in it are under the key ``co``.
ItemDelta = tuple[int, dict[str, Any]]


class Catalog:
    """Item ids to dense indexes (0, 1, 2, ...) in arrival order; it only grows.

    >>> catalog = Catalog()
    >>> catalog.add("b"), catalog.add("a"), catalog.add("b")
    (0, 1, 0)
    >>> catalog.ids, catalog.index("a"), len(catalog)
    (['b', 'a'], 1, 2)
    """

    def __init__(self) -> None:
        self.ids: list[str] = []
        self._index: dict[str, int] = {}

    def add(self, item_id: str) -> int:
        if item_id not in self._index:
            self._index[item_id] = len(self.ids)
            self.ids.append(item_id)
        return self._index[item_id]

    def index(self, item_id: str) -> int:
        return self._index[item_id]

    def known_indexes(self, item_ids: Iterable[str]) -> list[int]:
        """The indexes of those of ``item_ids`` in the catalog, in their order."""
        return [i for i in map(self._index.get, item_ids) if i is not None]

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._index

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class UserHistory:
    """One user's engagements: the items seen (never recommended again) and the recent ones.

    ``seen`` keeps the latest ``max_seen`` distinct items the user engaged with: the whole
    history of almost every user, while a user's stored value stays bounded (a bot that
    clicks through a large catalog would otherwise grow it past a broker's message
    limit); past the bound the oldest may be recommended again. ``recent`` keeps the
    last ``size`` positively engaged items, newest last, with their weights; ``last``
    the last ``size`` items of any interaction (a low rating still says what the user
    watches). ``own`` holds each source's per-user state by source name (a CF factor, a
    content profile): everything about the user lives here, so it can be stored as one
    value by whoever owns the user.

    >>> history = UserHistory()
    >>> history.add(3, 1.0); history.add(5, -1.0)
    >>> data = history.to_dict(["a", "b", "c", "d", "e", "f"])
    >>> data["seen"], data["recent"], data["last"]
    (['d', 'f'], [['d', 1.0]], ['d', 'f'])
    >>> restored = UserHistory.from_dict(data, "abcdef".index)
    >>> restored.seen == history.seen and restored.last == history.last
    True
    >>> bounded = UserHistory(max_seen=2)
    >>> for item in (1, 2, 1, 3): bounded.add(item, 1.0)
    >>> sorted(bounded.seen)
    [1, 3]
    """

    size: int = 20
    max_seen: int = 10_000
    #: ``seen`` from the least to the most recently engaged.
    seen_order: OrderedDict[int, None] = field(default_factory=OrderedDict)
    recent: deque[tuple[int, float]] = field(default_factory=deque)
    last: deque[int] = field(default_factory=deque)
    events: int = 0
    own: dict[str, Any] = field(default_factory=dict)

    @property
    def seen(self) -> KeysView[int]:
        """The items never recommended again (a set view)."""
        return self.seen_order.keys()

    def add(self, item: int, weight: float) -> None:
        self.seen_order[item] = None
        self.seen_order.move_to_end(item)
        while len(self.seen_order) > self.max_seen:
            self.seen_order.popitem(last=False)
        self.events += 1
        self.last.append(item)
        while len(self.last) > self.size:
            self.last.popleft()
        if weight > 0:
            self.recent.append((item, weight))
            while len(self.recent) > self.size:
                self.recent.popleft()

    @property
    def recent_items(self) -> list[int]:
        return [item for item, _ in self.recent]

    def to_dict(self, ids: Sequence[str], sources: dict[str, Source] | None = None) -> dict:
        """JSON-ready, with item ids for indexes (indexes are local to one process)."""
        sources = sources or {}
        return {
            "seen": [ids[i] for i in self.seen_order],
            "recent": [[ids[i], w] for i, w in self.recent],
            "last": [ids[i] for i in self.last],
            "events": self.events,
            "own": {
                name: sources[name].dump_user(value) if name in sources else value
                for name, value in self.own.items()
            },
        }

    @classmethod
    def from_dict(
        cls,
        data: dict,
        index: Callable[[str], int],
        sources: dict[str, Source] | None = None,
        size: int = 20,
    ) -> UserHistory:
        """The inverse of ``to_dict``; ``index`` maps an item id to its local index.

        Everything is read before ``index`` is called (it adds unknown ids to the
        catalog): a history that cannot be read raises ValueError or TypeError and leaves
        the catalog as it was (a crafted entry once put an int among the item ids)."""
        sources = sources or {}
        seen, last = list(data.get("seen", [])), list(data.get("last", []))
        recent = [(i, float(w)) for i, w in data.get("recent", [])]
        events = int(data.get("events", 0))
        own = {
            name: sources[name].load_user(value) if name in sources else value
            for name, value in data.get("own", {}).items()
        }
        ids = [*seen, *(i for i, _ in recent), *last]
        if not all(isinstance(i, str) and 0 < len(i) <= MAX_ID_CHARS for i in ids):
            raise ValueError("the stored history holds something other than item ids")
        if not all(math.isfinite(w) for _, w in recent):
            raise ValueError("the stored history holds a non-finite weight")
        return cls(
            size=size,
            seen_order=OrderedDict((index(i), None) for i in seen),
            recent=deque((index(i), w) for i, w in recent),
            last=deque(index(i) for i in last),
            events=events,
            own=own,
        )


def grown(array: np.ndarray, size: int, axes: tuple[int, ...] = (0,)) -> np.ndarray:
    """``array`` zero-padded along ``axes`` (one or two) to at least ``size`` (doubling,
    to amortise)."""
    if array.shape[axes[0]] >= size and (len(axes) == 1 or array.shape[axes[1]] >= size):
        return array  # the common case, called several times per event: no generator
    shape = list(array.shape)
    for a in axes:
        shape[a] = max(size, 2 * shape[a], 16)
    bigger = np.zeros(shape, dtype=array.dtype)
    bigger[tuple(slice(0, n) for n in array.shape)] = array
    return bigger


class Source(ABC):
    """A candidate source: learns from one event at a time, scores every item for a user.

    ``score`` returns one number per catalog item (higher is better; only the order
    among unseen items matters). ``because_of`` names the user's own item that best
    explains a recommendation, where the source can tell.

    Learning is split by owner, as in a deployment where users and items live in
    different partitions: ``user_step`` updates the user's side (in ``history.own``)
    reading the item side, and returns what each touched item's owner must ``apply``.
    Changes are additive, so owners may apply them in any order. ``learn_one`` does both
    at once (replay, tests).
    """

    name: str
    #: The vector store's named vector this source's candidates are retrieved from at
    #: scale (``retrieval_query`` asks it for the user's nearest items); None: the
    #: candidate stage takes the source's own best scores.
    retrieval_vector: str | None = None
    #: Whether ``user_step`` reads the item side (then redoing an event later, when the
    #: item side has moved on, would not give the same user state).
    user_step_reads_items: bool = False
    #: The sources whose item side this one reads (it learns nothing of its own): they
    #: must learn wherever this one runs.
    reads: tuple[str, ...] = ()

    def learn_one(
        self, user: str, item: int, weight: float, ts: float, history: UserHistory
    ) -> None:
        """Learn from ``user`` engaging ``item``; ``history`` is the user's, before this event."""
        for touched, change in self.user_step(user, item, weight, ts, history):
            self.apply(touched, change)

    def user_step(
        self, user: str, item: int, weight: float, ts: float, history: UserHistory
    ) -> list[ItemDelta]:
        """The user's side of ``learn_one``: update ``history.own``, return the item changes."""
        return []

    def apply(self, item: int, change: dict[str, Any]) -> None:  # noqa: B027 (optional)
        """The item's side: fold one change from ``user_step`` into this item's state."""

    def apply_each(self, changes: Sequence[ItemDelta]) -> None:
        """``apply`` each of one event's changes (distinct items), in order."""
        for item, change in changes:
            self.apply(item, change)

    def check_change(self, change: Mapping[str, Any]) -> None:
        """Raise ``InvalidChange`` unless ``apply`` can take ``change`` whole (a change
        read from the log: ``models/sources/changes.py``)."""
        raise InvalidChange(f"the {self.name!r} source makes no item changes")

    def dump_user(self, value: Any) -> Any:
        """This source's ``history.own`` value as JSON-ready data."""
        return value

    def load_user(self, data: Any) -> Any:
        return data

    @abstractmethod
    def score(self, user: str, history: UserHistory, n_items: int, now: float) -> np.ndarray:
        """Scores of items 0..n_items-1 for ``user`` at time ``now``."""

    def score_items(
        self, user: str, history: UserHistory, items: np.ndarray, now: float
    ) -> np.ndarray:
        """``score`` of the given item indexes only (what a candidate stage ranks)."""
        n_items = int(items.max()) + 1 if len(items) else 0
        return np.asarray(self.score(user, history, n_items, now))[items]

    def best_items(
        self, user: str, history: UserHistory, limit: int, n_items: int, now: float
    ) -> list[int]:
        """The ``limit`` best of items 0..n_items-1 that the user has not seen and this
        source scores above 0 (items it gives nothing to are not its picks): what the
        candidate stage takes from a source without a ``retrieval_vector``."""
        scores = np.asarray(self.score(user, history, n_items, now), dtype=np.float64)
        picks = np.flatnonzero(scores > 0)
        picks = picks[~np.isin(picks, np.fromiter(history.seen, dtype=np.int64))]
        if len(picks) > limit > 0:
            picks = picks[np.argpartition(-scores[picks], limit - 1)[:limit]]
        return picks.tolist() if limit > 0 else []

    def retrieval_query(self, user: str, history: UserHistory, now: float) -> np.ndarray | None:
        """The query for ``retrieval_vector`` whose nearest items this source scores
        highest; None when the source has nothing to say about the user yet."""
        return None

    def because_of(self, user: str, history: UserHistory, item: int) -> int | None:
        return None

    def because_of_each(
        self, user: str, history: UserHistory, items: Sequence[int]
    ) -> list[int | None]:
        """``because_of`` for each of ``items`` (a list explained at once: sources whose
        explanation reads the user's items read them once)."""
        return [self.because_of(user, history, item) for item in items]

    def item_arrays(self) -> dict[str, np.ndarray]:
        """The item side as numeric arrays (copies), what a checkpoint stores; a source
        without one raises NotImplementedError (its owner then rebuilds from the log)."""
        raise NotImplementedError(f"{type(self).__name__} has no item-side checkpoint")

    def item_arrays_until_upload(self) -> dict[str, np.ndarray]:
        """``item_arrays``, with the arrays that only items' uploads write (``set_vector``)
        read in place rather than copied: valid until the next upload. What a checkpoint
        writes while its caller holds uploads back, without copying the catalog's vectors
        first. By default, ``item_arrays``."""
        return self.item_arrays()

    def load_item_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """The inverse of ``item_arrays``, on a source that has learned nothing yet;
        ``ValueError`` for arrays its learning could not have made."""
        raise NotImplementedError(f"{type(self).__name__} has no item-side checkpoint")

    def items_held(self) -> int:
        """One past the largest item index the item side holds something for or names
        (0: none; arrays grown ahead of the catalog hold nothing there): a restored
        checkpoint must hold nothing for items its catalog lacks."""
        return 0


def held_up_to(*marks: np.ndarray) -> int:
    """One past the last index any of ``marks`` (1-d, truthy where something is held)
    marks (0: none)."""
    return max((int(np.flatnonzero(m)[-1]) + 1 for m in marks if np.any(m)), default=0)
