"""Everything the recommender remembers about one user, as one value.

One value per user keeps an update atomic: the sources' user side, what was seen and
which events were applied change together, so a replayed event is recognised and skipped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from models.sources.base import UserHistory


@dataclass
class UserState:
    """A user's history (with each source's own state in it) and the events applied.

    >>> state = UserState()
    >>> state.remember_event("e1"), state.remember_event("e1")
    (True, False)
    """

    history: UserHistory = field(default_factory=UserHistory)
    recent_event_ids: deque[str] = field(default_factory=deque)

    #: How many event ids are remembered for duplicate detection.
    MAX_EVENT_IDS = 512

    def remember_event(self, event_id: str) -> bool:
        """Record an event id; False when it was already applied (a duplicate)."""
        if event_id in self.recent_event_ids:
            return False
        self.recent_event_ids.append(event_id)
        while len(self.recent_event_ids) > self.MAX_EVENT_IDS:
            self.recent_event_ids.popleft()
        return True

    @property
    def events_applied(self) -> int:
        return self.history.events
