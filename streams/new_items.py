"""New items reach users without waiting for their click.

A list is recomputed when its user interacts, so an item uploaded after a user's last
click would stay out of that user's list until the next one. Each worker's replica
stores every new item; on its next tick, ``NewItemPusher`` asks the hybrid which of the
users this worker served recently fit the item best (``HybridRecommender.users_for_item``:
their content profile against the item's content vector) and sends those users a
refreshed list on ``recommendations``, its ``trigger_event_id`` ``new-item:<item id>``.

Cost per upload: one dot product per remembered profile (at most the content source's
``max_cached_users``) and, for each of at most ``new_item_push_users`` users, one ranking
and one message. Items stored while the replica catches up at start are not pushed.

Bound: pushes run in the event loop that also handles the interactions, so each tick
spends at most ``new_item_push_budget_s`` on them, newest items first; the items a
bulk upload stores beyond that are not pushed (counted in ``skipped``, logged), and reach
their users through the lists read over HTTP and the users' next clicks. Found with a
100,000-item catalog uploaded to a running worker: each item's 20 rankings through the
candidate stage took about 1.5 s, and the pushes for the whole upload would have held
the loop for about 40 hours.
The user's stored state and its ``latest`` list are not rewritten (Faust writes a table
only from its agents); the HTTP API ranks a list again when an item was stored since
(``streams/fresh_lists.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from models.hybrid import UNREADABLE_STATE, HybridRecommender
from streams.bounds import clip
from streams.events import Recommendations

log = logging.getLogger(__name__)

#: The trigger event id of a list pushed for a new item.
TRIGGER_PREFIX = "new-item:"


class NewItemPusher:
    """Pushes refreshed lists to the best-fitting users of each item stored since the
    last ``tick`` (module docstring)."""

    def __init__(
        self,
        hybrid: HybridRecommender,
        users: Mapping[str, Any],
        send: Callable[[str, bytes], Awaitable[Any]],
        max_users: int,
        top_k: int,
        model_version: str,
        budget_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hybrid = hybrid
        self.users = users
        self.send = send
        self.max_users = max_users
        self.top_k = top_k
        self.model_version = model_version
        self.budget_s = budget_s
        self.clock = clock
        self._seen_items: int | None = None
        #: New items not pushed because a tick's budget was spent.
        self.skipped = 0

    async def tick(self, items_at_catch_up: int | None) -> int:
        """Push for the items stored since the last tick; how many lists were sent.

        Until the replica has caught up with the log (``items_at_catch_up`` None), nothing
        is new; the items it held by then are not pushed. Counting from then, not from the
        first tick, keeps an item stored between the two (a tick is up to a second late)."""
        if items_at_catch_up is None or self.max_users <= 0:
            return 0
        if self._seen_items is None:
            self._seen_items = items_at_catch_up
        start, end = self._seen_items, len(self.hybrid)
        self._seen_items = end
        ids = self.hybrid.catalog.ids
        deadline = self.clock() + self.budget_s
        sent = 0
        for index in range(end - 1, start - 1, -1):  # the newest first
            if self.clock() >= deadline:
                self.skipped += index - start + 1
                log.info(
                    "%d new items not pushed: new_item_push_budget_s=%g spent (they reach "
                    "users through their next lists)",
                    index - start + 1,
                    self.budget_s,
                )
                break
            # A timer's exception would stop the worker: a push that fails is logged and
            # skipped (the item's users still get it in their next list).
            try:
                sent += await self._push(ids[index], deadline)
            except Exception:
                log.exception("new item %s: refreshed lists not pushed", ids[index])
            await asyncio.sleep(0)  # let the agents run between items
        return sent

    async def _push(self, item_id: str, deadline: float) -> int:
        sent = 0
        now = time.time()
        for user_id in self.hybrid.users_for_item(item_id, self.max_users):
            if sent and self.clock() >= deadline:
                break  # the item's best fits come first: they had their lists
            entry = self.users.get(user_id)
            if not entry:
                continue  # not this worker's user (any more)
            try:
                state = self.hybrid.load_state(entry.get("state", {}))
            except UNREADABLE_STATE as error:
                # One user's state this version cannot read costs that user's list only,
                # not the item's other users (their next event starts them afresh).
                log.warning(
                    "new item %s: user %s not pushed: %s", item_id, clip(user_id), clip(error)
                )
                continue
            ranked = self.hybrid.recommend(user_id, state, self.top_k, now)
            message = Recommendations.of(
                user_id,
                ranked,
                f"{TRIGGER_PREFIX}{item_id}",
                state.events_applied,
                self.model_version,
            )
            await self.send(user_id, message.to_bytes())
            sent += 1
        if sent:
            log.info("new item %s: refreshed lists pushed to %d users", item_id, sent)
        return sent
