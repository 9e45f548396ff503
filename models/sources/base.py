"""What every candidate source shares: the catalog's item index, the user's recent history,
and the ``learn_one`` / ``score`` interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field

import numpy as np


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

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._index

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class UserHistory:
    """One user's engagements: every item seen (never recommended again) and the recent ones.

    ``recent`` keeps the last ``size`` positively engaged items, newest last, with their
    weights; ``last`` the last ``size`` items of any interaction (a low rating still says
    what the user watches).
    """

    size: int = 20
    seen: set[int] = field(default_factory=set)
    recent: deque[tuple[int, float]] = field(default_factory=deque)
    last: deque[int] = field(default_factory=deque)
    events: int = 0

    def add(self, item: int, weight: float) -> None:
        self.seen.add(item)
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


def grown(array: np.ndarray, size: int, axes: tuple[int, ...] = (0,)) -> np.ndarray:
    """``array`` zero-padded along ``axes`` to at least ``size`` (doubling, to amortise)."""
    if all(array.shape[a] >= size for a in axes):
        return array
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
    """

    name: str

    @abstractmethod
    def learn_one(
        self, user: str, item: int, weight: float, ts: float, history: UserHistory
    ) -> None:
        """Learn from ``user`` engaging ``item``; ``history`` is the user's, before this event."""

    @abstractmethod
    def score(self, user: str, history: UserHistory, n_items: int, now: float) -> np.ndarray:
        """Scores of items 0..n_items-1 for ``user`` at time ``now``."""

    def because_of(self, user: str, history: UserHistory, item: int) -> int | None:
        return None
