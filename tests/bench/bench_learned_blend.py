"""What the learned blend costs the worker per event: the in-process engine (the worker's
order: the user side learns, the item changes are applied, then the list) with the fixed
blend and with the learned one, on the same events.

The learned blend ranks the user's candidates once more per event (the list the user
had before the click) to compute its step. Prints one JSON line: per-event latency
percentiles of both, and their ratio.

    python -m tests.bench.bench_learned_blend ../shared/data/ml-100k --limit 5000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

from encoders.text import MiniLMTextEncoder, compose_item_text
from encoders.vector_cache import VectorCache
from models.engine import InProcessRecommender
from models.evaluation.datasets import load_dataset
from models.hybrid import HybridRecommender
from streams.load import percentile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--limit", type=int, default=5_000, help="replay the first N events")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--cache", type=Path, default=Path(".streamrec/cache"))
    args = parser.parse_args()

    data = load_dataset(args.dataset)
    events = data.events[: args.limit]
    texts = [compose_item_text(i.title, i.text, i.tags) for i in data.items]
    vectors = VectorCache(args.cache).get_or_encode("minilm", texts, MiniLMTextEncoder().encode)
    result: dict[str, object] = {
        "bench": "learned_blend",
        "dataset": data.name,
        "events": len(events),
        "items": len(data.items),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    with threadpool_limits(1):
        for name, learned in (("fixed", False), ("learned", True)):
            engine = InProcessRecommender(
                HybridRecommender(content_dim=vectors.shape[1], learned=learned)
            )
            for item, vector in zip(data.items, vectors, strict=True):
                engine.add_item(item.item_id, item.title, vector)
            seconds = []
            for n, e in enumerate(events):
                started = time.perf_counter()
                engine.process(e.event_id or f"e{n}", e.user, e.item, e.kind, e.value, e.ts, args.k)
                seconds.append(time.perf_counter() - started)
            result[f"{name}_ms_p50"] = round(1000 * percentile(seconds, 50), 3)
            result[f"{name}_ms_p99"] = round(1000 * percentile(seconds, 99), 3)
            result[f"{name}_events_per_s"] = round(len(seconds) / sum(seconds), 1)
    result["learned_over_fixed_p50"] = round(
        float(result["learned_ms_p50"]) / float(result["fixed_ms_p50"]),
        2,  # type: ignore[arg-type]
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
