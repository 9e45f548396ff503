"""EASE (Steck 2019): a global item-item model refitted from scratch every N events.

A shallow linear autoencoder with a closed form: with ``X`` the users x items matrix of
engagements and ``P = (X^T X + lambda I)^-1``, the item weights are ``B = -P / diag(P)``
with a zero diagonal, and a user's scores are ``x_u B``. It captures global
co-occurrence structure (every user's whole history), where ``item-item`` follows the
recent sequence. The fit covers the items engaged so far (an item nobody engaged with
has a zero column in ``X``: its block of ``P`` is ``I / lambda``, so its weights are 0
either way, and a catalog loaded up front costs nothing until it is engaged).

Inverting the items x items Gram matrix costs ``items**3``: about 60 s at 10k items,
refitted 50 times in a 100k-event replay. With fewer users than items the fit takes
the dual form instead (Woodbury's identity), ``P = (I - X^T K X) / lambda`` with
``K = (X X^T + lambda I)^-1``, which inverts a users x users matrix and keeps
``K X`` (users x items) rather than ``B`` (items x items); a row of ``B`` is then the
sum of the rows of ``K X`` of the users who engaged with the item (0.8 s at 610 users
and 10k items; ``tests/unit/test_ease.py`` holds both forms to the closed form). Above
``max_items`` for the dimension inverted, or ``max_fit_bytes`` for what a fit keeps,
the source is disabled (it scores 0) and says so once in the log.

Here it is an evaluation baseline: it learns every event into ``X`` and refits every
``refit_every`` events, between which its scores are those of the last fit (what a
deployment refitting in the background would serve). A worker has no ``X`` (users are
split between workers); its "ease" source fits the same model from the item side's
co-engagement counts (``models/sources/item_ease.py``).

A user's scores ``x_u B`` sum one row of ``B`` per item they engaged with: recomputed
per event, that read grew with the user's history (a 10k-item replay spent 70% of its
time there by event 18,000 and fell to 47 events/s). They are kept per user between
refits instead, one row added per newly engaged item, bounded in bytes
(``max_cache_bytes``), and dropped at each refit.

>>> from models.sources.base import UserHistory
>>> ease, a, b, c = EASE(refit_every=1, l2=1.0), UserHistory(), UserHistory(), UserHistory()
>>> for user, history, items in [("a", a, [0, 1]), ("b", b, [0, 1]), ("c", c, [2])]:
...     for item in items:
...         ease.learn_one(user, item, 1.0, 0.0, history); history.add(item, 1.0)
>>> new = UserHistory(); new.add(0, 1.0)
>>> int(np.argmax(np.where([False, True, True], ease.score("n", new, 3, 0.0), -1)))
1
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from models.sources.base import Source, UserHistory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EaseFit:
    """One fit's ``B`` over ``items`` (catalog indexes): ``B`` itself, or the dual's factors."""

    items: np.ndarray
    #: ``B`` (items x items), in the primal form.
    weights: np.ndarray | None = None
    #: ``X`` and ``K X`` (users x items) and ``lambda diag(P)``, in the dual form.
    engagements: np.ndarray | None = None
    projected: np.ndarray | None = None
    diagonal: np.ndarray | None = None

    @classmethod
    def of(cls, engagements: np.ndarray, items: np.ndarray, l2: float) -> EaseFit:
        """The fit of ``engagements`` (users x ``items``), inverting the smaller side."""
        n_users, n_items = engagements.shape
        if n_users >= n_items:
            gram = engagements.T @ engagements
            gram[np.diag_indices(n_items)] += l2
            inverse = np.linalg.inv(gram)
            weights = -inverse / np.diag(inverse)
            weights[np.diag_indices(n_items)] = 0.0
            return cls(items, weights=weights)
        kernel = engagements @ engagements.T
        kernel[np.diag_indices(n_users)] += l2
        projected = np.linalg.solve(kernel, engagements)
        diagonal = 1.0 - np.einsum("ui,ui->i", engagements, projected)
        return cls(items, engagements=engagements, projected=projected, diagonal=diagonal)

    @staticmethod
    def nbytes(n_users: int, n_items: int) -> int:
        """What a fit of that shape keeps."""
        return 8 * (n_items * n_items if n_users >= n_items else 2 * n_users * n_items)

    def row_sum(self, rows: np.ndarray) -> np.ndarray:
        """The sum of the rows ``rows`` (distinct) of ``B``."""
        if self.weights is not None:
            return self.weights[rows].sum(axis=0)
        assert self.engagements is not None and self.projected is not None
        # Off the diagonal B[i, j] = (X^T K X)[i, j] / (lambda P[j, j]); on it, 0.
        shared = self.engagements[:, rows].sum(axis=1)
        users = np.flatnonzero(shared)
        # An item's few users: their rows only. A long history shares items with most
        # users: the whole product (gathering the rows would copy most of ``K X``).
        if len(users) * 4 < len(shared):
            sums = shared[users] @ self.projected[users]
        else:
            sums = shared @ self.projected
        sums[rows] -= 1.0
        sums /= self.diagonal
        sums[rows] += 1.0
        return sums


class EASE(Source):
    """Periodically refitted EASE over every event seen (module docstring)."""

    name = "ease (whole histories)"

    def __init__(
        self,
        l2: float = 500.0,
        refit_every: int = 2_000,
        max_items: int = 20_000,
        max_fit_bytes: int = 4 * 2**30,
        max_cache_bytes: int = 256 * 2**20,
    ) -> None:
        self.l2 = l2
        self.refit_every = refit_every
        self.max_items = max_items
        self.max_fit_bytes = max_fit_bytes
        self.max_cache_bytes = max_cache_bytes
        #: user -> (how many items ``x_u`` counts, ``x_u B`` over the fitted items).
        self._user_scores: OrderedDict[str, tuple[int, np.ndarray]] = OrderedDict()
        self.pairs: set[tuple[str, int]] = set()
        self.fit = EaseFit(np.zeros(0, dtype=np.int64), weights=np.zeros((0, 0)))
        self.events = 0
        self.disabled = False

    def learn_one(
        self, user: str, item: int, weight: float, ts: float, history: UserHistory
    ) -> None:
        self.pairs.add((user, item))
        self.events += 1
        kept = self._user_scores.get(user)
        if kept is not None and len(history.seen) + 1 >= history.max_seen:
            del self._user_scores[user]  # at its bound the history starts forgetting
        elif kept is not None and item not in history.seen:  # x_u gains the item
            counted, scores = kept
            row = self._rows(np.array([item]))
            if len(row):
                scores += self.fit.row_sum(row)
            self._user_scores[user] = (counted + 1, scores)
        if self.events % self.refit_every == 0:
            self.refit()

    def refit(self) -> None:
        self._user_scores.clear()
        engaged = np.unique(np.fromiter((i for _, i in self.pairs), dtype=np.int64))
        users = {user: n for n, user in enumerate(sorted({u for u, _ in self.pairs}))}
        n_users, n_items = len(users), len(engaged)
        if min(n_users, n_items) > self.max_items or (
            EaseFit.nbytes(n_users, n_items) > self.max_fit_bytes
        ):
            if not self.disabled:
                log.warning(
                    "EASE disabled: %d users x %d items is above max_items=%d or "
                    "max_fit_bytes=%d (its fit inverts the smaller side's square)",
                    n_users,
                    n_items,
                    self.max_items,
                    self.max_fit_bytes,
                )
            self.disabled = True
            self.fit = EaseFit(engaged[:0], weights=np.zeros((0, 0)))
            return
        rows = np.array([users[u] for u, _ in self.pairs])
        columns = np.searchsorted(engaged, np.array([i for _, i in self.pairs]))
        matrix = np.zeros((n_users, n_items))
        matrix[rows, columns] = 1.0
        self.fit = EaseFit.of(matrix, engaged, self.l2)

    def _rows(self, items: np.ndarray) -> np.ndarray:
        """The rows of ``B`` of those of ``items`` in the last fit."""
        fitted = self.fit.items
        if not len(fitted):
            return items[:0]
        rows = np.searchsorted(fitted, items)
        return rows[(rows < len(fitted)) & (fitted[np.minimum(rows, len(fitted) - 1)] == items)]

    def _fitted_scores(self, user: str, history: UserHistory) -> np.ndarray:
        """``x_u B`` over the fitted items: kept, or summed from the user's rows."""
        kept = self._user_scores.get(user)
        if kept is not None and kept[0] == len(history.seen):
            self._user_scores.move_to_end(user)
            return kept[1]
        rows = self._rows(np.fromiter(history.seen, dtype=np.int64))
        scores = self.fit.row_sum(rows) if len(rows) else np.zeros(len(self.fit.items))
        # A history at its bound forgets items as it learns: not kept (the count would lie).
        if len(history.seen) < history.max_seen and scores.nbytes <= self.max_cache_bytes:
            self._user_scores[user] = (len(history.seen), scores)
            while len(self._user_scores) * scores.nbytes > self.max_cache_bytes:
                self._user_scores.popitem(last=False)
        return scores

    def score(self, user: str, history: UserHistory, n_items: int, now: float) -> np.ndarray:
        scores = np.zeros(n_items)
        fitted = self.fit.items
        if not len(fitted) or not history.seen:
            return scores
        columns = fitted < n_items
        scores[fitted[columns]] = self._fitted_scores(user, history)[columns]
        return scores
