"""The worker's hybrid recommender on planted structure: users with known tastes, items
with planted content vectors, run the way the worker runs it (user side, item changes,
list)."""

from __future__ import annotations

import pytest

from models.hybrid import HybridRecommender, UnknownItemError
from models.user_state import UserState
from tests.planted import DIM, PER_TASTE, TASTES, TS, planted_engine, taste


def test_users_get_their_taste_with_true_reasons() -> None:
    engine, _, _ = planted_engine()
    for user, state in engine.users.items():
        recs = engine.recommend(user, k=5, now=TS + 1e4)
        assert sum(taste(r.item_id) == taste(user) for r in recs) >= 4, (user, recs)
        history_ids = {engine.hybrid.catalog.ids[i] for i in state.history.seen}
        for rec in recs:
            assert rec.item_id not in history_ids
            for reason in rec.reasons:
                assert reason.source in {"item-item", "trending", "cf", "content", "catalog"}
                if reason.source in {"item-item", "content"}:
                    # "because you engaged with X": X is the user's, and really similar.
                    assert reason.because_of in history_ids, (rec, reason)
                    if taste(rec.item_id) == taste(user):
                        assert taste(reason.because_of) == taste(user)


def test_a_new_item_reaches_its_taste_through_content_before_any_click() -> None:
    weights = {"item-item": 1.0, "trending": 0.3, "cf": 0.2, "content": 0.6}
    engine, directions, rng = planted_engine(weights)
    engine.add_item("new", "Brand new", directions[0] + rng.normal(scale=0.3, size=DIM))
    reached = {t: 0 for t in range(TASTES)}
    for user in engine.users:
        recs = engine.recommend(user, k=10, now=TS + 1e4)
        new = [r for r in recs if r.item_id == "new"]
        if new:
            reached[taste(user)] += 1
            assert new[0].reasons[0].source == "content"
            assert taste(new[0].reasons[0].because_of) == 0
    assert reached[0] >= 8 and reached[1] == reached[2] == 0, reached


def test_a_cold_user_gets_trending_items_then_a_personal_list_from_the_first_click() -> None:
    engine, _, _ = planted_engine()
    cold = engine.recommend("newcomer", k=5, now=TS + 1e4)
    assert all(r.reasons[0].source in {"trending", "cf"} for r in cold)
    assert any(r.reasons[0].source == "trending" for r in cold)
    first = engine.process("n1", "newcomer", "t2-0", "click", None, TS + 1e4, k=5)
    assert first is not None
    assert sum(taste(r.item_id) == 2 for r in first) >= 4, first


def test_seen_items_never_come_back() -> None:
    engine, _, _ = planted_engine()
    clicked = [f"t1-{n}" for n in range(PER_TASTE)] + ["t0-0", "t2-3"]
    for n, item in enumerate(clicked):
        engine.process(f"s{n}", "viewer", item, "view", None, TS + 1e4 + n, k=5)
    listed = {r.item_id for r in engine.recommend("viewer", k=100, now=TS + 2e4)}
    assert not set(clicked) & listed
    assert len(listed) == TASTES * PER_TASTE - len(clicked)


def test_duplicates_are_ignored_and_unknown_items_refused() -> None:
    engine, _, _ = planted_engine()
    before = engine.hybrid.item_state("t1-0")
    assert engine.process("d1", "u", "t1-0", "click", None, TS, k=3) is not None
    assert engine.process("d1", "u", "t1-0", "click", None, TS, k=3) is None
    after = engine.hybrid.item_state("t1-0")
    assert after["engagements"] == before["engagements"] + 1
    assert engine.users["u"].events_applied == 1
    with pytest.raises(UnknownItemError, match="upload the item"):
        engine.process("d2", "u", "missing", "click", None, TS, k=3)
    assert engine.users["u"].events_applied == 1


def test_item_changes_applied_in_any_order_give_the_same_item_state() -> None:
    """Two replicas that read the same changes in different orders agree: changes are
    additive, so item factors cannot diverge between workers."""
    engine, _, _ = planted_engine()
    replicas = [HybridRecommender(content_dim=DIM) for _ in range(2)]
    changes = []
    for n in range(60):
        user, item = f"u{n % 3}-x", f"t{n % 3}-{n % PER_TASTE}"
        state = engine.users.setdefault(user, UserState())
        changes.append(engine.hybrid.learn_one(user, state, f"o{n}", item, 1.0, TS + n))
    for replica, order in zip(replicas, [changes, changes[::-1]], strict=True):
        for change in order:
            replica.apply(change)
    for item_id in {item for change in changes for item in change}:
        a, b = (replica.item_state(item_id) for replica in replicas)
        assert a["engagements"] == b["engagements"]
        assert a["cf"]["factor"] == pytest.approx(b["cf"]["factor"], abs=1e-12)
        assert a["trending_log_mass"] == pytest.approx(b["trending_log_mass"], abs=1e-9)


def test_a_stored_user_state_ranks_the_same_after_loading() -> None:
    engine, _, _ = planted_engine()
    hybrid = engine.hybrid
    for user, state in list(engine.users.items())[:5]:
        restored = hybrid.load_state(hybrid.dump_state(state))
        assert restored.history.seen == state.history.seen
        assert hybrid.recommend(user, restored, 5, TS) == hybrid.recommend(user, state, 5, TS)


def test_a_user_stored_by_the_former_ranker_is_loaded_with_its_history() -> None:
    engine, _, _ = planted_engine()
    hybrid = engine.hybrid
    first_format = {
        "profile": [0.5] * DIM,
        "profile_ts": TS,
        "seen": ["t0-1", "t0-2", "t1-3"],
        "history": [["t0-1", 1.0], ["t0-2", 2.0]],
        "recent_event_ids": ["old-1", "old-2", "old-3"],
        "events_applied": 3,
    }
    state = hybrid.load_state(first_format)
    ids = hybrid.catalog.ids
    assert {ids[i] for i in state.history.seen} == {"t0-1", "t0-2", "t1-3"}
    assert [ids[i] for i in state.history.recent_items] == ["t0-1", "t0-2"]
    assert state.events_applied == 3 and not state.remember_event("old-2")
    recs = hybrid.recommend("returning", state, k=5, now=TS)
    assert not {"t0-1", "t0-2", "t1-3"} & {r.item_id for r in recs}
    assert hybrid.load_state(hybrid.dump_state(state)).history.seen == state.history.seen
