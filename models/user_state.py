"""Everything the recommender remembers about one user, as one JSON-serialisable value.

One value per user keeps an update atomic: the profile, what was seen and which
events were applied change together, so a replayed event is recognised and skipped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class UserState:
    """Per-user state: content profile, seen items, recent positive history, applied events.

    >>> state = UserState()
    >>> state.remember_event("e1"), state.remember_event("e1")
    (True, False)
    >>> UserState.from_dict(state.to_dict()).events_applied
    1
    """

    #: Time-decayed, signed, weighted sum of the unit content vectors the user engaged with.
    profile: np.ndarray | None = None
    profile_ts: float = 0.0
    #: Items the user interacted with in any way, oldest first (never recommended again).
    seen: list[str] = field(default_factory=list)
    #: Recent positive engagements (item_id, weight), newest last: the "because you liked" pool.
    history: list[tuple[str, float]] = field(default_factory=list)
    recent_event_ids: deque[str] = field(default_factory=deque)
    events_applied: int = 0

    #: How many event ids are remembered for duplicate detection.
    MAX_EVENT_IDS = 512

    def remember_event(self, event_id: str) -> bool:
        """Record an event id; False when it was already applied (a duplicate)."""
        if event_id in self.recent_event_ids:
            return False
        self.recent_event_ids.append(event_id)
        while len(self.recent_event_ids) > self.MAX_EVENT_IDS:
            self.recent_event_ids.popleft()
        self.events_applied += 1
        return True

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": None if self.profile is None else self.profile.tolist(),
            "profile_ts": self.profile_ts,
            "seen": self.seen,
            "history": [[item, weight] for item, weight in self.history],
            "recent_event_ids": list(self.recent_event_ids),
            "events_applied": self.events_applied,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UserState:
        profile = data.get("profile")
        return cls(
            profile=None if profile is None else np.asarray(profile, dtype=np.float32),
            profile_ts=float(data.get("profile_ts", 0.0)),
            seen=list(data.get("seen", [])),
            history=[(str(item), float(weight)) for item, weight in data.get("history", [])],
            recent_event_ids=deque(data.get("recent_event_ids", [])),
            events_applied=int(data.get("events_applied", 0)),
        )
