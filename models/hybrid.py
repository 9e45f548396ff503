"""The hybrid recommender: content similarity to the user's profile, blended with trending.

Every recommended item carries the reasons it is there: which source proposed it and,
for content similarity, which of the user's own items it resembles most.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from models.profile import ContentProfile
from models.user_state import UserState
from models.vector_store import TRENDING_FIELD, Hit, VectorStore

CONTENT = "content"
TRENDING = "trending"
CATALOG = "catalog"


class UnknownItemError(LookupError):
    """An interaction names an item the catalog does not have (yet)."""

    def __init__(self, item_id: str) -> None:
        super().__init__(
            f"unknown item_id {item_id!r}: "
            "upload the item to the items topic before its interactions"
        )
        self.item_id = item_id


@dataclass(frozen=True)
class Reason:
    source: str
    score: float
    because_of: str | None = None


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    score: float
    title: str
    reasons: list[Reason]


@dataclass(frozen=True)
class HybridRecommender:
    """Ranks unseen items for one user from the vector store's content and trending sources.

    ``score = weights["content"] * cosine(profile, item) + weights["trending"] * trend_rank``
    where ``trend_rank`` falls linearly from 1 (most trending) to 0 over the candidates.
    A user with no profile yet gets the trending items.
    """

    store: VectorStore
    profile: ContentProfile = field(default_factory=ContentProfile)
    weights: Mapping[str, float] = field(default_factory=lambda: {CONTENT: 1.0, TRENDING: 0.3})
    #: Candidates fetched per source, as a multiple of k, before blending.
    oversample: int = 3
    #: Below this cosine an item is not "like" anything the user engaged with, and
    #: content similarity neither scores nor explains it.
    min_similarity: float = 0.3

    def learn_one(
        self, state: UserState, event_id: str, item_id: str, weight: float, ts: float
    ) -> bool:
        """Fold one interaction into the user's state; False (and no change) for a duplicate.

        Raises UnknownItemError, leaving the state unchanged, when the item is not stored.
        """
        if event_id in state.recent_event_ids:
            return False
        stored = self.store.get([item_id]).get(item_id)
        if stored is None or CONTENT not in stored.vectors:
            raise UnknownItemError(item_id)
        state.remember_event(event_id)
        self.profile.learn_one(state, stored.vectors[CONTENT], weight, ts)
        self.profile.observe(state, item_id, weight)
        return True

    def recommend(self, state: UserState, k: int) -> list[Recommendation]:
        limit = k * self.oversample
        seen = state.seen
        direction = self.profile.direction(state)
        candidates: dict[str, Hit] = {}
        content_scores: dict[str, float] = {}
        if direction is not None:
            for hit in self.store.nearest(direction, CONTENT, limit, seen, with_vectors=True):
                candidates[hit.item_id] = hit
                content_scores[hit.item_id] = hit.score
        trending = [
            hit
            for hit in self.store.top_by(TRENDING_FIELD, limit, seen, with_vectors=True)
            if hit.score > 0
        ]
        trend_ranks = {
            hit.item_id: 1.0 - rank / max(len(trending), 1) for rank, hit in enumerate(trending)
        }
        for hit in trending:
            candidates.setdefault(hit.item_id, hit)
            if direction is not None and hit.item_id not in content_scores:
                content_scores[hit.item_id] = _cosine(direction, hit.vectors.get(CONTENT))
        if not candidates:
            # Nobody engaged with anything yet and the user has no profile: any items at all.
            for hit in self.store.top_by(TRENDING_FIELD, limit, seen):
                candidates[hit.item_id] = hit

        anchors = self._anchor_vectors(state)
        ranked = []
        for item_id, hit in candidates.items():
            reasons = []
            content_score = content_scores.get(item_id)
            if content_score is not None and content_score >= self.min_similarity:
                reasons.append(
                    Reason(
                        CONTENT,
                        self.weights[CONTENT] * content_score,
                        _most_similar(hit.vectors.get(CONTENT), anchors),
                    )
                )
            if item_id in trend_ranks:
                reasons.append(Reason(TRENDING, self.weights[TRENDING] * trend_ranks[item_id]))
            if not reasons:
                # Neither source vouches for it: it only fills the list, and says so.
                reasons.append(Reason(CATALOG, 0.0))
            score = sum(reason.score for reason in reasons)
            ranked.append(
                Recommendation(item_id, score, str(hit.payload.get("title", "")), reasons)
            )
        ranked.sort(key=lambda rec: (-rec.score, rec.item_id))
        return ranked[:k]

    def _anchor_vectors(self, state: UserState) -> dict[str, np.ndarray]:
        """Content vectors of the user's recent positive items, to explain content matches."""
        if not state.history:
            return {}
        stored = self.store.get([item_id for item_id, _ in state.history])
        return {
            item_id: item.vectors[CONTENT]
            for item_id, item in stored.items()
            if CONTENT in item.vectors
        }


def _cosine(a: np.ndarray, b: np.ndarray | None) -> float:
    if b is None:
        return 0.0
    return float(np.dot(a, b) / ((np.linalg.norm(a) * np.linalg.norm(b)) or 1.0))


def _most_similar(vector: np.ndarray | None, anchors: dict[str, np.ndarray]) -> str | None:
    if vector is None or not anchors:
        return None
    return max(anchors, key=lambda item_id: (_cosine(vector, anchors[item_id]), item_id))
