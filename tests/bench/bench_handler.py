"""What the worker's interaction handler adds to the core per click, without Faust or a
broker: the handler (``streams/interactions.py``: parse, the user's stored entry read
and written, learn, the item changes applied locally, rank, explain, the messages built
and checked) on a dict for its table and lists for its topics, beside the same core
called in process on the same events (``InProcessRecommender.process``: learn, apply,
rank, explain). Prints one JSON line.

    python -m tests.bench.bench_handler --items 1000 --users 200 --events 3000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from encoders.hashing import HashingTextEncoder
from encoders.text import MiniLMTextEncoder, compose_item_text
from models.engine import InProcessRecommender
from models.hybrid import HybridRecommender
from models.vector_store import open_vector_store
from streams.interactions import InteractionHandler
from streams.load import percentile
from streams.metrics import WorkerMetrics
from streams.outbox import Outbox
from streams.replica import ItemSideReplica
from streams.settings import Settings
from tests.bench.bench_latency import interactions, memory_mb, synthetic_catalog
from tests.unit.interaction_handler import SentTo


def hybrid_with(settings: Settings, catalog: list[dict], vectors: Any) -> HybridRecommender:
    hybrid = HybridRecommender(
        settings.hybrid_weights,
        content_dim=vectors.shape[1],
        learned=settings.hybrid_blend == "learned",
    )
    for item, vector in zip(catalog, vectors, strict=True):
        hybrid.add_item(item["item_id"], item["title"], vector)
    return hybrid


def time_handler(
    settings: Settings, hybrid: HybridRecommender, events: list[dict], warm: int
) -> tuple[list[float], int]:
    """Seconds per event after the first ``warm``, and the bytes the handler wrote."""
    sent: list[tuple[str, bytes]] = []
    topics = {
        name: SentTo(name, sent)
        for name in (settings.topic_item_updates, settings.topic_recommendations)
    }
    metrics = WorkerMetrics(lag=dict)
    store = open_vector_store(
        settings.data_dir / "qdrant", {"content": hybrid.content.vectors.shape[1]}
    )
    users: dict[str, Any] = {}
    handler = InteractionHandler(
        settings,
        hybrid,
        users,
        ItemSideReplica(settings, hybrid, store, metrics),
        Outbox(topics, settings.topic_dead_letters, 1_000_000, metrics),
        committed=lambda topic: {},
        metrics=metrics,
    )
    records = [
        SimpleNamespace(
            key=e["user_id"].encode(),
            value=json.dumps(e).encode(),
            message=SimpleNamespace(
                topic=settings.topic_interactions, partition=0, offset=n, timestamp=None
            ),
        )
        for n, e in enumerate(events)
    ]

    async def run() -> list[float]:
        seconds = []
        for record in records:
            started = time.perf_counter()
            await handler.handle(record)  # type: ignore[arg-type]
            seconds.append(time.perf_counter() - started)
        return seconds

    seconds = asyncio.run(run())
    written = sum(len(v) for _, v in sent) + sum(len(json.dumps(u)) for u in users.values())
    return seconds[warm:], written


def time_core(hybrid: HybridRecommender, events: list[dict], k: int, warm: int) -> list[float]:
    engine = InProcessRecommender(hybrid)
    seconds = []
    for e in events:
        started = time.perf_counter()
        ts = datetime.fromisoformat(e["ts"]).timestamp()
        engine.process(e["event_id"], e["user_id"], e["item_id"], e["kind"], None, ts, k)
        seconds.append(time.perf_counter() - started)
    return seconds[warm:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--warm", type=int, default=500, help="first events, not timed")
    parser.add_argument("--encoders", choices=["pretrained", "hashing"], default="hashing")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="streamrec-bench-handler-"))
    settings = Settings(data_dir=workdir, encoders=args.encoders)
    catalog = synthetic_catalog(args.items)
    encoder = (
        MiniLMTextEncoder(threads=1) if args.encoders == "pretrained" else HashingTextEncoder()
    )
    vectors = encoder.encode([compose_item_text(c["title"], "", c["tags"]) for c in catalog])
    events = interactions(args.events, args.items, args.users)

    handler_s, written = time_handler(
        settings, hybrid_with(settings, catalog, vectors), events, args.warm
    )
    core_s = time_core(hybrid_with(settings, catalog, vectors), events, settings.top_k, args.warm)
    handler_rate, core_rate = len(handler_s) / sum(handler_s), len(core_s) / sum(core_s)
    print(
        json.dumps(
            {
                "bench": "interaction_handler",
                "machine": f"{platform.machine()} cores={os.cpu_count()}",
                "catalog_items": args.items,
                "users": args.users,
                "events_timed": len(handler_s),
                "encoders": args.encoders,
                "blend": settings.hybrid_blend,
                "handler_events_per_s": round(handler_rate, 1),
                "handler_p50_ms": round(1000 * percentile(handler_s, 50), 3),
                "handler_p99_ms": round(1000 * percentile(handler_s, 99), 3),
                "handler_bytes_written_per_event": round(written / args.events),
                "reference_core_events_per_s": round(core_rate, 1),
                "reference_core_p50_ms": round(1000 * percentile(core_s, 50), 3),
                "reference_core_p99_ms": round(1000 * percentile(core_s, 99), 3),
                "handler_over_core_time": round(core_rate / handler_rate, 2),
                "peak_rss_mb": round(memory_mb(os.getpid()), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
