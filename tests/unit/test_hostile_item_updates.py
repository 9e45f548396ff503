"""Crafted records on ``item-updates`` never crash a replica, never put NaN or infinity
into the item side, and never cost the good records around them.

Found from inside: a change that ``apply`` could not take (a string for a number, a
vector of the wrong length or not base64, a NaN, a time in the year 5000) raised in the
middle of the replica's fold, which crashed the worker and again at every restart (the
record is read again), or went silently into the item state of every replica. Each
record is now checked whole before any of it is applied (``models/sources/changes.py``),
and skipped, logged and counted when it fails.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import item_snapshot
from models.hybrid import HybridRecommender, UnknownItemError
from models.learned_blend import PER_SOURCE
from models.packed import FLOAT32, pack
from models.sources.changes import MAX_LEARNED
from models.user_state import UserState
from models.vector_store import open_vector_store
from streams.events import ItemChanges, ItemRecord
from streams.metrics import WorkerMetrics
from streams.records import Rejected
from streams.replica import ItemSideReplica, snapshot_path
from streams.settings import Settings
from tests.unit.interaction_handler import Handler

DIM = 8
ITEMS = [f"i{n}" for n in range(6)]


def replica(path: Path) -> ItemSideReplica:
    hybrid = HybridRecommender(content_dim=DIM, learned=True)
    store = open_vector_store(path / "qdrant", {"content": DIM, "cf": hybrid.cf_vector_size})
    store.start()
    return ItemSideReplica(Settings(data_dir=path), hybrid, store, WorkerMetrics(lag=dict))


def item_records() -> list[bytes]:
    rng = np.random.default_rng(0)
    vectors = [{"content": pack(rng.normal(size=DIM), "content", FLOAT32)} for _ in ITEMS]
    return [
        ItemRecord(item_id=item, vectors=vectors[n], payload={}).model_dump_json().encode()
        for n, item in enumerate(ITEMS)
    ]


def genuine_changes(n: int) -> list[bytes]:
    """What workers write for ``n`` clicks of three users."""
    worker = HybridRecommender(content_dim=DIM, learned=True)
    for item in ITEMS:
        worker.add_item(item, item, np.ones(DIM))
    states = {user: UserState() for user in ("ann", "bob", "cy")}
    records = []
    for offset in range(n):
        user = list(states)[offset % 3]
        changes = worker.learn_one(
            user, states[user], f"e{offset}", ITEMS[offset * 7 % 6], 1.0, 1.7e9 + offset
        )
        worker.apply(changes)
        message = ItemChanges(
            event_id=f"e{offset}",
            user_id=user,
            source_partition=0,
            source_offset=offset,
            changes=changes,
            user_steps=worker.item_dependent_steps(states[user]),
        )
        records.append(message.model_dump_json().encode())
    return records


def crafted(changes: dict[str, Any], user_steps: dict[str, Any] | None = None) -> bytes:
    record = {
        "type": "changes",
        "event_id": "crafted",
        "user_id": "mallory",
        "source_partition": 0,
        "source_offset": 0,
        "changes": changes,
        "user_steps": user_steps or {},
    }
    return json.dumps(record).encode()  # NaN and Infinity as JSON's extension writes them


def item_side(hybrid: HybridRecommender) -> dict[str, Any]:
    assert hybrid.learned is not None
    return {
        "items": {item: hybrid.item_state(item) for item in ITEMS},
        "cf": (hybrid.cf.items.tobytes(), hybrid.cf.bias.tobytes()),
        "blend": (hybrid.learned.weights.tobytes(), hybrid.learned.counts.tobytes()),
        "catalog": list(hybrid.catalog.ids),
    }


def all_finite(hybrid: HybridRecommender) -> bool:
    """No NaN or infinity in the item side (trending's log masses are -inf for "none")."""
    assert hybrid.learned is not None
    arrays = [(name, value) for s in hybrid.sources.values() for name, value in vars(s).items()]
    arrays += [("weights", hybrid.learned.weights), ("first_ts", hybrid.learned.first_ts)]
    for name, array in arrays:
        if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
            continue
        if name == "log_mass":
            array = array[array != -np.inf]
        if not np.isfinite(array).all():
            return False
    return True


def fold_between(path: Path, bad: list[bytes]) -> tuple[ItemSideReplica, ItemSideReplica]:
    """A replica fed the bad records between genuine ones, and one fed the genuine only."""
    good = genuine_changes(2 * len(bad) + 2)
    mixed, clean = replica(path / "mixed"), replica(path / "clean")
    mixed.fold(item_records())
    clean.fold(item_records())
    for n, record in enumerate(good):
        mixed.fold([record] + ([bad[n // 2]] if n % 2 == 0 and n // 2 < len(bad) else []))
        clean.fold([record])
    return mixed, clean


CRAFTED = {
    "dq not base64": {"i0": {"cf": {"dq": "@@", "db": 0.1}}},
    "dq of the wrong length": {"i0": {"cf": {"dq": [1.0, 2.0], "db": 0.1}}},
    "dq holding NaN": {"i0": {"cf": {"dq": [math.nan] * 32, "db": 0.1}}},
    "dq huge": {"i0": {"cf": {"dq": pack(np.full(32, 1e300), "dq"), "db": 0.1}}},
    "db a string": {"i0": {"cf": {"dq": [0.0] * 32, "db": "x"}}},
    "db NaN": {"i0": {"cf": {"dq": [0.0] * 32, "db": math.nan}}},
    "db missing": {"i0": {"cf": {"dq": [0.0] * 32}}},
    "positive without its time": {"i0": {"cf": {"dq": [0.0] * 32, "db": 0.0, "positive": 1}}},
    "co not a list": {"i0": {"item-item": {"co": 5}}},
    "co naming an item twice": {"i0": {"item-item": {"co": ["i1", "i1"]}}},
    "co holding numbers": {"i0": {"item-item": {"co": [1, 2]}}},
    "count a string": {"i0": {"item-item": {"count": "a"}}},
    "count infinite": {"i0": {"item-item": {"count": math.inf}}},
    "count negative": {"i0": {"item-item": {"count": -5.0}}},
    "trending at a string": {"i0": {"trending": {"at": "x"}}},
    "trending at NaN": {"i0": {"trending": {"at": math.nan}}},
    "trending in the year 5000": {"i0": {"trending": {"at": 9.5e10}}},
    "blend step not packed floats": {"i0": {"blend": {"step": "AAAA"}}},
    "blend step holding NaN": {"i0": {"blend": {"step": [math.nan] * 10}}},
    "blend count a fraction": {"i0": {"blend": {"count": 0.5, "at": 1.7e9}}},
    "blend step of no whole sources": {"i0": {"blend": {"step": [0.0] * 30}}},
    "blend sources naming one twice": {
        "i0": {"blend": {"step": [0.0] * 2 * PER_SOURCE, "sources": ["cf", "cf"]}}
    },
    "blend sources not the step's": {
        "i0": {"blend": {"step": [0.0] * 2 * PER_SOURCE, "sources": ["cf"]}}
    },
    "blend sources without a step": {"i0": {"blend": {"sources": ["cf"]}}},
    "blend sources holding a number": {
        "i0": {"blend": {"step": [0.0] * PER_SOURCE, "sources": [7]}}
    },
    "blend sources not a list": {"i0": {"blend": {"step": [0.0] * PER_SOURCE, "sources": "cf"}}},
    "an unknown key": {"i0": {"trending": {"at": 1.7e9, "mass": 1e308}}},
    "a change for content, which makes none": {"i0": {"content": {"profile": [1.0]}}},
    "an item id past 256 characters": {"i" * 300: {"trending": {"at": 1.7e9}}},
    # JSON integers past any float: converting them raised OverflowError, which no check
    # caught, out of the fold.
    "count of 400 digits": {"i0": {"item-item": {"count": 10**400}}},
    "trending at 400 digits": {"i0": {"trending": {"at": -(10**400)}}},
    "dq holding 400 digits": {"i0": {"cf": {"dq": [10**400] + [0.0] * 31, "db": 0.1}}},
    "blend step holding 400 digits": {"i0": {"blend": {"step": [10**400] * PER_SOURCE}}},
    "a good change beside a bad one": {
        "i0": {"trending": {"at": 1.7e9}},
        "i1": {"trending": {"at": math.inf}},
    },
}


@pytest.mark.parametrize("name", CRAFTED)
def test_a_crafted_change_is_skipped_whole_and_the_records_around_it_applied(
    tmp_path: Path, name: str
) -> None:
    mixed, clean = fold_between(tmp_path, [crafted(CRAFTED[name])])
    assert mixed.metrics.dead_letters["item-update"] == 1
    assert item_side(mixed.hybrid) == item_side(clean.hybrid)
    assert all_finite(mixed.hybrid)


@pytest.mark.parametrize(
    "user_steps",
    [
        {"cf": "@@"},
        {"cf": [1.0, 2.0]},
        {"cf": [math.nan] * 32},
        {"cf": {"a": 1}},
        {"cf": [10**400] * 32},
        # Finite, but adopted it overflowed the item side and every list from it was empty.
        {"cf": pack(np.full(32, -1e300), "cf")},
        {"content": [pack(np.full(DIM, 1e300), "content"), 1.7e9]},
    ],
)
def test_a_crafted_user_step_is_never_kept_for_a_redo(tmp_path: Path, user_steps) -> None:
    mixed, _ = fold_between(tmp_path, [crafted({}, user_steps)])
    assert mixed.metrics.dead_letters["item-update"] == 1
    kept = mixed.logged_steps.items()
    assert all(key[1] != 0 or steps != user_steps for key, (_, steps) in kept)


def _crafted(values: np.ndarray) -> str:
    """Float32 bytes in base64 as a crafted record holds them (``pack`` refuses NaN)."""
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")


@pytest.mark.parametrize(
    "vectors",
    [
        {"content": "@@@"},
        {"content": "AAAAAAA="},  # 5 bytes: not whole float32s
        {"content": _crafted(np.ones(DIM - 1))},
        {"content": _crafted(np.full(DIM, np.nan))},
        {"content": _crafted(np.full(DIM, np.inf))},
        {"colour": _crafted(np.ones(DIM))},
    ],
)
def test_a_crafted_item_record_is_skipped_and_the_items_beside_it_stored(
    tmp_path: Path, vectors: dict[str, str]
) -> None:
    side = replica(tmp_path)
    bad = ItemRecord(item_id="bad", vectors=vectors, payload={}).model_dump_json().encode()
    side.fold([*item_records()[:3], bad, *item_records()[3:]])
    assert side.metrics.dead_letters["item-update"] == 1
    assert "bad" not in side.hybrid and all(item in side.hybrid for item in ITEMS)
    assert side.store.count() == len(ITEMS)
    assert all_finite(side.hybrid)


numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.sampled_from([1e308, -1e308, 9.5e10, 1.7e9]),
)
values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=20), st.sampled_from(ITEMS)),
    lambda children: st.lists(children, max_size=40) | st.dictionaries(st.text(), children),
    max_leaves=60,
)
packed = st.builds(
    lambda size, fill: pack(np.full(size, fill), "v"),
    st.sampled_from([0, 1, 31, 32, 33, 10, 5_000]),
    st.sampled_from([0.0, 1e-3, 1e7, -1e300]),
)
keys = st.sampled_from(["dq", "db", "positive", "at", "by", "count", "co", "step"]) | st.text()
sources = st.sampled_from(["cf", "item-item", "trending", "blend", "content", "popularity"])
changes = st.dictionaries(
    st.sampled_from(ITEMS) | st.text(min_size=1, max_size=300),
    st.dictionaries(sources | st.text(), st.dictionaries(keys, values | packed), max_size=3),
    max_size=4,
)
steps = st.dictionaries(sources, values | packed | st.tuples(packed, numbers).map(list), max_size=2)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(changes, steps), min_size=1, max_size=4))
def test_arbitrary_changes_never_crash_the_fold_or_reach_the_item_side_unchecked(
    tmp_path_factory: pytest.TempPathFactory, bad: list[tuple[dict[str, Any], dict[str, Any]]]
) -> None:
    """Whatever the changes hold, the fold goes on; the item side ends finite, and as the
    genuine records alone leave it plus the crafted records that passed the checks (here:
    compared by replaying exactly those on the clean replica)."""
    path = tmp_path_factory.mktemp("fold")
    records = [crafted(change, user_steps) for change, user_steps in bad]
    mixed, clean = fold_between(path, records)
    assert all_finite(mixed.hybrid)
    skipped = mixed.metrics.dead_letters["item-update"]
    assert 0 <= skipped <= len(records)
    if skipped == len(records):
        assert item_side(mixed.hybrid) == item_side(clean.hybrid)


def test_the_steps_of_a_source_this_worker_does_not_run_are_not_kept(tmp_path: Path) -> None:
    """Never checked (no such source here), they went as they were into the snapshot."""
    mixed, _ = fold_between(tmp_path, [crafted({}, {"bogus": [math.nan]})])
    assert all("bogus" not in steps for _, steps in mixed.logged_steps.values())
    mixed.caught_up.set()
    snapshot = item_snapshot.capture(mixed.hybrid, mixed._bookkeeping(mixed.positions))
    json.dumps(snapshot.header, allow_nan=False)


def raw_item(item_id: str, payload: str = "{}", n: int = 0) -> bytes:
    """An item record as JSON text, so a crafted one can hold what the model refuses."""
    vector = _crafted(np.random.default_rng(n).normal(size=DIM))
    body = (
        f'{{"type": "item", "item_id": {json.dumps(item_id)}, "vectors": {{"content": "{vector}"}}'
    )
    return f'{body}, "payload": {payload}}}'.encode()


@pytest.mark.parametrize(
    "bad",
    [
        raw_item("nan", '{"x": NaN}'),
        raw_item("inf", '{"x": [Infinity]}'),
        # Stored, then every read of the store failed (too deep), restarts included.
        raw_item("deep", '{"x": ' + "[" * 150 + "1" + "]" * 150 + "}"),
        # Two of these made every user's list too large to send.
        raw_item("long", json.dumps({"title": "T" * 600_000})),
        raw_item("big", json.dumps({"metadata": {"blob": "b" * 200_000}})),
        raw_item("title", '{"title": ["not", "text"]}'),
        # Refused by every store: the item published, never stored, no dead letter.
        raw_item("wide", '{"metadata": {"n": ' + "9" * 401 + "}}"),
        # Put by the dashboard in an <img src>: script in the operator's browser.
        raw_item("thumb", json.dumps({"thumbnail": 'x" onerror="alert(document.domain)'})),
        raw_item(""),
        raw_item("i" * 300),
    ],
)
def test_a_crafted_item_payload_is_skipped_and_the_store_stays_readable(
    tmp_path: Path, bad: bytes
) -> None:
    side = replica(tmp_path)
    side.fold([*item_records()[:3], bad, *item_records()[3:]])
    assert side.metrics.dead_letters["item-update"] == 1
    assert sorted(side.hybrid.catalog.ids) == ITEMS
    assert sorted(item.item_id for item in side.store.scroll()) == ITEMS
    assert len(side.store.nearest_ids(np.ones(DIM), "content", 10)) == len(ITEMS)


@pytest.mark.parametrize("order", ["good first", "bad first"])
def test_a_bad_record_beside_a_good_one_of_the_same_item_ends_as_one_at_a_time(
    tmp_path: Path, order: str
) -> None:
    """Folded in one fetch or record by record, replicas of the same log hold the same
    catalog: the latest *usable* record of an item wins."""
    good, bad = raw_item("x", n=1), raw_item("x").replace(b'"content"', b'"colour"')
    records = [good, bad] if order == "good first" else [bad, good]
    together, alone = replica(tmp_path / "together"), replica(tmp_path / "alone")
    together.fold(records)
    for record in records:
        alone.fold([record])
    assert "x" in together.hybrid and "x" in alone.hybrid
    stored = [side.store.get(["x"])["x"].vectors["content"] for side in (together, alone)]
    assert stored[0].tobytes() == stored[1].tobytes()


def test_an_item_the_store_refuses_costs_no_other_item_of_its_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    side = replica(tmp_path)
    upsert = side.store.upsert

    def refusing(items: list[Any]) -> None:  # the engine's refusal, as qdrant-edge raises it
        if any(item.item_id == ITEMS[2] for item in items):
            raise ValueError("failed to convert payload")
        upsert(items)

    monkeypatch.setattr(side.store, "upsert", refusing)
    side.fold(item_records())
    assert side.metrics.dead_letters["item-update"] == 1
    assert sorted(side.hybrid.catalog.ids) == [i for i in ITEMS if i != ITEMS[2]]
    assert side.store.count() == len(ITEMS) - 1


def test_items_read_while_the_disk_is_under_the_reserve_are_stored_once_it_is_not(
    tmp_path: Path,
) -> None:
    # The fold looked at the disk before reading; it filled before the store was written.
    side = replica(tmp_path)
    side.store.min_free_bytes = side.store.free_bytes() + 2**40
    side.fold(item_records())
    assert side.metrics.dead_letters["item-update"] == 0, "refused for room, not skipped"
    assert sorted(side.hybrid.catalog.ids) == ITEMS and side.store.count() == 0
    side._store_unstored()  # still no room: kept
    side.store.min_free_bytes = 0
    side._store_unstored()
    assert side.store.count() == len(ITEMS)
    assert sorted(side.store.get(ITEMS)) == ITEMS


def snapshot_and_restart(side: ItemSideReplica, extra: dict[str, Any]) -> ItemSideReplica:
    """A snapshot of ``side`` with ``extra`` as its bookkeeping, and a replica of a
    restarted worker on the same store, its snapshot not yet loaded."""
    item_snapshot.write(item_snapshot.capture(side.hybrid, extra), snapshot_path(side.settings))
    return ItemSideReplica(
        side.settings,
        HybridRecommender(content_dim=DIM, learned=True),
        side.store,
        WorkerMetrics(lag=dict),
    )


@pytest.mark.parametrize(
    "bookkeeping",
    [
        {"positions": {"0": -7}},  # a seek to it raised at every start
        {"logged_steps": [[0, 3, "ann", {"cf": [math.nan] * 32}]]},  # adopted by a redo
        {"logged_steps": [[0, 3, "ann", "not steps"]]},
        {"logged_steps": [[0, 3, {"cf": [0.0] * 32}]]},  # no user: an earlier version
        {"log_offsets": {"u": "x"}},  # by user alone, as an earlier version wrote them
        {"log_offsets": [["u", 0, "x"]]},
    ],
)
def test_a_snapshot_with_crafted_bookkeeping_is_ignored_and_the_log_read_whole(
    tmp_path: Path, bookkeeping: dict[str, Any]
) -> None:
    side = replica(tmp_path)
    side.fold([*item_records(), *genuine_changes(6)])
    restarted = snapshot_and_restart(side, {**side._bookkeeping({0: 12}), **bookkeeping})
    assert restarted._load_snapshot({0: 20}) is None
    assert len(restarted.hybrid) == 0 and not restarted.logged_steps


def test_a_user_s_changes_from_two_partitions_are_each_folded_once(tmp_path: Path) -> None:
    """Keyless records, or partitions added, put one user's events on two partitions: the
    later event, at a lower offset of the other partition, was answered but its changes
    dropped by every replica (the last offset was kept per user, not per partition)."""
    worker = HybridRecommender(content_dim=DIM, learned=True)
    for item in ITEMS:
        worker.add_item(item, item, np.ones(DIM))
    state, records = UserState(), []
    for n, (partition, offset) in enumerate([(1, 500), (0, 10)]):
        changes = worker.learn_one("ann", state, f"e{n}", ITEMS[n], 1.0, 1.7e9 + n)
        worker.apply(changes)
        message = ItemChanges(
            event_id=f"e{n}",
            user_id="ann",
            source_partition=partition,
            source_offset=offset,
            changes=changes,
            user_steps=worker.item_dependent_steps(state),
        )
        records.append(message.model_dump_json().encode())
    side = replica(tmp_path)
    side.fold(item_records())
    expected = item_side(side.hybrid)
    side.fold(records)
    assert item_side(side.hybrid)["items"]["i1"] != expected["items"]["i1"], "e1 folded"
    expected = item_side(side.hybrid)
    side.fold(records)  # re-sent after a restart: folded once
    assert item_side(side.hybrid) == expected

    restarted = snapshot_and_restart(side, side._bookkeeping({0: 11, 1: 501}))
    assert restarted._load_snapshot({0: 20, 1: 600}) == {0: 11, 1: 501}
    restarted.fold(records)
    assert item_side(restarted.hybrid) == expected


def test_changes_a_replica_would_refuse_are_not_applied_where_they_are_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker applied its own changes unchecked while every replica checks them: one
    past the bounds (from state no check had refused) left it differing from the rest."""
    handler = Handler(tmp_path)
    hybrid = handler.handler.hybrid
    learn_one = hybrid.learn_one

    def past_the_bounds(*args: Any) -> Any:
        changes = learn_one(*args)
        changes["item-2"]["cf"]["db"] = 1e7
        return changes

    monkeypatch.setattr(hybrid, "learn_one", past_the_bounds)
    before = hybrid.item_state("item-2")
    with pytest.raises(Rejected) as refused:
        handler.deliver(0, "e-0", "item-2")
    assert refused.value.reason == "invalid-changes" and "1e+06" in refused.value.error
    assert hybrid.item_state("item-2") == before and handler.sent == []


@pytest.mark.parametrize("logged_for, adopted", [("ann", True), ("bob", False)])
def test_a_logged_step_is_adopted_by_a_redo_of_its_own_user_s_event_only(
    tmp_path: Path, logged_for: str, adopted: bool
) -> None:
    """A step is found by its event's position: another user's event at that offset (a
    recreated topic's, or one a crafted record names) took it as its own."""
    handler = Handler(tmp_path)
    step = {"cf": pack(np.full(32, 0.25), "cf")}
    handler.handler.item_side.logged_steps[(0, 0)] = (logged_for, step)
    handler.deliver(0, "e-0", "item-1")  # ann's event at (0, 0)
    assert (handler.users["ann"]["state"]["history"]["own"]["cf"] == step["cf"]) is adopted
    assert (0, 0) not in handler.handler.item_side.logged_steps


def test_changes_each_within_bounds_never_add_up_past_them(tmp_path: Path) -> None:
    """Each change is bounded, their sums were not: 40 crafted records took an item's CF
    factor to 4e7 and the blend's weights to 1e11, and then every click whose step read
    them made changes past the bound, so each was refused, for good."""
    side = replica(tmp_path)
    side.fold(item_records())
    assert side.hybrid.learned is not None
    sources = list(side.hybrid.learned.sources)
    size = len(sources) * PER_SOURCE
    huge = {
        "i0": {
            "cf": {"dq": pack(np.full(32, 1e6), "dq"), "db": 1e6},
            "blend": {"step": pack(np.full(size, -1e6), "step"), "sources": sources},
        }
    }
    side.fold([crafted(huge)] * 40)
    assert side.metrics.dead_letters["item-update"] == 0, "each within bounds"
    assert np.abs(side.hybrid.cf.items).max() <= MAX_LEARNED
    assert np.abs(side.hybrid.cf.bias).max() <= MAX_LEARNED
    assert np.abs(side.hybrid.learned.weights).max() <= MAX_LEARNED
    state = UserState()
    for n, item in enumerate(ITEMS):  # clicks that read the item: their changes are usable
        changes = side.hybrid.learn_one("ann", state, f"e{n}", item, 1.0, 1.7e9 + n)
        side.hybrid.check_changes(changes, side.hybrid.item_dependent_steps(state))
        side.hybrid.apply(changes)
    assert all_finite(side.hybrid)


def test_a_cf_change_counts_one_positive_event_at_most(tmp_path: Path) -> None:
    """A crafted count of 1e6 made one item the negative of nearly every click's step."""
    mixed, clean = fold_between(
        tmp_path,
        [
            crafted(
                {"i0": {"cf": {"dq": [0.0] * 32, "db": 0.0, "positive": 1e6, "at": 1.7e9, "by": 1}}}
            )
        ],
    )
    assert mixed.metrics.dead_letters["item-update"] == 1
    assert item_side(mixed.hybrid) == item_side(clean.hybrid)


def test_a_record_at_a_position_of_this_worker_s_own_is_not_taken_for_it(tmp_path: Path) -> None:
    """Changes applied where they were made are known by their position: a record of
    another user at that position, read first, was skipped as this worker's own, and its
    own applied a second time when it came back; every other replica applied each once."""
    own, other = genuine_changes(2)
    origin, peer = replica(tmp_path / "origin"), replica(tmp_path / "peer")
    for side in (origin, peer):
        side.fold(item_records())
    origin.apply_local(ItemChanges.model_validate_json(own))
    forged = ItemChanges.model_validate_json(other).model_copy(
        update={"source_offset": 0, "event_id": "forged"}
    )
    assert ItemChanges.model_validate_json(own).source_offset == 0
    for side in (origin, peer):
        side.fold([forged.model_dump_json().encode(), own])
    assert item_side(origin.hybrid) == item_side(peer.hybrid)
    assert not origin.applied_locally


def test_whether_a_change_is_applied_does_not_depend_on_when_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A time was bounded to a day past the reader's clock: a record two days ahead was
    refused by the replicas of the day and applied by one reading the log days later."""
    import time

    ahead = time.time() + 2 * 86_400
    after_2100 = {**json.loads(crafted({"i1": {"trending": {"at": 4.2e9}}})), "source_offset": 1}
    records = [crafted({"i0": {"trending": {"at": ahead}}}), json.dumps(after_2100).encode()]
    sides = []
    for days_later in (0, 3):
        monkeypatch.setattr(time, "time", lambda d=days_later: ahead - 2 * 86_400 + d * 86_400)
        side = replica(tmp_path / str(days_later))
        side.fold([*item_records(), *records])
        sides.append(side)
    assert [side.metrics.dead_letters["item-update"] for side in sides] == [1, 1]
    assert item_side(sides[0].hybrid) == item_side(sides[1].hybrid)


def test_items_known_only_from_changes_are_neither_ranked_nor_clicked_until_uploaded(
    tmp_path: Path,
) -> None:
    """One crafted record of 942 kB added 95,000 item ids no one uploaded to every
    replica's catalog: known to the API, accepted as clicks, shown in new users' lists."""
    side = replica(tmp_path)
    side.fold(item_records())
    named = {f"p{n}": {"item-item": {"co": [f"p{n + 1}"]}} for n in range(50)}
    side.fold([crafted(named)])
    hybrid = side.hybrid
    assert len(hybrid) == len(ITEMS) + 51 and not hybrid.knows("p1")
    with pytest.raises(UnknownItemError):
        hybrid.learn_one("ann", UserState(), "e1", "p1", 1.0, 1.7e9)
    listed = {r.item_id for r in hybrid.recommend("bob", UserState(), 20, 1.7e9)}
    assert listed == set(ITEMS)
    uploaded = ItemRecord(
        item_id="p1", vectors=json.loads(item_records()[0])["vectors"], payload={}
    )
    side.fold([uploaded.model_dump_json().encode()])
    assert hybrid.knows("p1")
    assert "p1" in {r.item_id for r in hybrid.recommend("bob", UserState(), 20, 1.7e9)}

    restarted = snapshot_and_restart(side, side._bookkeeping({0: 3}))
    assert restarted._load_snapshot({0: 3}) == {0: 3}
    assert restarted.hybrid.knows("p1") and not restarted.hybrid.knows("p2")


def test_a_snapshot_marking_fewer_items_uploaded_than_the_store_holds_marks_them_all(
    tmp_path: Path,
) -> None:
    """A snapshot whose marks of uploaded items were cut (a crafted one) restored as
    valid: every click on the unmarked items was refused `unknown-item` until each was
    uploaded again, though the store held them all."""
    side = replica(tmp_path)
    side.fold(item_records())
    side.fold([crafted({"p1": {"item-item": {"co": ["i0"]}}})])  # known, never uploaded
    snapshot = item_snapshot.capture(side.hybrid, side._bookkeeping({0: 7}))
    snapshot.arrays["recorded"] = snapshot.arrays["recorded"][:1]
    item_snapshot.write(snapshot, snapshot_path(side.settings))
    restarted = ItemSideReplica(
        side.settings, HybridRecommender(content_dim=DIM, learned=True), side.store, side.metrics
    )
    assert restarted._load_snapshot({0: 7}) == {0: 7}
    assert all(restarted.hybrid.knows(item) for item in ITEMS)
    assert not restarted.hybrid.knows("p1")
