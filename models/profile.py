"""The user content profile: a time-decayed weighted mean of engaged items' content vectors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.user_state import UserState


@dataclass(frozen=True)
class ContentProfile:
    """Folds one engagement into a user's profile; negative weights push the profile away.

    >>> import numpy as np
    >>> profile, state = ContentProfile(half_life_s=3600.0), UserState()
    >>> profile.learn_one(state, np.array([1.0, 0.0]), weight=1.0, ts=0.0)
    >>> profile.learn_one(state, np.array([0.0, 1.0]), weight=1.0, ts=3600.0)
    >>> [round(float(x), 2) for x in state.profile]  # the older click counts half
    [0.5, 1.0]
    """

    half_life_s: float = 14 * 24 * 3600.0
    max_seen: int = 5_000
    max_history: int = 20

    def learn_one(self, state: UserState, vector: np.ndarray, weight: float, ts: float) -> None:
        unit = vector / (np.linalg.norm(vector) or 1.0)
        if state.profile is None:
            state.profile = (weight * unit).astype(np.float32)
        else:
            # Decay by the time since the last update; an out-of-order event decays nothing.
            decay = 0.5 ** (max(ts - state.profile_ts, 0.0) / self.half_life_s)
            state.profile = (state.profile * decay + weight * unit).astype(np.float32)
        state.profile_ts = max(ts, state.profile_ts)

    def observe(self, state: UserState, item_id: str, weight: float) -> None:
        """Remember the item as seen and, when the signal is positive, as history."""
        if item_id in state.seen:
            state.seen.remove(item_id)
        state.seen.append(item_id)
        del state.seen[: -self.max_seen]
        if weight > 0:
            state.history = [(i, w) for i, w in state.history if i != item_id]
            state.history.append((item_id, weight))
            del state.history[: -self.max_history]

    @staticmethod
    def direction(state: UserState) -> np.ndarray | None:
        """The unit vector to search with, or None for a user with no usable profile."""
        if state.profile is None:
            return None
        norm = float(np.linalg.norm(state.profile))
        return None if norm < 1e-9 else state.profile / norm
