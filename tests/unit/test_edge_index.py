"""The embedded store's HNSW index, built in a child process while the shard serves:
what was written during the build is in the swapped-in shard, answers stay exact, and
a failed, outdated or interrupted build leaves a working store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from models.vector_store import EdgeVectorStore, StoredItem
from models.vector_store.edge import INDEXED_MARKER

DIM = 8
SIZES = {"content": DIM, "cf": 3}


def _items(rng: np.random.Generator, ids: range) -> list[StoredItem]:
    return [
        StoredItem(
            f"i{n}",
            {"content": rng.standard_normal(DIM), "cf": rng.standard_normal(3)},
            {"title": f"item {n}"},
        )
        for n in ids
    ]


def _store(path: Path, index_after: int, index_retry_s: float = 0.0) -> EdgeVectorStore:
    store = EdgeVectorStore(
        path, SIZES, {"cf": "dot"}, index_after=index_after, index_retry_s=index_retry_s
    )
    store.start()
    return store


def _building(
    path: Path, seed: int, points: int, index_after: int, index_retry_s: float = 0.0
) -> tuple[EdgeVectorStore, np.random.Generator]:
    """A store holding ``points`` random items, its first build just started."""
    rng = np.random.default_rng(seed)
    store = _store(path, index_after, index_retry_s)
    store.upsert(_items(rng, range(points)))
    _upkeep(store)
    assert store.indexing
    return store, rng


def _upkeep(store: EdgeVectorStore) -> None:
    """``maintain`` as the worker's upkeep calls it: again while it has more to do."""
    while store.maintain():
        pass


def _until_swapped(store: EdgeVectorStore, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while store.indexing:
        assert time.monotonic() < deadline, "the index build did not finish"
        time.sleep(0.05)
        store.maintain()


def _exact_nearest(vectors: dict[str, np.ndarray], query: np.ndarray, limit: int) -> list[str]:
    ids = sorted(vectors)
    matrix = np.array([vectors[i] / np.linalg.norm(vectors[i]) for i in ids])
    order = np.argsort(-(matrix @ (query / np.linalg.norm(query))), kind="stable")
    return [ids[i] for i in order[:limit]]


def test_a_build_swaps_in_an_indexed_shard_with_the_writes_made_meanwhile(tmp_path):
    rng = np.random.default_rng(0)
    store = _store(tmp_path / "items", index_after=300)
    store.upsert(_items(rng, range(299)))
    _upkeep(store)
    assert not store.indexing  # 299 points outside the index: not yet
    store.upsert(_items(rng, range(299, 400)))
    _upkeep(store)
    assert store.indexing and store.unindexed == 400
    # Written while the child builds: new items, and new vectors for indexed ones.
    store.upsert(_items(rng, range(400, 450)))
    moved = {f"i{n}": {"cf": np.full(3, float(n))} for n in range(0, 400, 7)}
    store.set_vectors(moved)
    _until_swapped(store)

    # Outside the index: the 50 new points, and the points changed since the copy.
    assert store.count() == 450 and store.unindexed == 50 + len(moved)
    assert store.shard.info().indexed_vectors_count >= 2 * 400
    stored = {item.item_id: item for item in store.scroll()}
    for item_id, named in moved.items():
        np.testing.assert_array_equal(stored[item_id].vectors["cf"], named["cf"])
    assert stored["i449"].payload["title"] == "item 449"
    content = {item_id: item.vectors["content"] for item_id, item in stored.items()}
    for _ in range(20):
        query = rng.standard_normal(DIM)
        found = store.nearest_ids(query, "content", limit=10, exclude=["i3"])
        expected = _exact_nearest({k: v for k, v in content.items() if k != "i3"}, query, 10)
        assert found == expected

    store.stop()  # a restart opens the indexed shard and knows what is outside the index
    again = _store(tmp_path / "items", index_after=300)
    assert again.count() == 450 and again.unindexed == 50 + len(moved)
    assert not list(tmp_path.glob("items.*"))  # no copy or replaced shard left behind
    again.stop()


def test_a_finished_build_takes_the_writes_made_meanwhile_a_step_at_a_time(tmp_path):
    """The engine holds the GIL while it writes: the journal is applied to the built copy
    a step per call, the shard serving in between, then swapped in."""
    store, rng = _building(tmp_path / "items", seed=7, points=100, index_after=100)
    store.catch_up_step_s = 0.0  # the shortest steps: the writes since the last, and one
    for n in range(10):
        store.set_vectors({f"i{n}": {"cf": np.full(3, float(n))}})
    store._build._child.wait()  # done, not yet swapped in
    assert store.maintain() and store._built is not None  # opened: a step of its own
    assert store.maintain() and store._journal_applied == 1
    store.set_vectors({"i50": {"cf": np.full(3, 50.0)}})  # between two steps: applied too
    assert len(store.nearest(rng.standard_normal(DIM), "content", limit=5)) == 5
    assert store.maintain() and store._journal_applied == 3  # the one since, and one more
    while store.maintain():
        pass
    assert not store.indexing and store.shard.info().indexed_vectors_count >= 2 * 100
    stored = {item.item_id: item for item in store.scroll()}
    for n in [*range(10), 50]:
        np.testing.assert_array_equal(stored[f"i{n}"].vectors["cf"], np.full(3, float(n)))
    assert store.unindexed == 11
    store.stop()


def test_a_built_copy_catches_up_however_fast_writes_come(tmp_path):
    """An upload writes more batches between two steps than a step would apply: each
    step applies those too, so the backlog shrinks and the copy is swapped in."""
    store, _ = _building(tmp_path / "items", seed=9, points=100, index_after=100)
    store.catch_up_step_s = 0.0
    for n in range(20):
        store.set_vectors({f"i{n}": {"cf": np.full(3, float(n))}})
    store._build._child.wait()
    calls = 0
    while store.indexing:
        assert calls < 40, "the copy never caught up"
        store.maintain()
        calls += 1
        for n in range(12):  # written before the next step
            store.set_vectors({f"i{n}": {"cf": np.full(3, -float(calls))}})
    stored = {item.item_id: item for item in store.scroll()}
    assert stored["i0"].vectors["cf"].tolist() == [-float(calls)] * 3  # the latest write
    store.stop()


def test_stopping_while_a_built_copy_catches_up_closes_and_removes_it(tmp_path):
    store, _ = _building(tmp_path / "items", seed=8, points=100, index_after=100)
    for n in range(10):
        store.set_vectors({f"i{n}": {"cf": np.full(3, float(n))}})
    store._build._child.wait()
    assert store.maintain() and store._built is not None  # the copy is open
    store.stop()
    assert store._built is None and not list(tmp_path.glob("items.*"))
    again = _store(tmp_path / "items", index_after=100)
    assert again.count() == 100 and again.get(["i9"])["i9"].vectors["cf"].tolist() == [9.0] * 3
    again.stop()


def test_changed_vectors_count_as_outside_the_index_and_start_a_build(tmp_path):
    """The engine moves a point whose vectors change out of its indexed segment (a CF
    vector published after clicks), so changes bring the next build as new points do."""
    rng = np.random.default_rng(5)
    store = _store(tmp_path / "items", index_after=100)
    store.upsert(_items(rng, range(100)))
    _upkeep(store)
    _until_swapped(store)
    assert store.unindexed == 0
    for n in range(99):
        store.set_vectors({f"i{n % 50}": {"cf": rng.standard_normal(3)}})
    assert store.unindexed == 50  # each point once however often it changed
    store.set_vectors({f"i{n}": {"cf": rng.standard_normal(3)} for n in range(50, 100)})
    _upkeep(store)
    # Not at once: after a build the store waits as long as the build took, so changes
    # made during builds cannot keep it building back to back.
    assert not store.indexing and store.unindexed == 100
    deadline = time.monotonic() + 60
    while not store.indexing:
        assert time.monotonic() < deadline, "no build after the wait"
        time.sleep(0.05)
        store.maintain()
    _until_swapped(store)
    assert store.unindexed == 0
    store.upsert(_items(rng, range(40)))  # uploaded again: moved out of the index too
    assert store.unindexed == 40 and store.count() == 100
    store.stop()


def test_a_build_outdated_by_the_writes_meanwhile_is_dropped_and_started_again(tmp_path):
    store, rng = _building(tmp_path / "items", seed=1, points=100, index_after=100)
    first = store._build
    os.kill(first._child.pid, signal.SIGSTOP)  # a slow build
    store.upsert(_items(rng, range(100, 201)))  # more new points than it is worth
    _upkeep(store)  # dropped, and a new one started over all of them
    assert first._child.poll() is not None and not first.target.exists()
    assert store._build.points == 201 and len(list(tmp_path.glob("items.indexing-*"))) == 1
    _until_swapped(store)
    assert store.unindexed == 0 and store.count() == 201
    store.stop()


def test_a_failed_build_leaves_the_shard_serving_and_is_tried_again(tmp_path, caplog):
    store, rng = _building(tmp_path / "items", 2, points=60, index_after=50, index_retry_s=3600)
    store._build._child.kill()  # the child dies (out of memory, a native abort)
    store._build._child.wait()
    _upkeep(store)
    assert not store.indexing and "the build ended with" in caplog.text
    assert store.count() == 60 and store.unindexed == 60
    assert len(store.nearest(rng.standard_normal(DIM), "content", limit=5)) == 5
    _upkeep(store)
    assert not store.indexing, "tried again before index_retry_s"
    store.index_retry_s, store._next_build = 0.0, 0.0
    _upkeep(store)
    _until_swapped(store)
    assert store.unindexed == 0
    store.stop()


def test_stopping_during_a_build_ends_the_child_and_removes_its_copy(tmp_path):
    store, _ = _building(tmp_path / "items", seed=3, points=60, index_after=50)
    child = store._build._child
    store.stop()
    assert child.poll() is not None
    assert not list(tmp_path.glob("items.indexing-*"))


@pytest.mark.parametrize("new_in_place", [True, False])
def test_start_recovers_a_swap_cut_by_a_crash(tmp_path, new_in_place):
    """A crash between the swap's renames: the old shard is put back unless the new one
    (journal applied, flushed) is in place; copies of unfinished builds are removed."""
    rng = np.random.default_rng(4)
    path = tmp_path / "items"
    with EdgeVectorStore(path, SIZES, {"cf": "dot"}) as store:
        store.upsert(_items(rng, range(30)))
    replaced = tmp_path / "items.replaced"
    if new_in_place:  # the new shard renamed in; the old one not yet removed
        replaced.mkdir()
        (replaced / "edge_config.json").write_text("{}")
    else:  # the old shard renamed aside; the new one not yet renamed in
        path.rename(replaced)
    ended = subprocess.run([sys.executable, "-c", "print(__import__('os').getpid())"], stdout=-1)
    (tmp_path / f"items.indexing-{int(ended.stdout)}-a1" / "segments").mkdir(parents=True)
    # This process's pid: a worker restarted in a container has its predecessor's.
    (tmp_path / f"items.indexing-{os.getpid()}-b2").mkdir()
    (tmp_path / "items.indexing-x").mkdir()  # not a name a build gives: removed
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    running = tmp_path / f"items.indexing-{other.pid}-c3"  # another worker's build
    running.mkdir()
    try:
        with EdgeVectorStore(path, SIZES, {"cf": "dot"}) as store:
            assert store.count() == 30
    finally:
        other.kill()
        other.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["items", running.name]
    assert not (path / INDEXED_MARKER).exists()


_DIES_DURING_A_BUILD = """
import os, sys, time, numpy as np
from models.vector_store import EdgeVectorStore, StoredItem
rng = np.random.default_rng(0)
store = EdgeVectorStore(sys.argv[1], {"content": 64}, index_after=10)
store.start()
store.upsert([StoredItem(f"i{n}", {"content": rng.standard_normal(64)}) for n in range(20000)])
while store.maintain():  # as the worker's upkeep: each step at once
    pass
print(store._build._child.pid, flush=True)
time.sleep(float(sys.argv[2]))
os._exit(0)  # as a SIGKILL: no stop, no cleanup
"""


@pytest.mark.parametrize("lives_s", [0.0, 0.5])
def test_a_build_ends_with_the_worker_that_started_it(tmp_path, lives_s):
    """Killed at once or mid-build, the worker takes its build's child with it."""
    worker = subprocess.run(
        [sys.executable, "-c", _DIES_DURING_A_BUILD, str(tmp_path / "items"), str(lives_s)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    child = int(worker.stdout.strip())
    deadline = time.monotonic() + 10
    while _alive(child):
        assert time.monotonic() < deadline, "the build outlived its worker"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] not in "ZX"  # a zombie has ended
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("failing", ["shutil.copytree", "subprocess.Popen"])
def test_a_build_that_cannot_start_leaves_no_copy_and_waits_before_trying_again(
    tmp_path, monkeypatch, caplog, failing
):
    """A full disk while copying the shard, or no process to start: the store keeps
    serving, the copy is removed, and the next try waits ``index_retry_s`` (a copy
    pauses the caller)."""
    rng = np.random.default_rng(6)
    store = _store(tmp_path / "items", index_after=50, index_retry_s=3600)
    store.upsert(_items(rng, range(60)))

    def half_a_copy(source: Path, target: Path) -> None:
        (target / "segments").mkdir(parents=True)
        raise OSError(28, "No space left on device")

    def no_process(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    replacement = half_a_copy if failing == "shutil.copytree" else no_process
    monkeypatch.setattr(f"models.vector_store.edge_index.{failing}", replacement)
    _upkeep(store)
    assert not store.indexing and "No space left on device" in caplog.text
    assert not list(tmp_path.glob("items.indexing-*"))
    monkeypatch.undo()
    _upkeep(store)
    assert not store.indexing
    store.upsert(_items(rng, range(60, 70)))
    assert len(store.nearest(rng.standard_normal(DIM), "content", limit=70)) == 70
    store.stop()
