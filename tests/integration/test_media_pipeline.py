"""Items with images and audio through the real broker: stored with every modality, and
every kind of bad media dead-lettered alone while the rest of its batch is stored."""

from __future__ import annotations

import json

import pytest

from models.hybrid import CONTENT
from models.vector_store import EdgeVectorStore
from streams.admin import produce
from streams.broker import LocalBroker
from streams.process import WorkerProcess
from tests.conftest import TopicReader, isolated_settings
from tests.integration.helpers import (
    click,
    recommendations_for,
    wait_until_replicated,
)
from tests.media_samples import (
    audio_file,
    circles,
    decompression_bomb,
    encoded,
    inline,
    noise,
    stripes,
    tone,
)

pytestmark = pytest.mark.integration


def test_multimodal_items_are_stored_and_bad_media_is_dead_lettered(
    broker: LocalBroker, tmp_path
) -> None:
    media_dir = tmp_path / "media"
    media_dir.mkdir()
    (media_dir / "stripes.png").write_bytes(encoded(stripes(300, 36)))
    settings = isolated_settings(
        broker,
        tmp_path / "data",
        media_allowed_dirs=[media_dir],
        media_max_bytes=200_000,
        media_max_image_pixels=20_000_000,
        media_max_audio_seconds=5,
        media_read_timeout_s=2,
        fusion="learned",
        fusion_refresh_pairs=2,
        fusion_refresh_interval_s=1,
    )
    png = encoded(stripes(256, 32))
    wav = audio_file(tone(440))
    good = {
        "text-only": {"title": "A quiet piano trio", "tags": ["jazz"]},
        "stripes-a": {"image": inline(png, "image/png")},
        "stripes-b": {"image": {"uri": f"file://{media_dir}/stripes.png"}},
        "circles": {"image": inline(encoded(circles(), "JPEG"), "image/jpeg")},
        "tone": {"title": "Tuning fork", "audio": inline(wav, "audio/wav")},
        "noise": {"audio": inline(audio_file(noise(), fmt="FLAC"), "audio/flac")},
        "all-three": {
            "title": "Op-art poster with a hum",
            "image": inline(png, "image/png"),
            "audio": inline(audio_file(tone(220), fmt="OGG"), "audio/ogg"),
        },
    }
    bad = {
        "corrupt-image": ({"image": inline(png[: len(png) // 3], "image/png")}, "media-corrupt"),
        "truncated-audio": ({"audio": inline(wav[:40], "audio/wav")}, "media-corrupt"),
        "unknown-format": (
            {"image": inline(b"GIF-ish? no: plain text", "image/gif")},
            "media-unsupported-format",
        ),
        "oversized": (
            {"image": inline(png + bytes(300_000), "image/png")},
            "media-oversized",
        ),
        "bomb": ({"image": inline(decompression_bomb(), "image/png")}, "media-oversized"),
        "too-long": (
            {"audio": inline(audio_file(tone(440, 6.0, rate=8000), rate=8000), "audio/wav")},
            "media-oversized",
        ),
        "mislabelled": ({"image": inline(wav, "image/png")}, "media-mislabelled"),
        "passwd": ({"image": {"uri": "file:///etc/passwd"}}, "media-disallowed-uri"),
        "metadata-service": (
            {"image": {"uri": "http://169.254.169.254/latest/meta-data/"}},
            "media-disallowed-uri",
        ),
        "ftp": ({"image": {"uri": "ftp://example.com/a.png"}}, "media-disallowed-uri"),
        "unreachable": (
            {"image": {"uri": "http://no-such-host.invalid/a.png"}},
            "media-unreachable",
        ),
        "bad-base64": ({"image": {"data": "%%%", "mime": "image/png"}}, "media-corrupt"),
    }
    # Good and bad interleaved, in one production burst: they share encode batches.
    goods = list(good.items())
    bads = [(key, fields) for key, (fields, _) in bad.items()]
    alternating = [pair for n in range(len(bads)) for pair in (bads[n : n + 1] + goods[n : n + 1])]
    uploads = [(key, {"item_id": key, **fields}) for key, fields in alternating]
    expected_good = set(good)
    assert len(uploads) == len(good) + len(bad)

    letters = TopicReader(settings, settings.topic_dead_letters)
    recs = TopicReader(settings, settings.topic_recommendations)
    worker = WorkerProcess(settings, settings.data_dir / "worker.log")
    worker.start()
    try:
        worker.wait_until(lambda s: True, timeout_s=180, what="web server up")
        produce(settings, settings.topic_items, uploads)
        worker.wait_until(
            lambda s: s["items"] >= len(expected_good), timeout_s=180, what="good items stored"
        )
        dead = letters.wait_for(lambda m: len(m) >= len(bad), timeout_s=60)
        stats = worker.stats()
        # An image-only item is recommendable by what it looks like.
        produce(
            settings, settings.topic_interactions, [("vera", click("m-1", "vera", "stripes-a"))]
        )
        got = recs.wait_for(lambda m: recommendations_for(m, "m-1") is not None)
        # Two more clicks make two co-engaged pairs: the worker refits its learned fusion.
        more = [click("m-2", "vera", "stripes-b", minute=1), click("m-3", "vera", "tone", minute=2)]
        produce(settings, settings.topic_interactions, [("vera", event) for event in more])
        worker.wait_until(lambda s: s["fusion"] == "learned-v1", 60, "learned fusion refitted")
        # Re-fused items reach the store through item-updates, like new ones.
        wait_until_replicated(settings, [worker])
    finally:
        worker.stop()
        letters.close()
        recs.close()

    reasons = {json.loads(v)["key"]: json.loads(v)["reason"] for _, v in dead}
    assert reasons == {item_id: reason for item_id, (_, reason) in bad.items()}
    assert stats["items"] == len(expected_good)
    assert sum(stats["dead_letters"].values()) == len(bad)
    errors = {json.loads(v)["key"]: json.loads(v)["error"] for _, v in dead}
    assert "media_allowed_dirs" in errors["passwd"]
    assert "pixels" in errors["bomb"] and "media_max_audio_seconds" in errors["too-long"]

    # Before any refit the learned fusion is the average one: the other rendering of the
    # same pattern is the closest item.
    ranked = [item.item_id for item in recommendations_for(got, "m-1").items]
    assert ranked[0] == "stripes-b", ranked

    with EdgeVectorStore(settings.data_dir / "qdrant" / settings.collection, {}) as store:
        stored = store.get(sorted(expected_good))
    assert set(stored) == expected_good
    modalities = {item_id: item.payload["modalities"] for item_id, item in stored.items()}
    assert modalities["text-only"] == ["text"]
    assert modalities["stripes-a"] == ["image"]
    assert modalities["noise"] == ["audio"]
    assert modalities["tone"] == ["audio", "text"]
    assert modalities["all-three"] == ["audio", "image", "text"]
    # Every modality's vector and the fused one; "cf" too once a CF step touched the item.
    assert set(stored["all-three"].vectors) - {"cf"} == {CONTENT, "text", "image", "audio"}
    assert {item.payload["fusion"] for item in stored.values()} == {"learned-v1"}
    assert (settings.data_dir / "fusion" / "learned.pt").exists()
