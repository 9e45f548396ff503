"""Vectors in stored state and item changes travel packed (``models/packed.py``): exact,
smaller than JSON lists, never holding a NaN, and state stored before as lists still
loads."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from models.hybrid import HybridRecommender
from models.packed import FLOAT32, NonFiniteError, pack, unpack
from tests.planted import DIM, TS, planted_engine

finite = st.floats(allow_nan=False, allow_infinity=False)


@given(arrays(np.float64, st.integers(0, 64), elements=finite))
def test_packed_floats_come_back_bit_for_bit(values: np.ndarray) -> None:
    text = json.loads(json.dumps(pack(values, "v")))
    assert unpack(text, "v").tobytes() == values.tobytes()
    assert unpack(values.tolist(), "v").tobytes() == values.tobytes()  # the list form


@given(
    arrays(
        np.float32,
        st.integers(0, 64),
        elements=st.floats(width=32, allow_nan=False, allow_infinity=False),
    )
)
def test_item_vectors_travel_as_float32_bit_for_bit(values: np.ndarray) -> None:
    """What ingestion publishes and replicas store: half the bytes, exact in float32."""
    text = pack(values, "the content vector", FLOAT32)
    assert len(base64.b64decode(text)) == 4 * len(values)
    back = unpack(text, "the content vector", FLOAT32)
    assert back.dtype == np.float32 and back.tobytes() == values.tobytes()


def test_a_float64_too_large_for_float32_is_refused_as_it_is_packed() -> None:
    with pytest.raises(
        NonFiniteError, match=r"the image vector holds a non-finite number at \[1\]"
    ):
        pack([0.5, 1e39], "the image vector", FLOAT32)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_number_is_neither_packed_nor_unpacked(bad: float) -> None:
    with pytest.raises(NonFiniteError, match=r"the cf factor holds a non-finite number at \[2\]"):
        pack([1.0, 2.0, bad], "the cf factor")
    smuggled = np.array([1.0, 2.0, bad]).astype("<f8").tobytes()
    with pytest.raises(NonFiniteError, match=r"at \[2\]"):
        unpack(base64.b64encode(smuggled).decode(), "the cf factor")
    with pytest.raises(NonFiniteError):
        unpack([1.0, 2.0, bad], "the cf factor")


@pytest.mark.parametrize("text", ["not base64!", "AAAA", "AAAAAAA="])
def test_text_that_is_not_packed_floats_is_refused_naming_what(text: str) -> None:
    with pytest.raises(ValueError, match="the content profile is not packed floats"):
        unpack(text, "the content profile")


def as_lists(stored: Any) -> Any:
    """A stored state with its vectors as JSON lists, as streamrec stored them before."""
    own = stored["history"]["own"]
    own["cf"] = unpack(own["cf"], "cf").tolist()
    own["content"][0] = unpack(own["content"][0], "content").tolist()
    return stored


def test_a_user_state_stored_as_json_ranks_exactly_the_same_packed_or_as_lists() -> None:
    engine, _, _ = planted_engine()
    hybrid: HybridRecommender = engine.hybrid
    for user, state in list(engine.users.items())[:5]:
        packed = json.dumps(hybrid.dump_state(state))
        listed = json.dumps(as_lists(hybrid.dump_state(state)))
        expected = hybrid.recommend(user, state, 5, TS)
        for text in (packed, listed):
            assert hybrid.recommend(user, hybrid.load_state(json.loads(text)), 5, TS) == expected
        # Here 16-wide vectors; the 384-wide content profile alone was 80% of a state.
        assert len(packed) < 0.7 * len(listed)


def listed_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """An event's item changes with their vectors as JSON lists, as written before."""
    return {
        item: {
            source: {
                key: unpack(value, key).tolist() if key in ("dq", "step") else value
                for key, value in change.items()
            }
            for source, change in by_source.items()
        }
        for item, by_source in changes.items()
    }


def test_item_changes_packed_or_as_lists_give_the_item_side_exactly_the_same() -> None:
    """A worker reading item-updates written before the packing (a rolling upgrade) holds
    the same item side, learned blend included, to the last bit."""
    learner, _, _ = planted_engine(hybrid=HybridRecommender(content_dim=DIM, learned=True))
    replicas = []
    for form in (lambda c: c, listed_changes):
        replica = HybridRecommender(content_dim=DIM, learned=True)
        for item_id in learner.hybrid.catalog.ids:
            replica.add_item(item_id, item_id, None)
        replicas.append((replica, form))
    state = learner.users["u0-0"]
    for n, item in enumerate(["t0-1", "t0-2", "t1-3", "t0-4"]):
        changes = learner.hybrid.learn_one("u0-0", state, f"new-{n}", item, 1.0, TS + 100 + n)
        assert any(isinstance(c.get("dq"), str) for by in changes.values() for c in by.values())
        for replica, form in replicas:
            replica.apply(json.loads(json.dumps(form(changes))))
    (a, _), (b, _) = replicas
    assert a.learned is not None and b.learned is not None
    assert a.learned.weights.tobytes() == b.learned.weights.tobytes()
    assert a.cf.items.tobytes() == b.cf.items.tobytes()
