"""Records their producers compressed, through a real broker and a real worker.

Teams' producers compress (``compression.type`` gzip, snappy, lz4 or zstd). One lz4
record stopped the worker, whose consumer had no lz4 library, and every restart fetched
it again. Now every codec decodes, and a batch that still cannot be decoded is
dead-lettered (``undecodable-batch``) while the records around it are processed
(``streams/kafka_compat/undecodable_batches.py``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import kafka.codec
import pytest
from aiokafka import AIOKafkaProducer
from click.testing import CliRunner

from streams.admin import produce
from streams.broker import Broker
from streams.cli import main
from streams.process import settings_env
from streams.replay import read_interactions
from streams.settings import Settings
from tests.conftest import TopicReader, isolated_settings
from tests.integration.helpers import click, recommendations_for, start_worker_with_catalog

pytestmark = pytest.mark.integration

CODECS = ("gzip", "snappy", "lz4", "zstd")


def produce_compressed(
    settings: Settings, codec: str, records: Sequence[tuple[str, dict[str, Any]]]
) -> None:
    """Send ``records`` as one batch compressed with ``codec``, as another team's producer would."""

    async def send() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.effective_bootstrap_servers.split(","),
            compression_type=codec,
            linger_ms=50,  # the records go in one batch
            **settings.aiokafka_options(),
        )
        await producer.start()
        try:
            sent = [
                await producer.send(
                    settings.topic_interactions, json.dumps(value).encode(), key=key.encode()
                )
                for key, value in records
            ]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    asyncio.run(send())


def letters_of(messages: list[tuple[str | None, bytes]]) -> list[dict[str, Any]]:
    return [json.loads(value) for _, value in messages]


def test_records_compressed_with_every_codec_kafka_has_are_processed(
    broker: Broker, tmp_path: Path
) -> None:
    settings = isolated_settings(broker, tmp_path)
    worker = start_worker_with_catalog(settings)
    try:
        recs = TopicReader(settings, settings.topic_recommendations)
        produce(settings, settings.topic_interactions, [("zed", click("z-0", "zed", "space-1"))])
        for n, codec in enumerate(CODECS, start=1):
            user = f"zip-{codec}"
            produce_compressed(
                settings,
                codec,
                [
                    (user, click(f"z-{n}-a", user, "jazz-1", minute=n)),
                    (user, click(f"z-{n}-b", user, "jazz-2", "like", minute=n)),
                ],
            )
        ids = ["z-0", *(f"z-{n}-{x}" for n in range(1, len(CODECS) + 1) for x in "ab")]
        got = recs.wait_for(lambda m: all(recommendations_for(m, i) for i in ids), timeout_s=90)
        recs.close()
        assert recommendations_for(got, "z-4-b").based_on_events == 2
        assert worker.stats()["dead_letters"] == {}
        # The commands read topics with kafka-python: they decode every codec too.
        interactions = TopicReader(settings, settings.topic_interactions)
        read = interactions.wait_for(lambda m: len(m) >= len(ids), timeout_s=30)
        interactions.close()
        assert sorted(json.loads(v)["event_id"] for _, v in read) == sorted(ids)
    finally:
        worker.stop()


def test_a_batch_the_worker_cannot_decode_is_dead_lettered_and_never_stops_it(
    broker: Broker, tmp_path: Path
) -> None:
    # The worker runs without cramjam, aiokafka's library for snappy, lz4 and zstd: what a
    # codec no library here decodes looks like to it.
    no_codecs = tmp_path / "no-codecs"
    no_codecs.mkdir()
    (no_codecs / "cramjam.py").write_text('raise ImportError("this test\'s worker has none")\n')
    env = {"PYTHONPATH": str(no_codecs)}
    settings = isolated_settings(broker, tmp_path)
    worker = start_worker_with_catalog(settings, env=env)
    recs = TopicReader(settings, settings.topic_recommendations)
    letters = TopicReader(settings, settings.topic_dead_letters)
    try:
        produce(
            settings,
            settings.topic_interactions,
            [("una", click("u-1", "una", "cook-1", minute=1))],
        )
        produce_compressed(
            settings,
            "lz4",
            [
                ("una", click("u-2", "una", "cook-2", minute=2)),
                ("una", click("u-3", "una", "cook-3", minute=3)),
            ],
        )
        produce(
            settings,
            settings.topic_interactions,
            [("una", click("u-4", "una", "cook-4", minute=4))],
        )
        got = recs.wait_for(lambda m: recommendations_for(m, "u-4") is not None, timeout_s=90)
        assert recommendations_for(got, "u-4").based_on_events == 2  # u-1 and u-4
        assert recommendations_for(got, "u-2") is None
        (letter,) = letters_of(letters.wait_for(lambda m: len(m) >= 1, timeout_s=30))
        assert letter["reason"] == "undecodable-batch"
        assert letter["source_topic"] == settings.topic_interactions
        assert "offsets 1 to 2" in letter["error"] and "lz4" in letter["error"]

        # A restart neither stops on the batch nor reports it again.
        worker.stop()
        worker.start()
        worker.wait_until(lambda s: s["items"] > 0, timeout_s=180, what="restarted")
        produce(
            settings,
            settings.topic_interactions,
            [("una", click("u-5", "una", "cook-5", minute=5))],
        )
        got = recs.wait_for(lambda m: recommendations_for(m, "u-5") is not None, timeout_s=90)
        assert recommendations_for(got, "u-5").based_on_events == 3
        assert len(letters.wait_for(lambda m: True)) == 1
    finally:
        recs.close()
        letters.close()
        worker.stop()


def test_replay_reads_compressed_records_and_names_a_batch_it_cannot_decode(
    broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = isolated_settings(broker, tmp_path)
    produce(settings, settings.topic_items, [("space-1", {"item_id": "space-1", "title": "S"})])
    produce(settings, settings.topic_interactions, [("ann", click("r-0", "ann", "space-1"))])
    produce_compressed(settings, "lz4", [("ann", click("r-1", "ann", "space-1", minute=1))])
    produce_compressed(settings, "zstd", [("ann", click("r-2", "ann", "space-1", minute=2))])
    assert [e.event_id for e in read_interactions(settings).events] == ["r-0", "r-1", "r-2"]

    # A codec kafka-python cannot decode here: one line naming the place and the way past.
    monkeypatch.setattr(kafka.codec, "has_lz4", lambda: False)
    env = settings_env(settings.model_copy(update={"encoders": "hashing"}))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["replay", "--no-content", "--out", str(out)], env=env)
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    partition = line.split("[")[1].split("]")[0]
    assert f"{settings.topic_interactions}[{partition}]: the records from offset 1" in line
    assert "lz4" in line and f"--from-offsets {partition}:2" in line
    result = CliRunner().invoke(
        main,
        ["replay", "--no-content", "--out", str(out), "--from-offsets", f"{partition}:2"],
        env=env,
    )
    assert result.exit_code == 0, result.output
