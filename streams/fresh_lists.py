"""Lists read over HTTP are as fresh as the item side, not as old as the user's last click.

A user's stored list (``latest`` in the users table) is ranked when the user interacts.
Items stored since then, and the other users' clicks that move trending and CF, stay out
of it until the user's next click. So the HTTP API serves the stored list only while it
is fresh: no item was stored since it was ranked, and it is younger than
``http_list_max_age_s``. Otherwise the list is ranked again at read time, from the
user's stored state and this worker's item side, by the same
``HybridRecommender.recommend`` the agent calls. Its ``trigger_event_id`` is
``refreshed:`` and the trigger of the list it replaces.

Cost: one ranking per read of a stale list (what a click costs, without the learning).
A list ranked at read time is kept, for the latest ``max_users`` users, and served again
until it is stale in turn, so a user polling costs at most one ranking per
``http_list_max_age_s`` or per item stored. Nothing is written back: Faust writes a table
only from its agents, and the next click stores a new list anyway.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from models.hybrid import UNREADABLE_STATE, HybridRecommender
from streams.bounds import clip
from streams.events import Recommendations

log = logging.getLogger(__name__)

#: The trigger event id of a list ranked at read time, before the trigger it refreshes.
TRIGGER_PREFIX = "refreshed:"


@dataclass(frozen=True)
class _Ranked:
    refreshes: str  # the trigger of the stored list it replaces
    message: dict[str, Any]
    catalog: int  # how many items the item side held when it was ranked
    at: float


class ReadTimeLists:
    """The list to serve for a user's stored table entry (module docstring)."""

    def __init__(
        self,
        hybrid: HybridRecommender,
        top_k: int,
        model_version: str,
        max_age_s: float,
        max_users: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.hybrid = hybrid
        self.top_k = top_k
        self.model_version = model_version
        self.max_age_s = max_age_s
        self.max_users = max_users
        self.clock = clock
        self._ranked: OrderedDict[str, _Ranked] = OrderedDict()
        #: Lists ranked at read time so far (for tests and the stats page).
        self.rankings = 0

    def serve(self, user_id: str, entry: Mapping[str, Any]) -> dict[str, Any]:
        """The stored list while fresh, else one ranked now (kept while it is fresh)."""
        now = self.clock()
        latest = entry["latest"]
        generated_at = datetime.fromisoformat(latest["generated_at"]).timestamp()
        if self._fresh(entry.get("latest_catalog"), generated_at, now):
            return dict(latest)
        trigger = latest["trigger_event_id"]
        kept = self._ranked.get(user_id)
        if (
            kept is not None
            and kept.refreshes == trigger
            and self._fresh(kept.catalog, kept.at, now)
        ):
            self._ranked.move_to_end(user_id)
            return kept.message
        try:
            state = self.hybrid.load_state(entry["state"])
        except UNREADABLE_STATE as error:
            # The stored list as it is rather than a 500: the user's next event starts
            # them afresh (streams/interactions.py).
            log.warning(
                "user %s: stored state unreadable, list served as stored: %s",
                clip(user_id),
                clip(error),
            )
            return dict(latest)
        catalog = len(self.hybrid)
        ranked = self.hybrid.recommend(user_id, state, self.top_k, now)
        message = Recommendations.of(
            user_id, ranked, TRIGGER_PREFIX + trigger, state.events_applied, self.model_version
        ).model_dump(mode="json")
        self.rankings += 1
        self._ranked[user_id] = _Ranked(trigger, message, catalog, now)
        self._ranked.move_to_end(user_id)
        while len(self._ranked) > self.max_users:
            self._ranked.popitem(last=False)
        return message

    def _fresh(self, catalog: int | None, ranked_at: float, now: float) -> bool:
        return catalog == len(self.hybrid) and now - ranked_at < self.max_age_s
