"""Content similarity: a time-decayed profile of the item vectors a user engaged with."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from models.packed import pack
from models.sources.base import ItemDelta, Source, UserHistory, grown
from models.sources.changes import bounded_profile, user_vector


def _same(kept: np.ndarray, profile: np.ndarray) -> bool:
    """Whether ``profile`` is the one the cached scores were computed from: the same
    array in a replay, an equal one in a worker, which reloads each user's profile from
    the users table at every event (JSON round-trips a float64 exactly); by identity
    alone every click of a worker multiplied the whole catalog again (14% of a click at
    20k items)."""
    return kept is profile or (kept.shape == profile.shape and bool(np.array_equal(kept, profile)))


class ContentSimilarity(Source):
    """Cosine between each item's content vector and the user's decayed, signed profile.

    ``profile <- profile * 2 ** (-dt / half_life) + weight * unit(item vector)``: recent
    and strong engagements count most, skips and dislikes push away.

    Scoring the whole catalog against a profile reads every item vector (2.6 MB for
    1,682 MiniLM vectors), which made it the slowest step of a replay. Since
    ``V @ profile`` is linear in the profile, the item scores of a user whose whole
    catalog was scored are kept updated the same way as the profile, from the cached row
    ``V @ v_item`` of each engaged item; a new item vector drops these caches. They hold
    catalog-sized arrays, so they are bounded in bytes (``max_cache_bytes`` each), and
    a catalog ranked through the candidate stage never fills them: ``score_items`` reads
    only the candidates' vectors (at 100k items the caches and the whole-catalog
    products were 38 ms of a 93 ms click and grew by 1 MB per active user).
    The profile itself is the user's (``history.own["content"]``: vector and time); the
    item side is the item vectors.

    >>> from models.sources.base import UserHistory
    >>> source, h = ContentSimilarity(dim=2), UserHistory()
    >>> for item, vector in enumerate([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]):
    ...     source.set_vector(item, np.array(vector))
    >>> source.learn_one("u", 0, 1.0, 0.0, h); h.add(0, 1.0)
    >>> print(source.score("u", h, 3, now=0.0).round(2))
    [1.   0.99 0.  ]
    """

    name = "content"
    retrieval_vector = "content"

    def __init__(
        self,
        dim: int = 384,
        half_life_s: float = 30 * 86_400.0,
        max_cached_rows: int = 8192,
        max_cached_users: int = 4096,
        max_cache_bytes: int = 128 * 2**20,
    ) -> None:
        self.vectors = np.zeros((0, dim), dtype=np.float32)
        self.n_vectors = 0  # rows of ``vectors`` in use
        self.rate = math.log(2) / half_life_s
        self.max_cached_rows = max_cached_rows
        self._vectors64: np.ndarray | None = None
        self._rows: dict[int, np.ndarray] = {}  # item -> V @ unit(v_item)
        # user -> (the profile array it was computed from, V @ profile)
        self._scores: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.max_cached_users = max_cached_users
        self.max_cache_bytes = max_cache_bytes
        #: The latest profile of the most recently active users (kept across new items,
        #: unlike the score cache): who a new item should be shown to.
        self._profiles: OrderedDict[str, np.ndarray] = OrderedDict()

    def set_vector(self, item: int, vector: np.ndarray) -> None:
        self.vectors = grown(self.vectors, item + 1)
        self.n_vectors = max(self.n_vectors, item + 1)
        norm = float(np.linalg.norm(vector))
        self.vectors[item] = vector / norm if norm > 0 else vector
        self._vectors64 = None
        self._rows.clear()
        self._scores.clear()

    def _profile_scores(self, profile: np.ndarray) -> np.ndarray:
        """``V @ profile`` over the float64 copy of V: the same numbers as multiplying the
        float32 V (NumPy would widen it to float64 first), without widening it per call (it
        runs for every user whose scores are not cached)."""
        if self._vectors64 is None:
            self._vectors64 = self.vectors[: self.n_vectors].astype(np.float64)
        return self._vectors64 @ profile

    def _fits(self, entries: int, row_bytes: int, most: int) -> bool:
        """Whether a cache of ``entries`` rows of ``row_bytes`` may take one more."""
        return entries < min(most, self.max_cache_bytes // max(row_bytes, 1))

    def _row(self, item: int) -> np.ndarray:
        row = self._rows.get(item)
        if row is None:
            row = self.vectors[: self.n_vectors] @ self.vectors[item]
            if self._fits(len(self._rows), row.nbytes, self.max_cached_rows):
                self._rows[item] = row
        return row

    def user_step(
        self, user: str, item: int, weight: float, ts: float, history: UserHistory
    ) -> list[ItemDelta]:
        if item >= self.n_vectors:
            return []  # no content for this item
        profile, last = history.own.get(self.name, (np.zeros(self.vectors.shape[1]), ts))
        decay = math.exp(-self.rate * max(ts - last, 0.0))
        updated = profile * decay + weight * self.vectors[item]
        scaled = bounded_profile(updated)
        history.own[self.name] = (updated, ts)
        self._remember_profile(user, updated)
        cached = self._scores.pop(user, None)
        if cached is not None and _same(cached[0], profile) and not scaled:  # scored whole
            self._cache(user, updated, cached[1] * decay + weight * self._row(item))
        return []

    def _remember_profile(self, user: str, profile: np.ndarray) -> None:
        self._profiles[user] = profile
        self._profiles.move_to_end(user)
        while len(self._profiles) > self.max_cached_users:
            self._profiles.popitem(last=False)

    def closest_users(self, vector: np.ndarray, limit: int) -> list[tuple[str, float]]:
        """The ``limit`` recently active users whose profile is the most similar to
        ``vector`` (cosine, above 0), most similar first: who a new item fits best.
        Costs one dot product per remembered user (at most ``max_cached_users``)."""
        if not self._profiles or limit <= 0:
            return []
        users = list(self._profiles)
        profiles = np.stack([self._profiles[u] for u in users])
        norms = np.linalg.norm(profiles, axis=1) * max(float(np.linalg.norm(vector)), 1e-12)
        similarity = profiles @ np.asarray(vector, dtype=np.float64) / np.maximum(norms, 1e-12)
        order = np.argsort(-similarity, kind="stable")[:limit]
        return [(users[i], float(similarity[i])) for i in order if similarity[i] > 0]

    def _cache(self, user: str, profile: np.ndarray, scores: np.ndarray) -> None:
        # The most recent users only: a worker sees millions of users over its life.
        self._scores[user] = (profile, scores)
        self._scores.move_to_end(user)
        while not self._fits(len(self._scores) - 1, scores.nbytes, self.max_cached_users):
            self._scores.popitem(last=False)

    def _cached_scores(self, user: str, profile: np.ndarray) -> np.ndarray:
        cached = self._scores.get(user)
        if cached is not None and _same(cached[0], profile):
            return cached[1]
        return self._profile_scores(profile)

    def score(self, user: str, history: UserHistory, n_items: int, now: float) -> np.ndarray:
        entry = history.own.get(self.name)
        norm = 0.0 if entry is None else float(np.linalg.norm(entry[0]))
        if not norm > 0:
            return np.zeros(n_items, dtype=np.float64)
        scores = self._cached_scores(user, entry[0])
        self._cache(user, entry[0], scores)
        return grown(scores / norm, n_items)[:n_items]

    def score_items(
        self, user: str, history: UserHistory, items: np.ndarray, now: float
    ) -> np.ndarray:
        entry = history.own.get(self.name)
        norm = 0.0 if entry is None else float(np.linalg.norm(entry[0]))
        scores = np.zeros(len(items), dtype=np.float64)
        if not norm > 0:
            return scores
        known = items < self.n_vectors
        scores[known] = self.vectors[items[known]].astype(np.float64) @ entry[0] / norm
        return scores

    def retrieval_query(self, user: str, history: UserHistory, now: float) -> np.ndarray | None:
        entry = history.own.get(self.name)
        return None if entry is None or not np.linalg.norm(entry[0]) > 0 else entry[0]

    def dump_user(self, value: Any) -> Any:
        profile, ts = value
        return [pack(profile, "the user's content profile"), ts]

    def load_user(self, data: Any) -> Any:
        profile = user_vector(data[0], "the user's content profile", self.vectors.shape[1])
        ts = float(data[1])
        if not math.isfinite(ts):
            raise ValueError(f"a content profile at {ts}")
        return profile, ts

    def item_arrays(self) -> dict[str, np.ndarray]:
        return {key: array.copy() for key, array in self.item_arrays_until_upload().items()}

    def item_arrays_until_upload(self) -> dict[str, np.ndarray]:
        return {"vectors": self.vectors[: self.n_vectors]}

    def load_item_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        vectors = np.asarray(arrays["vectors"], dtype=np.float32)
        if vectors.shape[1:] != self.vectors.shape[1:]:
            raise ValueError(
                f"content vectors of {vectors.shape[1:]} dimensions, not {self.vectors.shape[1:]}"
            )
        self.vectors, self.n_vectors = vectors.copy(), len(vectors)
        self._vectors64 = None
        self._rows.clear()
        self._scores.clear()

    def items_held(self) -> int:
        return self.n_vectors

    def because_of(self, user: str, history: UserHistory, item: int) -> int | None:
        return self.because_of_each(user, history, [item])[0]

    def because_of_each(
        self, user: str, history: UserHistory, items: Sequence[int]
    ) -> list[int | None]:
        """Per item, the user's recent item closest to it (the user's vectors gathered
        once for the list). One product per item: a matrix product rounds otherwise, and
        between two equally close items the reason would change with the list."""
        mine = [i for i in history.recent_items if i < self.n_vectors]
        if not mine:
            return [None] * len(items)
        recent = self.vectors[mine]
        return [
            mine[int(np.argmax(recent @ self.vectors[item]))] if item < self.n_vectors else None
            for item in items
        ]
