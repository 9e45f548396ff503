"""Derived local state read back from ``data_dir``, damaged or crafted: the learned
fusion's weights (``fusion/learned.pt``), the encoding caches (``cache/``) and the local
Kafka broker's pid file (``kafka/kafka.pid``), which ``streamrec broker stop`` signals.

Each is derived, so one that cannot be used is set aside or encoded again, with one log
line: a worker never fails to start on it, a command never ends in a traceback, and no
NaN weight or vector is used.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encoders.fusion import AverageFusion, ModalityProjection
from encoders.learned_fusion import MAX_WEIGHT, LearnedFusion
from encoders.vector_cache import VectorCache
from streams.app import StreamrecApp
from streams.broker import KafkaBroker, NoRecordedBroker
from streams.encoding import build_item_encoder
from streams.events import ItemUpload
from streams.fusion_refit import FusionRefitter
from streams.replay import encode_uploads
from streams.settings import Settings
from tests.conftest import own_records

PROJECTION = ModalityProjection({"text": 8, "image": 12}, common_dim=8)
ITEMS = [
    {"text": np.linspace(-1, 1, 8, dtype=np.float32)},
    {"image": np.linspace(0, 2, 12, dtype=np.float32)},
    {"text": np.ones(8, np.float32), "image": np.arange(12, dtype=np.float32)},
]


def fitted() -> LearnedFusion:
    fusion = LearnedFusion(PROJECTION)
    fusion.fit(ITEMS, [(0, 1), (1, 2)], epochs=2)
    return fusion


def weights() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in fitted().network.state_dict().items()}


def saved(**changes: Any) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        torch.save({"weights": weights(), "fitted_versions": 1, **changes}, path)

    return write


def with_weight(name: str, value: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Path], None]:
    return saved(weights={k: value(v) if k == name else v for k, v in weights().items()})


def cut(keep: Callable[[int], int]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        fitted().save(path)
        data = path.read_bytes()
        path.write_bytes(data[: keep(len(data))])

    return write


def directory(path: Path) -> None:
    path.mkdir()


DAMAGED_WEIGHTS: dict[str, Callable[[Path], None]] = {
    "cut by a crash mid-write": cut(lambda n: n // 2),
    "cut to its first bytes": cut(lambda n: 100),
    "empty": lambda path: path.write_bytes(b""),
    "random bytes": lambda path: path.write_bytes(np.random.default_rng(0).bytes(4096)),
    "other keys": lambda path: torch.save({"state": weights()}, path),
    "an extra key": saved(note=torch.zeros(1)),
    "not a dict": lambda path: torch.save([1, 2], path),
    "weights not a dict": saved(weights=[1.0]),
    "no weights": saved(weights={}),
    "a weight missing": saved(weights={k: v for k, v in weights().items() if k != "gates"}),
    "a weight of another shape (other encoders)": with_weight(
        "projections.image.weight", lambda v: torch.zeros(8, 7)
    ),
    "NaN weights": with_weight("projections.text.weight", lambda v: v * float("nan")),
    "an infinite gate": with_weight("gates", lambda v: torch.full_like(v, float("inf"))),
    "a weight over the bound": with_weight("gates", lambda v: v + 2 * MAX_WEIGHT),
    "integer weights": with_weight("gates", lambda v: v.to(torch.int64)),
    "a weight that is no tensor": with_weight("gates", lambda v: 1.0),  # type: ignore[arg-type, return-value]
    "a huge fitted_versions": saved(fitted_versions=10**400),
    "a negative fitted_versions": saved(fitted_versions=-3),
    "a NaN fitted_versions": saved(fitted_versions=float("nan")),
    "a text fitted_versions": saved(fitted_versions="7"),
    "a directory": directory,
}


def refitter(path: Path) -> FusionRefitter:
    encoder = SimpleNamespace(fusion=LearnedFusion(PROJECTION))
    return FusionRefitter(encoder, None, None, path, 10)  # type: ignore[arg-type]


def starts_from_the_average(fusion: LearnedFusion) -> None:
    assert fusion.version == "learned-v0"
    np.testing.assert_allclose(fusion.fuse(ITEMS), AverageFusion(PROJECTION).fuse(ITEMS), atol=1e-5)


@pytest.mark.parametrize("damage", DAMAGED_WEIGHTS.values(), ids=DAMAGED_WEIGHTS.keys())
def test_unusable_fusion_weights_are_set_aside_and_the_fusion_starts_as_the_average(
    damage: Callable[[Path], None], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "fusion" / "learned.pt"
    path.parent.mkdir()
    damage(path)
    loader = refitter(path)
    with caplog.at_level(logging.WARNING):
        loader.load()
    starts_from_the_average(loader.encoder.fusion)  # type: ignore[arg-type]
    assert not path.exists() and (tmp_path / "fusion" / "learned.pt.unreadable").exists()
    (warning,) = [r.getMessage() for r in own_records(caplog) if r.levelno >= logging.WARNING]
    assert str(path) in warning and "average fusion" in warning and "\n" not in warning
    # The next start finds nothing to load, and the next refit saves where it was.
    refitter(path).load()
    fitted().save(path)
    again = refitter(path)
    again.load()
    assert again.encoder.fusion.version == "learned-v1"


def test_a_worker_starts_on_fusion_weights_cut_by_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path, encoders="hashing", fusion="learned")
    encoder = build_item_encoder(settings)
    path = tmp_path / "fusion" / "learned.pt"
    path.parent.mkdir()
    encoder.fusion.save(path)
    path.write_bytes(path.read_bytes()[:-300])
    app = StreamrecApp(settings, encoder)
    try:
        with caplog.at_level(logging.WARNING):
            app.start()
        assert encoder.fusion.version == "learned-v0"
        assert any(str(path) in r.getMessage() for r in caplog.records)
    finally:
        app.stop()


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_damage_to_saved_weights_loads_finite_weights_or_starts_from_the_average(
    data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("fusion") / "learned.pt"
    fitted().save(path)
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(0, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    path.write_bytes(bytes(raw[: data.draw(st.integers(0, len(raw)))]))
    loader = refitter(path)
    loader.load()
    fusion = loader.encoder.fusion
    assert all(torch.isfinite(t).all() for t in fusion.network.state_dict().values())  # type: ignore[attr-defined]
    assert np.isfinite(fusion.fuse(ITEMS)).all()
    if path.exists():  # read: the file still holds usable weights
        assert fusion.version == "learned-v1"
    else:
        starts_from_the_average(fusion)  # type: ignore[arg-type]


def test_a_crash_while_saving_leaves_the_former_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "learned.pt"
    fitted().save(path)
    before = path.read_bytes()

    def crash(state: Any, handle: Any) -> None:
        handle.write(b"PK\x03\x04 half an archive")
        raise OSError("no space left on device")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="no space"):
        fitted().save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["learned.pt"]  # no temporary file left behind


# -- the encoding caches ---------------------------------------------------------------


def npz_under_the_name(path: Path) -> None:
    with path.open("wb") as handle:
        np.savez(handle, vectors=np.ones((2, 4), np.float32))


DAMAGED_VECTORS: dict[str, Callable[[Path], None]] = {
    "cut in the header": lambda p: p.write_bytes(p.read_bytes()[:60]),
    "cut in the data": lambda p: p.write_bytes(p.read_bytes()[:-8]),
    "empty": lambda p: p.write_bytes(b""),
    "random bytes": lambda p: p.write_bytes(np.random.default_rng(1).bytes(300)),
    "NaN": lambda p: np.save(p, np.full((2, 4), np.nan, np.float32)),
    "infinity": lambda p: np.save(p, np.full((2, 4), np.inf, np.float32)),
    "another row count": lambda p: np.save(p, np.ones((3, 4), np.float32)),
    "another width": lambda p: np.save(p, np.ones((2, 5), np.float32)),
    "one dimension": lambda p: np.save(p, np.ones(8, np.float32)),
    "text": lambda p: np.save(p, np.array([["a"] * 4] * 2)),
    "objects": lambda p: np.save(p, np.array([None, 1], dtype=object), allow_pickle=True),
    "an npz archive": npz_under_the_name,
    "a directory": lambda p: (p.unlink(), p.mkdir()),
}


@pytest.mark.parametrize("damage", DAMAGED_VECTORS.values(), ids=DAMAGED_VECTORS.keys())
def test_unusable_cached_vectors_are_a_miss_encoded_again(
    damage: Callable[[Path], None], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache, inputs, calls = VectorCache(tmp_path), ["a", "b"], []

    def encode(texts: Sequence[str]) -> np.ndarray:
        calls.append(len(texts))
        return np.arange(8, dtype=np.float32).reshape(2, 4)

    expected = cache.get_or_encode("toy", inputs, encode, dim=4)
    damage(cache.path("toy", inputs))
    with caplog.at_level(logging.WARNING):
        vectors = cache.get_or_encode("toy", inputs, encode, dim=4)
    assert np.array_equal(vectors, expected) and calls == [2, 2]
    assert any(str(cache.path("toy", inputs)) in r.getMessage() for r in caplog.records)
    if cache.path("toy", inputs).is_file():  # rewritten: the next read is a hit
        assert np.array_equal(cache.get_or_encode("toy", inputs, encode, dim=4), expected)
        assert calls == [2, 2]


UPLOADS = [ItemUpload(item_id=str(n), title=f"a jazz record {n}") for n in range(4)]


def rewritten(**changes: Any) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with np.load(path) as stored:
            arrays = {name: stored[name] for name in stored.files}
        arrays.update(changes)
        with path.open("wb") as handle:
            np.savez(handle, **{k: v for k, v in arrays.items() if v is not None})

    return write


def nan_vectors(path: Path) -> None:
    with np.load(path) as stored:
        vectors = stored["vectors"].copy()
    vectors[1, 3] = np.nan
    rewritten(vectors=vectors)(path)


DAMAGED_ENCODINGS: dict[str, Callable[[Path], None]] = {
    "cut by a crash": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "random bytes": lambda p: p.write_bytes(np.random.default_rng(2).bytes(500)),
    "NaN in a vector": nan_vectors,
    "vectors of another shape": rewritten(vectors=np.zeros((2, 7), np.float32)),
    "vectors of text": rewritten(vectors=np.array(["a"] * 4)),
    "ok of another length": rewritten(ok=np.ones(2, bool)),
    "dims of another length": rewritten(dims=np.array([384])),
    "an unknown modality": rewritten(modalities=np.array(["smell"] * 4)),
    "an embedding missing": rewritten(embedding_text=None),
    "an embedding of another width": rewritten(embedding_text=np.zeros((4, 3), np.float32)),
    "NaN in an embedding": rewritten(embedding_text=np.full((4, 384), np.nan, np.float32)),
}


@pytest.mark.parametrize("damage", DAMAGED_ENCODINGS.values(), ids=DAMAGED_ENCODINGS.keys())
def test_unusable_cached_encodings_are_a_miss_encoded_again(
    damage: Callable[[Path], None], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path, encoders="hashing")
    first = encode_uploads(settings, UPLOADS)
    (cache,) = (tmp_path / "cache").glob("items-*.npz")
    damage(cache)
    with caplog.at_level(logging.WARNING):
        again = encode_uploads(settings, UPLOADS)
    assert not again.cached and np.array_equal(again.vectors, first.vectors)
    assert [str(cache) in r.getMessage() for r in own_records(caplog)] == [True]
    assert encode_uploads(settings, UPLOADS).cached  # rewritten


# -- the Kafka broker's pid file -------------------------------------------------------


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process leading its own group, as the broker does, that is no broker."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    yield process
    process.kill()
    process.wait()


RECORDED_PIDS: dict[str, Callable[[subprocess.Popen[bytes]], bytes]] = {
    "1 (killpg: every process the caller may signal)": lambda s: b"1",
    "0 (killpg: the caller's own group)": lambda s: b"0",
    "negative": lambda s: b"-1",
    "not a number": lambda s: b"kafka",
    "empty": lambda s: b"",
    "not text": lambda s: b"\xff\xfe",
    "too large": lambda s: b"99999999999999999999",
    "this process": lambda s: str(os.getpid()).encode(),
    "a live process that is no broker (a stale pid reused)": lambda s: str(s.pid).encode(),
}


@pytest.mark.parametrize("recorded", RECORDED_PIDS.values(), ids=RECORDED_PIDS.keys())
def test_a_pid_file_naming_no_broker_of_the_directory_signals_nothing(
    recorded: Callable[[subprocess.Popen[bytes]], bytes],
    sleeper: subprocess.Popen[bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = KafkaBroker(9, tmp_path)
    (tmp_path / "kafka.pid").write_bytes(recorded(sleeper))
    signalled: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "killpg", lambda pid, sig: signalled.append((pid, sig)))
    with pytest.raises(NoRecordedBroker, match="nothing was stopped"):
        broker.down(timeout_s=0.2)
    assert signalled == [] and sleeper.poll() is None
    assert not (tmp_path / "kafka.pid").exists()  # the next stop does not read it again


def test_the_pid_file_of_this_directory_s_broker_stops_it(tmp_path: Path) -> None:
    (tmp_path / "server.properties").write_text("")
    broker = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", str(tmp_path / "server.properties")],
        start_new_session=True,
    )
    try:
        started = Path(f"/proc/{broker.pid}/cmdline")
        for _ in range(100):  # /proc shows the arguments once exec has finished
            if not started.exists() or b"server.properties" in started.read_bytes():
                break
            time.sleep(0.05)
        (tmp_path / "kafka.pid").write_text(str(broker.pid))
        KafkaBroker(9, tmp_path).down(timeout_s=10)
        assert broker.poll() is not None  # down() waited for it (and reaped its child)
        assert not (tmp_path / "kafka.pid").exists()
    finally:
        broker.kill()
        broker.wait()


@pytest.mark.parametrize(
    "damage",
    ["current", "manifest cut", "table file garbled", "lock a directory", "set aside before"],
)
def test_a_users_database_that_cannot_be_read_whole_is_set_aside(
    tmp_path: Path, damage: str
) -> None:
    import rocksdict

    from streams.users_store import set_aside_unreadable, unreadable

    tables = tmp_path / "tables"
    healthy, damaged = tables / "users-0.db", tables / "users-1.db"
    for path in (healthy, damaged):
        db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
        for n in range(2_000):
            db.put(f"user-{n}".encode(), os.urandom(200))
        db.flush()
        db.close()
    if damage == "current":
        (damaged / "CURRENT").write_text("MANIFEST-999999\n")
    elif damage == "manifest cut":
        (manifest,) = damaged.glob("MANIFEST-*")
        manifest.write_bytes(manifest.read_bytes()[:20])
    elif damage == "table file garbled":
        for table in damaged.glob("*.sst"):
            data = bytearray(table.read_bytes())
            data[len(data) // 3 : len(data) // 3 + 256] = bytes(256)
            table.write_bytes(bytes(data))
    elif damage == "lock a directory":
        # A read-only open takes no lock: it passed, and Faust's read-write open then
        # failed on every assignment of the partition.
        (damaged / "LOCK").unlink(missing_ok=True)
        (damaged / "LOCK").mkdir()
    else:
        # A file set aside at an earlier start under the same name: only a directory was
        # removed before the rename, which then failed at every start.
        (damaged / "CURRENT").write_text("MANIFEST-999999\n")
        (tables / "users-1.db.unreadable").write_text("an earlier database, a file")
    assert unreadable(healthy, timeout_s=60) is None
    assert unreadable(damaged, timeout_s=60)
    assert set_aside_unreadable(tables, "users", timeout_s=60) == [damaged]
    assert healthy.exists() and not damaged.exists()
    assert (tables / "users-1.db.unreadable").is_dir()
