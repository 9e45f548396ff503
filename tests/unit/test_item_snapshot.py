"""The item-side snapshot: a restored hybrid ranks as the one it was taken from, and a
snapshot that cannot be used is refused, never half-loaded."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models import item_snapshot
from models.hybrid import HYBRID_WEIGHTS, HybridRecommender
from models.user_state import UserState

#: The default sources and the two optional ones, whose item side is EASE's fit and the
#: items' modality vectors.
WITH_EXTRAS = {**HYBRID_WEIGHTS, "ease": 0.5, "modalities": 0.3}


def trained(
    seed: int = 0,
    n_items: int = 40,
    n_events: int = 600,
    learned: bool = False,
    weights: dict[str, float] | None = None,
) -> tuple[HybridRecommender, dict]:
    rng = np.random.default_rng(seed)
    hybrid = HybridRecommender(weights, content_dim=4, learned=learned)
    for i in range(n_items):
        vector = rng.normal(size=4)
        hybrid.add_item(f"i{i}", f"Item {i}", vector, {"text": vector, "image": vector[::-1]})
    states: dict[str, UserState] = {}
    for n in range(n_events):
        user = f"u{rng.integers(25)}"
        state = states.setdefault(user, UserState())
        item = f"i{int(rng.zipf(1.5)) % n_items}"
        weight = -1.0 if n % 9 == 0 else 1.0
        hybrid.apply(hybrid.learn_one(user, state, f"e{n}", item, weight, float(n * 60)) or {})
    if hybrid.ease is not None:
        hybrid.ease.refit()
    return hybrid, states


@pytest.mark.parametrize(
    ("learned", "weights"),
    [(False, None), (True, None), (True, WITH_EXTRAS)],
    ids=["fixed blend", "learned blend", "learned blend with ease and modalities"],
)
def test_a_restored_item_side_ranks_and_learns_as_the_original(
    tmp_path: Path, learned: bool, weights: dict[str, float] | None
) -> None:
    original, states = trained(learned=learned, weights=weights)
    path = tmp_path / "item-side" / "snapshot.npz"
    item_snapshot.write(item_snapshot.capture(original, {"positions": {"0": 12}}), path)
    restored = HybridRecommender(weights, content_dim=4, learned=learned)
    loaded = item_snapshot.read(path)
    item_snapshot.restore(restored, loaded)
    assert loaded.header["extra"] == {"positions": {"0": 12}}
    assert restored.catalog.ids == original.catalog.ids and restored.titles == original.titles
    for item_id in original.catalog.ids:
        assert restored.item_state(item_id) == original.item_state(item_id)
    if learned:  # the blend's weights and item counts are item-side state too
        assert original.learned is not None and restored.learned is not None
        assert not np.array_equal(original.learned.weights, original.learned.prior)
        assert np.array_equal(restored.learned.weights, original.learned.weights)
        assert np.array_equal(restored.learned.counts, original.learned.counts)
    if original.ease is not None:  # served at once after a restart, not after a refit
        assert restored.ease is not None and len(original.ease.fit_.items) > 0
        assert np.array_equal(restored.ease.fit_.weights, original.ease.fit_.weights)
    # Both go on learning the same events and rank alike (the content source's cached
    # per-user scores are updated incrementally in the original, recomputed in the copy:
    # equal to rounding).
    for n, (user, state) in enumerate(sorted(states.items())):
        twin = original.load_state(original.dump_state(state))
        for hybrid, user_state in ((original, state), (restored, twin)):
            hybrid.apply(hybrid.learn_one(user, user_state, f"more-{n}", "i3", 1.0, 1e6) or {})
        expected = original.recommend(user, state, 10, 1e6)
        got = restored.recommend(user, twin, 10, 1e6)
        assert [r.item_id for r in got] == [r.item_id for r in expected]
        assert np.allclose([r.score for r in got], [r.score for r in expected], atol=1e-9)


def test_with_uploads_held_only_what_uploads_write_is_read_in_place(tmp_path: Path) -> None:
    """The worker's checkpoint holds uploads back while it writes: the items' vectors
    are then not copied, what clicks change still is, and the file is the same."""
    hybrid, states = trained(learned=True, weights=WITH_EXTRAS)
    held = item_snapshot.capture(hybrid, {}, uploads_held=True)
    copied = item_snapshot.capture(hybrid, {})
    assert held.arrays.keys() == copied.arrays.keys()
    owned = [  # every array the hybrid's item side holds, one level into dicts
        array
        for owner in (*hybrid.sources.values(), hybrid.learned)
        for value in vars(owner).values()
        for array in (value.values() if isinstance(value, dict) else [value])
        if isinstance(array, np.ndarray)
    ]
    in_place = {
        key
        for key, array in held.arrays.items()
        if any(np.shares_memory(array, mine) for mine in owned)
    }
    # Audio would be read in place too; this hybrid has none, and its empty array grows
    # into a copy.
    assert in_place == {
        "source/content/vectors",
        *(
            f"source/modalities/{m}_{kind}"
            for m in ("text", "image")
            for kind in ("vectors", "present")
        ),
    }
    assert not any(
        np.shares_memory(array, held.arrays[key]) for key, array in copied.arrays.items()
    )
    for key, array in copied.arrays.items():
        assert np.array_equal(array, held.arrays[key]), key
    # What a click changes after the capture is not in either.
    user, state = sorted(states.items())[0]
    hybrid.apply(hybrid.learn_one(user, state, "after", "i3", 1.0, 1e6) or {})
    for key, array in copied.arrays.items():
        assert np.array_equal(array, held.arrays[key]), key
    path = tmp_path / "held.npz"
    item_snapshot.write(held, path)
    restored = HybridRecommender(WITH_EXTRAS, content_dim=4, learned=True)
    item_snapshot.restore(restored, item_snapshot.read(path))
    assert (
        restored.content.vectors.tobytes()
        == hybrid.content.vectors[: hybrid.content.n_vectors].tobytes()
    )


def test_an_unusable_snapshot_is_refused_and_leaves_the_hybrid_empty(tmp_path: Path) -> None:
    original, _ = trained(n_events=100)
    path = tmp_path / "snapshot.npz"
    item_snapshot.write(item_snapshot.capture(original, {}), path)
    whole = path.read_bytes()

    def refused(content: bytes, hybrid: HybridRecommender | None = None) -> None:
        path.write_bytes(content)
        target = hybrid if hybrid is not None else HybridRecommender(content_dim=4)
        with pytest.raises(item_snapshot.SnapshotError):
            item_snapshot.restore(target, item_snapshot.read(path))
        assert len(target) == 0

    refused(whole[: len(whole) // 2])  # truncated (a crash while copying it elsewhere)
    refused(b"not a snapshot at all")
    refused(whole, HybridRecommender(content_dim=8))  # other content dimensions
    refused(whole, HybridRecommender({"item-item": 1.0}, content_dim=4))  # other sources
    refused(whole, HybridRecommender(content_dim=4, learned=True))  # no blend state in it
    learned, _ = trained(n_events=100, learned=True)
    item_snapshot.write(item_snapshot.capture(learned, {}), path)
    # The same sources in another order: the blend's rows would load into other sources.
    reordered = dict(reversed(list(HYBRID_WEIGHTS.items())))
    refused(path.read_bytes(), HybridRecommender(reordered, content_dim=4, learned=True))
    snapshot = item_snapshot.capture(original, {})
    snapshot.header["format"] = item_snapshot.FORMAT_VERSION + 1
    item_snapshot.write(snapshot, path)
    refused(path.read_bytes())
    with pytest.raises(item_snapshot.SnapshotError):
        item_snapshot.read(tmp_path / "missing.npz")


def test_a_write_replaces_the_previous_snapshot_whole(tmp_path: Path) -> None:
    path = tmp_path / "snapshot.npz"
    first, _ = trained(seed=1, n_events=50)
    second, _ = trained(seed=2, n_events=80)
    item_snapshot.write(item_snapshot.capture(first, {"n": 1}), path)
    item_snapshot.write(item_snapshot.capture(second, {"n": 2}), path)
    assert item_snapshot.read(path).header["extra"] == {"n": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["snapshot.npz"], "no temporary file left"
    header = json.loads(bytes(np.load(path)["header"]).decode())
    assert header["format"] == item_snapshot.FORMAT_VERSION


def _nan_first(key: str) -> Callable[[item_snapshot.ItemSideSnapshot], None]:
    def craft(snapshot: item_snapshot.ItemSideSnapshot) -> None:
        snapshot.arrays[key] = snapshot.arrays[key].astype(np.float64)
        snapshot.arrays[key].flat[0] = np.nan

    return craft


def _header(
    key: str, change: Callable[[Any], Any]
) -> Callable[[item_snapshot.ItemSideSnapshot], None]:
    def craft(snapshot: item_snapshot.ItemSideSnapshot) -> None:
        snapshot.header[key] = change(snapshot.header[key])

    return craft


def _array(
    key: str, change: Callable[[np.ndarray], np.ndarray]
) -> Callable[[item_snapshot.ItemSideSnapshot], None]:
    def craft(snapshot: item_snapshot.ItemSideSnapshot) -> None:
        snapshot.arrays[key] = change(snapshot.arrays[key])

    return craft


#: Contents of a snapshot file no ``capture`` writes, each loaded as valid before: NaN
#: weights refused every later event, a repeated id made every later item read another's
#: row, factors shorter than their biases raised at a click.
CRAFTED = {
    "NaN in the CF factors": _nan_first("source/cf/items"),
    "NaN in the blend's weights": _nan_first("learned/weights"),
    "+inf in the trending masses": _array("source/trending/log_mass", lambda a: a * 0 + np.inf),
    "CF factors shorter than their biases": _array("source/cf/items", lambda a: a[:2]),
    "a repeated id": _header("ids", lambda ids: [ids[0], *ids[:-1]]),
    "a number as an id": _header("ids", lambda ids: [7, *ids[1:]]),
    "a list as an id": _header("ids", lambda ids: [*ids[:3], ["x"], *ids[4:]]),
    "a number as a title": _header("titles", lambda titles: [1, *titles[1:]]),
    "fewer titles than ids": _header("titles", lambda titles: titles[:-1]),
    "a recorded index past the catalog": _array("recorded", lambda a: a + 10_000),
    "text where numbers go": _array("recorded", lambda a: np.array(["x"])),
    # Values the fold never makes, found by a fourth probe; each failed clicks for good.
    "a trending mass no events up to 2100 make": _array(
        "source/trending/log_mass", lambda a: np.where(np.isfinite(a), 1e6, a)
    ),
    "a title past the bound": _header("titles", lambda titles: ["x" * 1_001, *titles[1:]]),
    "1e39 in float64 content vectors": _array(
        "source/content/vectors", lambda a: _with_first(a.astype(np.float64), 1e39)
    ),
    "1e39 in float64 engagement counts": _array(
        "source/item-item/counts", lambda a: _with_first(a.astype(np.float64), 1e39)
    ),
    "the blend's counts shorter than its first times": _array("learned/counts", lambda a: a[:3]),
    "a negative co-engaged index": _array(
        "source/item-item/rows_items", lambda a: _with_middle(a, -7)
    ),
    "a co-engaged index past the catalog": _array(
        "source/item-item/rows_items", lambda a: a + 10_000
    ),
    "co-engagement rows that end before they start": _array(
        "source/item-item/rows_offsets", lambda a: a[::-1].copy()
    ),
    "empty co-engagement rows past the catalog": _array(
        "source/item-item/rows_offsets", lambda a: np.concatenate([a, np.full(10_000, a[-1])])
    ),
    "engagement counts past the catalog": _array(
        "source/item-item/counts", lambda a: np.concatenate([a, np.zeros(99), [5.0]])
    ),
    "a CF first engagement of a negative index": _array(
        "source/cf/first_item", lambda a: a - 10_000
    ),
}


def _with_first(array: np.ndarray, value: float) -> np.ndarray:
    array.flat[0] = value
    return array


def _with_middle(array: np.ndarray, value: int) -> np.ndarray:
    """``value`` in the middle of ``array``: a row the restore's trial clicks never read."""
    array = array.copy()
    array[len(array) // 2] = value
    return array


@pytest.mark.parametrize("name", CRAFTED)
def test_a_crafted_snapshot_is_refused_and_leaves_the_hybrid_empty(
    tmp_path: Path, name: str
) -> None:
    snapshot = item_snapshot.capture(trained(n_events=200, learned=True)[0], {})
    CRAFTED[name](snapshot)
    path = tmp_path / "snapshot.npz"
    item_snapshot.write(snapshot, path)
    target = HybridRecommender(content_dim=4, learned=True)
    with pytest.raises(item_snapshot.SnapshotError):
        item_snapshot.restore(target, item_snapshot.read(path))
    assert len(target) == 0
    assert target.learned is not None and np.array_equal(
        target.learned.weights, target.learned.prior
    )


@pytest.mark.parametrize("member", ["compressed", "unknown"])
def test_a_snapshot_member_no_write_makes_is_refused_before_it_is_inflated(
    tmp_path: Path, member: str
) -> None:
    """Members were read whole whatever they were: a 1.1 MB file of one deflated member
    took 1.1 GB as it was read."""
    snapshot = item_snapshot.capture(trained(n_events=100)[0], {})
    path = tmp_path / "snapshot.npz"
    item_snapshot.write(snapshot, path)
    with zipfile.ZipFile(path, "a") as archive:
        if member == "compressed":
            archive.writestr("source/cf/zz.npy", b"\0" * 10_000, zipfile.ZIP_DEFLATED)
        else:
            archive.writestr("../elsewhere.npy", b"")
    with pytest.raises(item_snapshot.SnapshotError, match="not one we write"):
        item_snapshot.read(path)


def test_a_snapshot_whose_reading_would_exhaust_the_parser_or_memory_is_refused(
    tmp_path: Path,
) -> None:
    snapshot = item_snapshot.capture(trained(n_events=100)[0], {})
    path = tmp_path / "snapshot.npz"
    deep = np.frombuffer(b"[" * 100_000 + b"]" * 100_000, dtype=np.uint8)
    np.savez(path, **snapshot.arrays, header=deep)
    with pytest.raises(item_snapshot.SnapshotError):
        item_snapshot.read(path)
    item_snapshot.write(snapshot, path)
    # A 150-byte member declaring 2**40 float64s: numpy allocates before it reads.
    declared = f"{{'descr': '<f8', 'fortran_order': False, 'shape': ({2**40},), }}".ljust(117)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(
            "source/cf/zz.npy",
            b"\x93NUMPY\x01\x00"
            + (len(declared) + 1).to_bytes(2, "little")
            + declared.encode()
            + b"\n",
        )
    with pytest.raises(item_snapshot.SnapshotError):
        item_snapshot.read(path)
