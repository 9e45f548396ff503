"""Content similarity: a time-decayed profile of the item vectors a user engaged with."""

from __future__ import annotations

import math

import numpy as np

from models.sources.base import Source, UserHistory, grown


class ContentSimilarity(Source):
    """Cosine between each item's content vector and the user's decayed, signed profile.

    ``profile <- profile * 2 ** (-dt / half_life) + weight * unit(item vector)``: recent
    and strong engagements count most, skips and dislikes push away.

    >>> from models.sources.base import UserHistory
    >>> source, h = ContentSimilarity(dim=2), UserHistory()
    >>> for item, vector in enumerate([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]):
    ...     source.set_vector(item, np.array(vector))
    >>> source.learn_one("u", 0, 1.0, 0.0, h); h.add(0, 1.0)
    >>> print(source.score("u", h, 3, now=0.0).round(2))
    [1.   0.99 0.  ]
    """

    name = "content"

    def __init__(self, dim: int = 384, half_life_s: float = 30 * 86_400.0) -> None:
        self.vectors = np.zeros((0, dim), dtype=np.float32)
        self.rate = math.log(2) / half_life_s
        self.profiles: dict[str, tuple[np.ndarray, float]] = {}

    def set_vector(self, item: int, vector: np.ndarray) -> None:
        self.vectors = grown(self.vectors, item + 1)
        norm = float(np.linalg.norm(vector))
        self.vectors[item] = vector / norm if norm > 0 else vector

    def learn_one(
        self, user: str, item: int, weight: float, ts: float, history: UserHistory
    ) -> None:
        if item >= len(self.vectors):
            return  # no content for this item
        profile, last = self.profiles.get(user, (np.zeros(self.vectors.shape[1]), ts))
        decay = math.exp(-self.rate * max(ts - last, 0.0))
        self.profiles[user] = (profile * decay + weight * self.vectors[item], ts)

    def profile(self, user: str) -> np.ndarray | None:
        entry = self.profiles.get(user)
        if entry is None or not np.any(entry[0]):
            return None
        return (entry[0] / np.linalg.norm(entry[0])).astype(np.float32)

    def score(self, user: str, history: UserHistory, n_items: int, now: float) -> np.ndarray:
        profile = self.profile(user)
        if profile is None:
            return np.zeros(n_items, dtype=np.float32)
        return grown(self.vectors, n_items)[:n_items] @ profile

    def because_of(self, user: str, history: UserHistory, item: int) -> int | None:
        items = [i for i in history.recent_items if i < len(self.vectors)]
        if not items or item >= len(self.vectors):
            return None
        return items[int(np.argmax(self.vectors[items] @ self.vectors[item]))]
