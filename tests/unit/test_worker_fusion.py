"""The worker's learned fusion without a broker: refitted from co-engaged pairs, saved,
the catalog re-fused, and the model loaded again by the next worker on the same data."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from encoders.fusion import ModalityProjection
from encoders.learned_fusion import LearnedFusion
from encoders.media import MediaFetcher, MediaPolicy
from encoders.multimodal import MultimodalEncoder
from encoders.text import MiniLMTextEncoder
from models.hybrid import CONTENT
from streams.app import StreamrecApp
from streams.fusion_refit import FusionRefitter
from streams.settings import Settings


@pytest.fixture(scope="module")
def text_encoder(minilm: MiniLMTextEncoder) -> MiniLMTextEncoder:
    return minilm


def worker(settings: Settings, text_encoder: MiniLMTextEncoder) -> StreamrecApp:
    """A worker whose item-updates topic is a list its own replica folds at once."""
    fusion = LearnedFusion(ModalityProjection({"text": 384}, common_dim=384))
    encoder = MultimodalEncoder(text_encoder, fusion, MediaFetcher(MediaPolicy()))
    app = StreamrecApp(settings, encoder)

    async def send(topic: str, key: str | None, value: bytes) -> None:
        assert topic == settings.topic_item_updates
        app.replica.fold([value])

    app.outbox.send = send  # type: ignore[method-assign]
    return app


def upload(item_id: str, title: str) -> SimpleNamespace:
    message = SimpleNamespace(topic="items", partition=0, offset=0)
    value = json.dumps({"item_id": item_id, "title": title}).encode()
    return SimpleNamespace(key=item_id.encode(), value=value, message=message)


def test_learned_fusion_is_refitted_saved_and_reloaded(tmp_path, text_encoder) -> None:
    settings = Settings(data_dir=tmp_path, fusion="learned", fusion_refresh_pairs=10)
    titles = [f"{topic} story number {n}" for topic in ("jazz", "football") for n in range(6)]
    ids = [f"item-{n}" for n in range(len(titles))]
    first = worker(settings, text_encoder)
    first.start()
    asyncio.run(
        first.ingestion.ingest_batch([upload(i, t) for i, t in zip(ids, titles, strict=True)])
    )
    before = {i: item.vectors[CONTENT] for i, item in first.store.get(ids).items()}
    assert first.store.get(ids[:1])[ids[0]].payload["fusion"] == "learned-v0"

    # Fewer pairs than fusion_refresh_pairs: the timer leaves the model alone.
    first.fusion.coengaged.extend([(ids[0], ids[6])] * 5)
    first.fusion.pairs_since_fit = 5
    asyncio.run(first.fusion.maybe_refit())
    assert first.encoder.fusion.version == "learned-v0"

    # Users pair items across the two topics; the refit must follow them.
    first.fusion.coengaged.extend((ids[n], ids[6 + n]) for n in range(6) for _ in range(5))
    first.fusion.pairs_since_fit += 30
    asyncio.run(first.fusion.maybe_refit())
    assert first.encoder.fusion.version == "learned-v1"
    assert first.fusion.pairs_since_fit == 0
    assert (tmp_path / "fusion" / "learned.pt").exists()
    after = first.store.get(ids)
    assert {item.payload["fusion"] for item in after.values()} == {"learned-v1"}
    gained = [
        float(after[ids[n]].vectors[CONTENT] @ after[ids[6 + n]].vectors[CONTENT])
        - float(before[ids[n]] @ before[ids[6 + n]])
        for n in range(6)
    ]
    assert min(gained) > 0, "co-engaged items moved closer"
    assert after[ids[0]].payload["title"] == titles[0], "payload kept when re-fusing"
    assert np.allclose(
        first.hybrid.content.vectors[first.hybrid.catalog.index(ids[0])],
        after[ids[0]].vectors[CONTENT] / np.linalg.norm(after[ids[0]].vectors[CONTENT]),
        atol=1e-5,
    ), "the ranker's content vectors follow the refit"
    first.stop()

    second = worker(settings, text_encoder)
    second.start()
    try:
        assert second.encoder.fusion.version == "learned-v1"
        stored = second.store.get(ids[:1])[ids[0]]
        assert np.allclose(
            second.encoder.fusion.fuse([{"text": stored.vectors["text"]}])[0],
            stored.vectors[CONTENT],
            atol=1e-5,
        )
        # A refit trains on the latest fusion_fit_max_pairs pairs only (it keeps up).
        second.fusion.fit_max_pairs = 8
        second.fusion.coengaged.extend((ids[n], ids[6 + n]) for n in range(6) for _ in range(5))
        report = asyncio.run(second.fusion.refit())
        assert report["pairs"] == 8 and report["seconds"] >= 0
        assert second.encoder.fusion.version == "learned-v2"
    finally:
        second.stop()


def test_a_refit_is_due_on_new_pairs_or_once_the_interval_passed_with_any() -> None:
    now = [0.0]
    refitter = FusionRefitter(
        None,  # type: ignore[arg-type]  # neither is used to decide
        None,  # type: ignore[arg-type]
        publish_item=None,  # type: ignore[arg-type]
        path=None,  # type: ignore[arg-type]
        refresh_pairs=3,
        refresh_interval_s=60,
        clock=lambda: now[0],
    )
    refitter.engaged("a", "b")
    assert not refitter.due()  # one new pair, just after the last fit
    refitter.engaged("b", "b")  # the same item twice is no pair
    refitter.engaged("b", "c")
    refitter.engaged("c", "d")
    assert refitter.due() and refitter.pairs_since_fit == 3  # enough pairs
    refitter.pairs_since_fit, now[0] = 0, 61.0
    assert not refitter.due()  # the interval passed, but nothing new came in
    refitter.engaged("d", "e")
    assert refitter.due()  # the interval passed and a pair came in


#: A worker with the offline encoders and a fixed fusion, built and started in a fresh
#: interpreter; it prints the torch modules it imported.
OFFLINE_WORKER = """
import sys
from streams.app import StreamrecApp
from streams.encoding import build_item_encoder
from streams.settings import Settings

settings = Settings(data_dir=sys.argv[1], encoders="hashing", fusion=sys.argv[2])
app = StreamrecApp(settings, build_item_encoder(settings))
app.start()
app.stop()
print(sorted(m for m in sys.modules if m.split(".")[0] == "torch")[:3])
"""


@pytest.mark.parametrize("fusion", ["average", "weighted"])
def test_a_worker_that_needs_no_network_never_imports_torch(tmp_path, fusion) -> None:
    """torch makes 600 MB of a process resident; only a learned fusion or a model
    encoder needs it."""
    child = subprocess.run(
        [sys.executable, "-c", OFFLINE_WORKER, str(tmp_path), fusion],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip().splitlines()[-1] == "[]"


def test_the_check_sees_torch_once_a_learned_fusion_needs_it(tmp_path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", OFFLINE_WORKER, str(tmp_path), "learned"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert "torch" in child.stdout.strip().splitlines()[-1]
