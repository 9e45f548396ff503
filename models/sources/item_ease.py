"""EASE (Steck 2019) fitted from the item side's co-engagement counts: the worker's EASE.

EASE's item weights are ``B = -P / diag(P)`` (zero diagonal) with
``P = (G + lambda I)^-1``, where ``G = X^T X`` counts, for each pair of items, the users
who engaged with both (``models/sources/ease.py`` fits it from ``X`` itself, an
evaluation baseline). A worker has no ``X``: users are split between workers, and
replicas share only the item side. But the item side already holds an estimate of
``G``: item-item's counts (``n_i`` on the diagonal, and the co-engagements of items
within 20 of each other in a user's history off it; ``models/sources/item_item.py``).
This source fits EASE on those, so it needs no changes of its own on the wire and every
replica fits the same model from the same log. With users of at most 21 distinct
items the counts are exactly ``X^T X`` and the scores are EASE's
(``tests/unit/test_item_ease.py``); beyond, co-engagements far apart in a history are
not counted. On all of MovieLens 100k it scored HitRate@10 0.130 alone, EASE on ``X``
0.132, with lambda 500 (docs/evaluation.md).

A user's scores are ``x_u B``: the rows of ``B`` of the items the user has seen, summed.
The fit covers the ``max_items`` most engaged items (its inverse costs ``max_items**3``;
``B`` keeps ``4 * max_items**2`` bytes, 36 MB at 3,000); the others score 0 here and are
left to the other sources.

A fit is split so a worker can run its costly part in a thread: ``gram_rows`` copies the
counts (cheap, where the counts are changed), ``fit`` inverts (LAPACK, which releases
the GIL), ``install`` swaps the new fit in. A replay refits every
``refit_every`` events (``learn_one``); a worker on a timer (``streams/ease_refit.py``).

>>> from models.sources.base import UserHistory
>>> from models.sources.item_item import ItemItemCosine
>>> item_item = ItemItemCosine()
>>> ease = ItemSideEASE(item_item, l2=1.0, refit_every=5)
>>> for items in [[0, 1], [0, 1], [2]]:
...     history = UserHistory()
...     for item in items:
...         for source in (item_item, ease):
...             source.learn_one("u", item, 1.0, 0.0, history)
...         history.add(item, 1.0)
>>> new = UserHistory(); new.add(0, 1.0)
>>> int(np.argmax(np.where([False, True, True], ease.score("n", new, 3, 0.0), -1)))
1
>>> ease.because_of("n", new, 1)
0
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import lapack

from models.sources.base import ItemDelta, Source, UserHistory
from models.sources.changes import InvalidChange
from models.sources.item_item import ItemItemCosine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GramRows:
    """A copy of the counts a fit reads: the items it covers (sorted catalog indexes),
    their engagement counts, and their co-engagement rows restricted to those items, in
    coordinates (row, column, count) over positions into ``items``."""

    items: np.ndarray
    counts: np.ndarray
    rows: np.ndarray
    columns: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class ItemEaseFit:
    """``B`` over ``items`` (sorted catalog indexes), float32."""

    items: np.ndarray
    weights: np.ndarray


def _symmetric_inverse(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a symmetric matrix, in its dtype: by its Cholesky factor when it
    is positive definite, else by LU (counts of pairs within a window need not form a
    Gram matrix). The fit asks in float32, which ``B`` is kept in anyway: a third of
    float64's time at 3,000 items on one thread, its weights within 3e-6 relative of
    float64's, the error of storing them in float32."""
    potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (matrix,))
    # Symmetric: its transpose is the same matrix in LAPACK's (column-major) order.
    factor, info = potrf(matrix.T, lower=True)
    if info == 0:
        inverse, info = potri(factor, lower=True, overwrite_c=True)
    if info != 0:
        return np.linalg.inv(matrix.astype(np.float64)).astype(matrix.dtype)
    return _mirror_lower(inverse)


def _mirror_lower(matrix: np.ndarray, block: int = 256) -> np.ndarray:
    """``matrix`` with its strict upper triangle set to its lower one's mirror, in place,
    a band of rows at a time (``np.tril(m) + np.tril(m, -1).T`` made three copies)."""
    n = len(matrix)
    for start in range(0, n, block):
        end = min(start + block, n)
        square = matrix[start:end, start:end]
        square[...] = np.tril(square) + np.tril(square, -1).T
        matrix[start:end, end:] = matrix[end:, start:end].T
    return matrix


_NO_FIT = ItemEaseFit(np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32))


class ItemSideEASE(Source):
    """EASE over item-item's co-engagement counts (module docstring)."""

    name = "ease"
    reads = ("item-item",)

    def __init__(
        self,
        item_item: ItemItemCosine,
        l2: float = 500.0,
        max_items: int = 3_000,
        refit_every: int = 2_000,
        max_cache_bytes: int = 64 * 2**20,
    ) -> None:
        if not l2 > 0:
            raise ValueError("l2 must be above 0 (it keeps the Gram matrix invertible)")
        self.item_item = item_item
        self.l2 = l2
        self.max_items = max_items
        self.refit_every = refit_every
        self.fit_ = _NO_FIT
        #: user -> (how many items ``x_u`` counts, ``x_u B``), bounded in bytes.
        self._user_scores: OrderedDict[str, tuple[int, np.ndarray]] = OrderedDict()
        self.max_cache_bytes = max_cache_bytes
        #: Catalog index -> position in the fit's items (-1: not fitted).
        self._positions = np.zeros(0, dtype=np.int64)
        self.events = 0
        #: Item-item's engagements counted when the last fit's counts were copied.
        self.fitted_engagements = 0.0

    # -- fitting -----------------------------------------------------------------------

    @property
    def engagements(self) -> float:
        """Item-item's engagements counted so far: whether a refit would see anything new."""
        return float(self.item_item.counts.sum(dtype=np.float64))

    def gram_rows(self) -> GramRows:
        """The counts of the ``max_items`` most engaged items, copied."""
        counts = self.item_item.counts
        items = np.flatnonzero(counts > 0)
        if len(items) > self.max_items:
            most = np.argsort(-counts[items], kind="stable")[: self.max_items]
            items = np.sort(items[most])
        positions = np.full(len(counts), -1, dtype=np.int64)
        positions[items] = np.arange(len(items))
        held = [self.item_item.co.row(int(item)) for item in items]
        neighbours = np.concatenate([h[0] for h in held]) if held else np.zeros(0, np.int64)
        owners = np.repeat(np.arange(len(items)), [len(h[0]) for h in held])
        # A neighbour past the counts was never engaged itself (only co-engaged).
        at = positions[np.minimum(neighbours, len(positions) - 1)]
        keep = (at >= 0) & (neighbours < len(positions))
        values = np.concatenate([h[1] for h in held]) if held else np.zeros(0, np.float32)
        return GramRows(
            items,
            counts[items].astype(np.float64),
            owners[keep],
            at[keep],
            values[keep],
        )

    def fit(self, gram: GramRows) -> ItemEaseFit:
        """EASE's ``B`` from the copied counts; reads nothing else, safe in another thread."""
        n = len(gram.items)
        if n == 0:
            return _NO_FIT
        # A full row's Space-Saving estimates make the counts slightly asymmetric: the
        # matrix holds the mean of (i, j) and (j, i), set in halves.
        matrix = np.zeros((n, n), dtype=np.float32)
        half = gram.values * np.float32(0.5)  # float32, as item-item counts (exact halves)
        matrix[gram.rows, gram.columns] = half
        matrix[gram.columns, gram.rows] += half
        matrix[np.diag_indices(n)] = gram.counts + self.l2
        # B = -P / diag(P), column by column; P is symmetric, so its C-ordered view
        # (LAPACK returns column-major arrays) serves as well, and rows of B read fast.
        inverse = np.ascontiguousarray(_symmetric_inverse(matrix).T)
        weights = np.divide(inverse, -np.diag(inverse), out=inverse)
        weights[np.diag_indices(n)] = 0.0
        if not np.isfinite(weights).all():  # counts are finite; a singular matrix is not
            raise np.linalg.LinAlgError("EASE's weights are not finite")
        return ItemEaseFit(gram.items, weights)

    def install(self, fit: ItemEaseFit, engagements: float) -> None:
        """Serve ``fit`` from now on; ``engagements``: what its counts had seen."""
        self.fit_ = fit
        self._user_scores.clear()
        self._positions = np.full(int(fit.items.max()) + 1 if len(fit.items) else 0, -1)
        self._positions[fit.items] = np.arange(len(fit.items))
        self.fitted_engagements = engagements

    def refit(self) -> None:
        """Copy, fit and install at once (a replay; a worker splits these)."""
        engagements = self.engagements
        try:
            self.install(self.fit(self.gram_rows()), engagements)
        except np.linalg.LinAlgError as error:
            log.warning("EASE refit skipped, the last fit is kept: %s", error)

    def user_step(
        self, user: str, item: int, weight: float, ts: float, history: UserHistory
    ) -> list[ItemDelta]:
        """No changes (the counts are item-item's); the user's kept scores gain the
        item's row of ``B`` when the item is new to them."""
        kept = self._user_scores.get(user)
        if kept is not None:
            if kept[0] != len(history.seen) or len(history.seen) + 1 >= history.max_seen:
                del self._user_scores[user]  # stale, or the history starts forgetting
            elif item not in history.seen:
                at = self._fitted_rows(np.array([item]))
                scores = kept[1] + self.fit_.weights[at].sum(axis=0, dtype=np.float64)
                self._user_scores[user] = (kept[0] + 1, scores)
        return []

    def learn_one(
        self, user: str, item: int, weight: float, ts: float, history: UserHistory
    ) -> None:
        self.user_step(user, item, weight, ts, history)
        self.events += 1
        if self.events % self.refit_every == 0:
            self.refit()

    def check_change(self, change: Mapping[str, Any]) -> None:
        raise InvalidChange("the 'ease' source makes no item changes: it reads item-item's")

    # -- scoring -----------------------------------------------------------------------

    def _fitted_rows(self, items: np.ndarray) -> np.ndarray:
        """Positions in the fit of those of ``items`` it covers."""
        items = items[items < len(self._positions)]
        at = self._positions[items]
        return at[at >= 0]

    def _fitted(self, history: UserHistory) -> np.ndarray:
        return self._fitted_rows(np.fromiter(history.seen, dtype=np.int64, count=len(history.seen)))

    def _user_row(self, user: str, history: UserHistory) -> np.ndarray:
        """``x_u B`` over the fitted items: kept per user between refits (summing a long
        history's rows for every ranking was most of a 10k-item replay's EASE time), or
        summed from the user's rows."""
        kept = self._user_scores.get(user)
        if kept is not None and kept[0] == len(history.seen):
            self._user_scores.move_to_end(user)
            return kept[1]
        scores = self.fit_.weights[self._fitted(history)].sum(axis=0, dtype=np.float64)
        if len(history.seen) < history.max_seen:  # at its bound the count would lie
            self._user_scores[user] = (len(history.seen), scores)
            while len(self._user_scores) * max(scores.nbytes, 1) > self.max_cache_bytes:
                self._user_scores.popitem(last=False)
        return scores

    def score(self, user: str, history: UserHistory, n_items: int, now: float) -> np.ndarray:
        scores = np.zeros(n_items)
        if not len(self.fit_.items) or not history.seen:
            return scores
        fitted = self.fit_.items
        covered = fitted < n_items
        scores[fitted[covered]] = self._user_row(user, history)[covered]
        return scores

    def because_of(self, user: str, history: UserHistory, item: int) -> int | None:
        if item >= len(self._positions) or self._positions[item] < 0:
            return None
        rows = self._fitted(history)
        if not len(rows):
            return None
        weights = self.fit_.weights[rows, self._positions[item]]
        best = int(np.argmax(weights))
        return int(self.fit_.items[rows[best]]) if weights[best] > 0 else None

    # -- the item side as arrays (checkpoints) ----------------------------------------

    def item_arrays(self) -> dict[str, np.ndarray]:
        return {
            "items": self.fit_.items.copy(),
            "weights": self.fit_.weights.copy(),
            "engagements": np.array([self.fitted_engagements]),
        }

    def load_item_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        items = np.asarray(arrays["items"], dtype=np.int64)
        weights = np.asarray(arrays["weights"], dtype=np.float32)
        if weights.shape != (len(items), len(items)) or not np.isfinite(weights).all():
            raise ValueError(f"EASE weights of shape {weights.shape} for {len(items)} items")
        if len(items) and (items.min() < 0 or np.any(np.diff(items) <= 0)):
            raise ValueError("EASE items are not sorted catalog indexes")
        self.install(ItemEaseFit(items, weights.copy()), float(arrays["engagements"][0]))

    def items_held(self) -> int:
        return int(self.fit_.items[-1]) + 1 if len(self.fit_.items) else 0
