"""The new-item pusher's bookkeeping: which stored items count as new."""

from __future__ import annotations

import asyncio

import numpy as np

from models.hybrid import HybridRecommender
from models.user_state import UserState
from streams.events import Recommendations
from streams.new_items import TRIGGER_PREFIX, NewItemPusher


def test_an_item_stored_between_catch_up_and_the_first_tick_is_pushed() -> None:
    hybrid = HybridRecommender(content_dim=2)
    hybrid.add_item("old-a", "Old A", np.array([1.0, 0.0]))
    hybrid.add_item("old-b", "Old B", np.array([0.0, 1.0]))
    state = UserState()
    hybrid.apply(hybrid.learn_one("ann", state, "e1", "old-a", 1.0, 0.0) or {})
    users = {"ann": {"state": hybrid.dump_state(state)}}
    sent: list[tuple[str, bytes]] = []

    async def send(key: str, value: bytes) -> None:
        sent.append((key, value))

    pusher = NewItemPusher(hybrid, users, send, max_users=5, top_k=3, model_version="t")
    assert asyncio.run(pusher.tick(None)) == 0  # still catching up: nothing is new
    caught_up_with = len(hybrid)
    hybrid.add_item("new-a", "New A", np.array([0.9, 0.1]))  # before the first tick
    assert asyncio.run(pusher.tick(caught_up_with)) == 1
    message = Recommendations.model_validate_json(sent[0][1])
    assert sent[0][0] == "ann" and message.trigger_event_id == f"{TRIGGER_PREFIX}new-a"
    assert "new-a" in [item.item_id for item in message.items]
    assert asyncio.run(pusher.tick(caught_up_with)) == 0  # each item once


def test_a_bulk_upload_pushes_its_newest_items_within_the_budget_and_skips_the_rest() -> None:
    hybrid = HybridRecommender(content_dim=2)
    hybrid.add_item("old", "Old", np.array([1.0, 0.0]))
    users = {}
    for user in ("ann", "bob"):
        state = UserState()
        hybrid.apply(hybrid.learn_one(user, state, f"{user}-e", "old", 1.0, 0.0) or {})
        users[user] = {"state": hybrid.dump_state(state)}
    sent: list[str] = []

    async def send(key: str, value: bytes) -> None:
        sent.append(Recommendations.model_validate_json(value).trigger_event_id)

    ticks = iter(range(1000))  # each reading of the clock: one second later
    pusher = NewItemPusher(
        hybrid, users, send, 5, 3, "t", budget_s=2.5, clock=lambda: float(next(ticks))
    )
    caught_up_with = len(hybrid)
    for n in range(10):  # a bulk upload: ten items in one tick
        hybrid.add_item(f"new-{n}", f"New {n}", np.array([1.0, 0.1 * n]))
    assert asyncio.run(pusher.tick(caught_up_with)) == 2
    # The newest first, to both its users (clock at 1 and 2 of a 2.5 s budget); the
    # budget is spent before the next item: the other nine are skipped.
    assert sent == [f"{TRIGGER_PREFIX}new-9"] * 2
    assert pusher.skipped == 9
    assert asyncio.run(pusher.tick(caught_up_with)) == 0  # skipped items are not retried


def test_a_user_whose_state_cannot_be_read_costs_only_their_own_push() -> None:
    """A state this version cannot read (a profile past what it reads back) ended the
    item's push: the users after that one got no list, and the tick counted none sent."""
    hybrid = HybridRecommender(content_dim=2)
    hybrid.add_item("old", "Old", np.array([1.0, 0.0]))
    users = {}
    for user in ("ann", "bob", "cy"):
        state = UserState()
        hybrid.apply(hybrid.learn_one(user, state, f"{user}-e", "old", 1.0, 0.0) or {})
        users[user] = {"state": hybrid.dump_state(state)}
    users["ann"]["state"]["history"]["own"]["content"][0] = [1e300, 0.0]
    sent: list[str] = []

    async def send(key: str, value: bytes) -> None:
        sent.append(key)

    pusher = NewItemPusher(hybrid, users, send, max_users=5, top_k=3, model_version="t")
    caught_up_with = len(hybrid)
    hybrid.add_item("new", "New", np.array([1.0, 0.1]))
    assert asyncio.run(pusher.tick(caught_up_with)) == 2
    assert sorted(sent) == ["bob", "cy"]
