"""The whole recommender in one process: fast replay, evaluation, and the reference for
what the Kafka deployment must produce for the same event log."""

from __future__ import annotations

from dataclasses import dataclass, field

from models.hybrid import HybridRecommender, Recommendation
from models.popularity import ItemStats, TrendingPopularity
from models.signals import signal_weight
from models.user_state import UserState


@dataclass
class InProcessRecommender:
    """User side and item side of the hybrid recommender, applied synchronously.

    >>> import numpy as np, tempfile
    >>> from models.vector_store import EdgeVectorStore, StoredItem
    >>> store = EdgeVectorStore(tempfile.mkdtemp(), {"content": 2}); store.start()
    >>> store.upsert([StoredItem(i, {"content": np.array(v)}, {"title": i, "trending": 0.0})
    ...               for i, v in [("a", [1.0, 0.0]), ("b", [0.9, 0.1]), ("c", [0.0, 1.0])]])
    >>> engine = InProcessRecommender(HybridRecommender(store))
    >>> engine.learn_one("e1", "u1", "a", "click", None, ts=1.7e9)
    True
    >>> [(r.item_id, r.reasons[0].source, r.reasons[0].because_of)
    ...  for r in engine.recommend("u1", k=2)]
    [('b', 'content', 'a'), ('c', 'catalog', None)]
    >>> store.stop()
    """

    hybrid: HybridRecommender
    trending: TrendingPopularity = field(default_factory=TrendingPopularity)
    users: dict[str, UserState] = field(default_factory=dict)
    items: dict[str, ItemStats] = field(default_factory=dict)

    def learn_one(
        self, event_id: str, user_id: str, item_id: str, kind: str, value: float | None, ts: float
    ) -> bool:
        """Apply one interaction; False for a duplicate event id. Raises UnknownItemError."""
        weight = signal_weight(kind, value)
        state = self.users.setdefault(user_id, UserState())
        if not self.hybrid.learn_one(state, event_id, item_id, weight, ts):
            return False
        stats = self.items.setdefault(item_id, ItemStats())
        self.trending.learn_one(stats, weight, ts)
        self.hybrid.store.set_payload(item_id, stats.payload())
        return True

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
        """One interaction in the deployment's order: the user side learns and ranks, then
        the item side counts the event (in the worker it hears of it through item-updates,
        after the list has gone out). None for a duplicate event id."""
        weight = signal_weight(kind, value)
        state = self.users.setdefault(user_id, UserState())
        if not self.hybrid.learn_one(state, event_id, item_id, weight, ts):
            return None
        ranked = self.hybrid.recommend(state, k)
        stats = self.items.setdefault(item_id, ItemStats())
        self.trending.learn_one(stats, weight, ts)
        self.hybrid.store.set_payload(item_id, stats.payload())
        return ranked

    def recommend(self, user_id: str, k: int) -> list[Recommendation]:
        return self.hybrid.recommend(self.users.get(user_id) or UserState(), k)
