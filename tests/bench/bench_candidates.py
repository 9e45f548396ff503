"""What the candidate stage costs and saves: the hybrid ranking Qdrant-retrieved
candidates beside the same hybrid ranking the whole catalog, on one prequential replay.

Both engines see the same events in time order; for each, the user's list is asked for
before the event is learned (a hit when the event's item is in it). The candidate engine
keeps an embedded Qdrant shard with every item's content vector and its CF vector
(published after every event) and retrieves ``--per-source`` items per source. Prints
one JSON line: HitRate and NDCG of both, per-list latency percentiles, their ratio.

    python -m tests.bench.bench_candidates ../shared/data/ml-100k --per-source 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

from threadpoolctl import threadpool_limits
from tqdm import tqdm

from encoders.text import MiniLMTextEncoder, compose_item_text
from encoders.vector_cache import VectorCache
from models.engine import InProcessRecommender
from models.evaluation.datasets import load_dataset
from models.evaluation.metrics import RankingMetrics
from models.hybrid import CF, CONTENT, HybridRecommender
from models.vector_store import EdgeVectorStore
from streams.load import percentile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--per-source", type=int, default=200)
    parser.add_argument("--limit", type=int, default=None, help="replay only the first N events")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--cache", type=Path, default=Path(".streamrec/cache"))
    args = parser.parse_args()

    data = load_dataset(args.dataset)
    events = data.events[: args.limit] if args.limit else data.events
    texts = [compose_item_text(i.title, i.text, i.tags) for i in data.items]
    vectors = VectorCache(args.cache).get_or_encode("minilm", texts, MiniLMTextEncoder().encode)
    dim = vectors.shape[1]

    dense = InProcessRecommender(HybridRecommender(content_dim=dim))
    staged_hybrid = HybridRecommender(content_dim=dim)
    directory = tempfile.mkdtemp(prefix="bench-candidates-")
    store = EdgeVectorStore(
        directory, {CONTENT: dim, CF: staged_hybrid.cf_vector_size}, {CF: "dot"}
    )
    store.start()
    staged_hybrid.use_store(store, dense_max_items=0, per_source=args.per_source)
    staged = InProcessRecommender(staged_hybrid)
    engines = {"dense": dense, "candidates": staged}
    for item, vector in zip(data.items, vectors, strict=True):
        for engine in engines.values():
            engine.add_item(item.item_id, item.title, vector)

    metrics = {name: RankingMetrics(args.k) for name in engines}
    seconds: dict[str, list[float]] = {name: [] for name in engines}
    started = time.perf_counter()
    with threadpool_limits(1), tqdm(events, unit="events", smoothing=0.1) as progress:
        for n, event in enumerate(progress):
            for name, engine in engines.items():
                begin = time.perf_counter()
                listed = engine.recommend(event.user, args.k, event.ts)
                seconds[name].append(time.perf_counter() - begin)
                ids = [r.item_id for r in listed]
                metrics[name].add(ids.index(event.item) if event.item in ids else None)
                engine.learn(
                    event.event_id or f"e{n}",
                    event.user,
                    event.item,
                    event.kind,
                    event.value,
                    event.ts,
                )
    store.stop()

    def latency(name: str) -> dict[str, float]:
        return {
            "p50_ms": round(1000 * percentile(seconds[name], 50), 3),
            "p99_ms": round(1000 * percentile(seconds[name], 99), 3),
        }

    print(
        json.dumps(
            {
                "bench": "candidates",
                "dataset": data.name,
                "events": len(events),
                "items": len(data.items),
                "per_source": args.per_source,
                "k": args.k,
                **{
                    name: {
                        f"hit_rate@{args.k}": round(m.hit_rate, 4),
                        f"ndcg@{args.k}": round(m.ndcg, 4),
                        **latency(name),
                    }
                    for name, m in metrics.items()
                },
                "p50_ratio_candidates_to_dense": round(
                    percentile(seconds["candidates"], 50) / percentile(seconds["dense"], 50), 2
                ),
                "hit_rate_ratio": round(
                    metrics["candidates"].hit_rate / max(metrics["dense"].hit_rate, 1e-12), 4
                ),
                "seconds": round(time.perf_counter() - started, 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            }
        )
    )


if __name__ == "__main__":
    main()
