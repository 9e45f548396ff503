"""A user's content and modality profiles are sums that grow with the user's events:
they are kept within what the worker reads back, so no run of valid events makes a
user's stored state unreadable.

Found by a probe: one user's 100,001 ratings of one item (each within the signal's
bounds, none dead-lettered) summed past what ``user_vector`` reads back, and the user's
next event started them afresh, their history and remembered event ids gone."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from models.hybrid import HybridRecommender
from models.signals import MAX_SIGNAL_WEIGHT
from models.sources.changes import MAX_DELTA
from models.user_state import UserState


@settings(max_examples=40, deadline=None)
@given(
    # At the bound, where the sums used to pass it, and anywhere below.
    start=st.sampled_from([MAX_DELTA, -MAX_DELTA]) | st.floats(-MAX_DELTA, MAX_DELTA),
    weight=st.floats(-MAX_SIGNAL_WEIGHT, MAX_SIGNAL_WEIGHT),
    events=st.integers(1, 4),
)
def test_a_profile_at_any_readable_size_stays_readable_after_more_events(
    start: float, weight: float, events: int
) -> None:
    hybrid = HybridRecommender({"item-item": 1.0, "content": 1.0, "modalities": 1.0}, content_dim=2)
    vector = np.array([1.0, 0.0])
    hybrid.add_item("x", "x", vector, {"text": vector, "image": vector})
    state = UserState()
    hybrid.learn_one("ann", state, "e0", "x", 1.0, 0.0)
    # Where a long run of the user's events left their profiles: as large as read back.
    own = state.history.own
    own["content"] = (np.full(2, start), 0.0)
    own["modalities"] = ({m: np.full(2, start) for m in own["modalities"][0]}, 0.0)
    for n in range(events):
        hybrid.learn_one("ann", state, f"e{n + 1}", "x", weight, 0.0)
    restored = hybrid.load_state(json.loads(json.dumps(hybrid.dump_state(state))))
    assert restored.events_applied == state.events_applied
