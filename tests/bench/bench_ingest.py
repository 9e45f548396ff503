"""Item ingestion through the real broker, per modality, beside the raw encoders in process.

Starts noida-db; for text-only, image and audio items in turn, produces N uploads
(media inline, made here: shapes drawn with PIL, chords and noise with numpy) to a
fresh topic, starts a worker on it and times ingestion from the first to the last
stored item (fetch, parse, base64 and media decoding, encoding, fusion, Qdrant upsert).
Two references, measured in this process after the worker has stopped so each has the
machine to itself: the bare encoder on the same inputs already decoded, and the
worker's own encoding step (parse, media decoding, encoders, fusion) without Kafka,
both in batches of the worker's batch size. Prints one JSON line per modality.

    python -m tests.bench.bench_ingest --items 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from encoders.audio import LogMelAudioEncoder, decode_audio
from encoders.image import EfficientNetLite0ImageEncoder, decode_image
from encoders.text import MiniLMTextEncoder, compose_item_text
from streams.admin import create_topics, produce
from streams.broker import LocalBroker
from streams.encoding import build_item_encoder, content_of
from streams.events import ItemUpload
from streams.process import WorkerProcess
from streams.settings import Settings
from tests.bench import stop_children_on_sigterm
from tests.bench.bench_latency import memory_mb, synthetic_catalog
from tests.conftest import free_port
from tests.media_samples import audio_file, encoded, inline

COLOURS = ["navy", "crimson", "darkgreen", "orange", "purple", "teal", "black", "gold"]


def drawn_image(n: int) -> Image.Image:
    """A 320x240 picture of a few shapes, different for every n."""
    rng = np.random.default_rng(n)
    image = Image.new("RGB", (320, 240), COLOURS[n % len(COLOURS)])
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.integers(0, 300), rng.integers(0, 220)
        size = int(rng.integers(20, 90))
        colour = COLOURS[int(rng.integers(len(COLOURS)))]
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x, y, x + size, y + size], fill=colour)
    return image


def sound(n: int, seconds: float = 5.0, rate: int = 16_000) -> np.ndarray:
    """A chord of two tones over a little noise, different for every n."""
    rng = np.random.default_rng(n)
    t = np.arange(int(seconds * rate)) / rate
    f1, f2 = 110 * 2 ** (rng.integers(0, 36) / 12), 110 * 2 ** (rng.integers(0, 36) / 12)
    wave = 0.3 * np.sin(2 * np.pi * f1 * t) + 0.2 * np.sin(2 * np.pi * f2 * t)
    return (wave + rng.normal(scale=0.05, size=t.size)).astype(np.float32)


def uploads(modality: str, n: int) -> list[dict]:
    titles = synthetic_catalog(n)
    if modality == "text":
        return [{**t, "item_id": f"text-{i}"} for i, t in enumerate(titles)]
    if modality == "image":
        return [
            {"item_id": f"image-{i}", "image": inline(encoded(drawn_image(i)), "image/png")}
            for i in range(n)
        ]
    return [
        {"item_id": f"audio-{i}", "audio": inline(audio_file(sound(i), fmt="FLAC"), "audio/flac")}
        for i in range(n)
    ]


def raw_encoder_rate(modality: str, items: list[dict], batch_size: int, threads: int) -> float:
    """Items per second of the bare encoder on decoded inputs, in the worker's batch size."""
    import base64

    if modality == "text":
        encoder = MiniLMTextEncoder(threads=threads)
        inputs: list = [compose_item_text(i["title"], "", i["tags"]) for i in items]
    elif modality == "image":
        encoder = EfficientNetLite0ImageEncoder(threads=threads)
        inputs = [decode_image(base64.b64decode(i["image"]["data"]), 10**8) for i in items]
    else:
        encoder = LogMelAudioEncoder(threads=threads)
        inputs = [decode_audio(base64.b64decode(i["audio"]["data"]), 600) for i in items]
    encoder.encode(inputs[:2])  # warm up, as the worker is warm after its first batch
    started = time.perf_counter()
    for start in range(0, len(inputs), batch_size):
        encoder.encode(inputs[start : start + batch_size])
    return len(inputs) / (time.perf_counter() - started)


def in_process_pipeline_rate(items: list[dict], settings: Settings) -> float:
    """Items per second of the worker's own encoding step without Kafka: the same uploads,
    parsed, media decoded, encoded and fused by the same MultimodalEncoder, batch by batch."""
    encoder = build_item_encoder(settings)
    contents = [content_of(ItemUpload.model_validate(item)) for item in items]
    encoder.encode(contents[:2])
    started = time.perf_counter()
    for start in range(0, len(contents), settings.encode_batch_size):
        encoder.encode(contents[start : start + settings.encode_batch_size])
    return len(contents) / (time.perf_counter() - started)


def ingest_through_worker(broker: LocalBroker, workdir: Path, items: list[dict]) -> dict:
    """Items waiting on a fresh topic, then a fresh worker: items/s from first to last stored.

    Producing first keeps the producer's speed out of the figure; timing from the first
    stored item keeps the worker's start-up out of it.
    """
    run = uuid.uuid4().hex[:8]
    settings = Settings(
        **broker.client_settings(),  # servers and flavour: the patches its broker needs
        data_dir=workdir / run,
        web_port=free_port(),
        consumer_group=f"bench-{run}",
        topic_items=f"items-{run}",
    )
    create_topics(settings)
    produce(settings, settings.topic_items, [(i["item_id"], i) for i in items])
    worker = WorkerProcess(settings, workdir / f"worker-{run}.log")
    worker.start()
    try:
        first = worker.wait_until(lambda s: s["items"] > 0, 600, "first item stored")
        started, already = time.perf_counter(), first["items"]
        worker.wait_until(lambda s: s["items"] >= len(items), 1800, "every item stored")
        elapsed = time.perf_counter() - started
        peak_mb = memory_mb(worker.pid) if worker.pid else float("nan")
    finally:
        worker.stop()
    return {
        "items_per_s": (len(items) - already) / elapsed,
        "batch_size": settings.encode_batch_size,
        "threads": settings.torch_threads,
        "peak_rss_mb": peak_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--modalities", default="text,image,audio")
    args = parser.parse_args()
    stop_children_on_sigterm()

    workdir = Path(tempfile.mkdtemp(prefix="streamrec-bench-ingest-"))
    broker = LocalBroker(free_port(), workdir / "broker")
    broker.start()
    machine = f"{platform.machine()} {platform.processor() or ''} cores={os.cpu_count()}"
    try:
        for modality in args.modalities.split(","):
            items = uploads(modality, args.items)
            worker = ingest_through_worker(broker, workdir, items)
            raw = raw_encoder_rate(modality, items, worker["batch_size"], worker["threads"])
            pipeline = in_process_pipeline_rate(items, Settings())
            print(
                json.dumps(
                    {
                        "bench": "ingest",
                        "modality": modality,
                        "machine": machine.strip(),
                        "items": args.items,
                        "end_to_end_items_per_s": round(worker["items_per_s"], 1),
                        "raw_encoder_items_per_s": round(raw, 1),
                        "ratio_end_to_end_over_raw": round(worker["items_per_s"] / raw, 2),
                        "in_process_pipeline_items_per_s": round(pipeline, 1),
                        "ratio_end_to_end_over_pipeline": round(
                            worker["items_per_s"] / pipeline, 2
                        ),
                        "worker_peak_rss_mb": round(worker["peak_rss_mb"], 1),
                    }
                ),
                flush=True,
            )
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
