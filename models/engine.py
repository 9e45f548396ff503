"""The whole recommender in one process: fast replay, tests, and the reference for what
the Kafka deployment must produce for the same event log."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from models.hybrid import CONTENT, HybridRecommender, Recommendation
from models.signals import signal_weight
from models.user_state import UserState
from models.vector_store.base import StoredItem


@dataclass
class InProcessRecommender:
    """User side and item side of the hybrid recommender, applied synchronously, in the
    worker's order: the user side learns, the item changes are applied, then the list.

    >>> import numpy as np
    >>> engine = InProcessRecommender(HybridRecommender(content_dim=2))
    >>> for item_id, vector in [("a", [1.0, 0.0]), ("b", [0.9, 0.1]), ("c", [0.0, 1.0])]:
    ...     engine.add_item(item_id, item_id.upper(), np.array(vector))
    >>> recs = engine.process("e1", "u1", "a", "click", None, ts=1.7e9, k=2)
    >>> [(r.item_id, r.reasons[0].source, r.reasons[0].because_of) for r in recs]
    [('b', 'content', 'a'), ('c', 'catalog', None)]
    >>> engine.process("e1", "u1", "a", "click", None, ts=1.7e9, k=2) is None  # duplicate
    True
    """

    hybrid: HybridRecommender
    users: dict[str, UserState] = field(default_factory=dict)

    def add_item(
        self,
        item_id: str,
        title: str,
        vector: np.ndarray | None,
        modalities: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        self.hybrid.add_item(item_id, title, vector, modalities)
        if self.hybrid.candidates is not None:
            vectors = self.hybrid.with_cf_vector(
                item_id, {CONTENT: vector} if vector is not None else {}
            )
            self.hybrid.candidates.store.upsert([StoredItem(item_id, vectors, {"title": title})])

    def process(
        self,
        event_id: str,
        user_id: str,
        item_id: str,
        kind: str,
        value: float | None,
        ts: float,
        k: int,
    ) -> list[Recommendation] | None:
        """One interaction: learn it, then the user's new list. None for a duplicate event
        id; raises UnknownItemError for an unknown item."""
        if not self.learn(event_id, user_id, item_id, kind, value, ts):
            return None
        return self.hybrid.recommend(user_id, self.users[user_id], k, ts)

    def learn(
        self, event_id: str, user_id: str, item_id: str, kind: str, value: float | None, ts: float
    ) -> bool:
        """Learn one interaction on both sides; False for a duplicate event id."""
        state = self.users.setdefault(user_id, UserState())
        changes = self.hybrid.learn_one(
            user_id, state, event_id, item_id, signal_weight(kind, value), ts
        )
        if changes is None:
            return False
        self.hybrid.apply(changes)
        self.hybrid.publish_cf()  # a micro-batch of one event: the store is never behind
        return True

    def push_new_item(
        self, item_id: str, limit: int, k: int, now: float
    ) -> dict[str, list[Recommendation]]:
        """Refreshed lists for the (at most ``limit``) users a new item fits best, without
        their clicking: what the worker pushes to ``recommendations`` on an upload."""
        return {
            user: self.recommend(user, k, now)
            for user in self.hybrid.users_for_item(item_id, limit)
            if user in self.users
        }

    def recommend(self, user_id: str, k: int, now: float) -> list[Recommendation]:
        return self.hybrid.recommend(user_id, self.users.get(user_id) or UserState(), k, now)
