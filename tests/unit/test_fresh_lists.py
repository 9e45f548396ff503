"""Lists served over HTTP: the stored one while fresh, ranked again at read time once an
item was stored since or it grew old, and a re-ranked list kept while it is fresh."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from models.hybrid import HybridRecommender
from models.user_state import UserState
from streams.events import Recommendations
from streams.fresh_lists import TRIGGER_PREFIX, ReadTimeLists


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def stored_entry(hybrid: HybridRecommender, state: UserState, now: float) -> dict:
    """A users-table entry as the agent writes it after the user's click at ``now``."""
    latest = Recommendations.of("ann", hybrid.recommend("ann", state, 3, now), "e1", 1, "t")
    return {
        "state": hybrid.dump_state(state),
        "latest": {**latest.model_dump(mode="json"), "generated_at": _iso(now)},
        "latest_catalog": len(hybrid),
    }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def ids(message: dict) -> list[str]:
    return [item["item_id"] for item in message["items"]]


def test_a_stale_list_is_ranked_at_read_time_and_kept_while_fresh() -> None:
    now = 1.8e9
    hybrid = HybridRecommender(content_dim=2)
    for item_id, vector in [("jazz-1", [1.0, 0.0]), ("jazz-2", [0.9, 0.1]), ("cook", [0.0, 1.0])]:
        hybrid.add_item(item_id, item_id, np.array(vector))
    state = UserState()
    hybrid.apply(hybrid.learn_one("ann", state, "e1", "jazz-1", 1.0, now) or {})
    entry = stored_entry(hybrid, state, now)
    clock = Clock(now + 5)
    lists = ReadTimeLists(hybrid, top_k=3, model_version="t", max_age_s=60, clock=clock)

    served = lists.serve("ann", entry)
    assert served == entry["latest"] and lists.rankings == 0  # fresh: the stored list

    hybrid.add_item("jazz-new", "jazz-new", np.array([0.95, 0.05]))  # stored after the click
    served = lists.serve("ann", entry)
    assert lists.rankings == 1 and served["trigger_event_id"] == TRIGGER_PREFIX + "e1"
    assert "jazz-new" in ids(served) and "jazz-new" not in ids(entry["latest"])
    assert served["based_on_events"] == 1
    assert lists.serve("ann", entry) == served and lists.rankings == 1  # kept while fresh

    clock.now += 61  # too old, though nothing was stored
    lists.serve("ann", entry)
    assert lists.rankings == 2

    entry = stored_entry(hybrid, state, clock.now)  # the user's next click stores a list
    entry["latest"]["trigger_event_id"] = "e2"
    assert lists.serve("ann", entry) == entry["latest"] and lists.rankings == 2


def test_an_entry_without_its_catalog_size_is_ranked_and_the_kept_lists_are_bounded() -> None:
    now = 1.8e9
    hybrid = HybridRecommender(content_dim=2)
    hybrid.add_item("a", "a", np.array([1.0, 0.0]))
    hybrid.add_item("b", "b", np.array([0.0, 1.0]))
    lists = ReadTimeLists(hybrid, 2, "t", max_age_s=60, max_users=2, clock=Clock(now))
    for user in ["u1", "u2", "u3"]:
        state = UserState()
        hybrid.apply(hybrid.learn_one(user, state, f"{user}-e", "a", 1.0, now) or {})
        entry = stored_entry(hybrid, state, now)
        del entry["latest_catalog"]  # written before the size was stored: not known fresh
        assert ids(lists.serve(user, entry)) == ["b"]
    assert lists.rankings == 3 and list(lists._ranked) == ["u2", "u3"]


def test_a_stale_list_whose_state_cannot_be_read_is_served_as_stored() -> None:
    """A state this version cannot read (a profile past what it reads back) answered 500
    to every read of the user's list until their next event."""
    now = 1.8e9
    hybrid = HybridRecommender(content_dim=2)
    hybrid.add_item("jazz-1", "jazz-1", np.array([1.0, 0.0]))
    state = UserState()
    hybrid.apply(hybrid.learn_one("ann", state, "e1", "jazz-1", 1.0, now) or {})
    entry = stored_entry(hybrid, state, now)
    entry["state"]["history"]["own"]["content"][0] = [1e300, 0.0]
    lists = ReadTimeLists(hybrid, top_k=3, model_version="t", max_age_s=60, clock=Clock(now + 61))
    assert lists.serve("ann", entry) == entry["latest"] and lists.rankings == 0
