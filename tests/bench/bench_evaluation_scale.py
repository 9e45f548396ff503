"""Evaluation speed and item-item memory against catalog size, on synthetic ratings.

For each catalog size, a ratings log of ``models/evaluation/synthetic.py`` (power-law
popularity, tastes, timestamps) is replayed prequentially with every standard
configuration (no content source: the text encoder is not what is measured) and one
JSON line is printed: events/s overall and over the first and last tenth of the replay
(per-event work that grows with history shows as a falling rate), and the item-item
co-engagement memory beside what the former dense matrix took (4 * items**2 bytes).

    python -m tests.bench.bench_evaluation_scale --items 1700 10000 --events 100000
    python -m tests.bench.bench_evaluation_scale --items 100000 --events 100000 --limit 10000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

from models.evaluation.datasets import ReplayEvent, ReplayItem
from models.evaluation.prequential import prequential
from models.evaluation.suite import standard_configurations, standard_sources
from models.evaluation.synthetic import Shape, generate
from models.sources import Catalog, ItemItemCosine


def run(items: int, events: int, users: int, limit: int | None) -> dict:
    data = generate(Shape(events=events, items=items, users=users))
    replay = [
        ReplayEvent(str(u), str(i), "rating", r, float(ts), f"s-{n}")
        for n, (u, i, r, ts) in enumerate(data.ratings)
    ][:limit]
    catalog = Catalog()
    # The whole catalog up front, as a movies.csv gives it: ranked from the first event.
    items = [ReplayItem(str(n + 1), title) for n, title in enumerate(data.titles)]
    sources = standard_sources(catalog, items, None)
    configurations = standard_configurations(list(sources))
    marks: list[tuple[int, float]] = []
    started = time.perf_counter()
    evaluation = prequential(
        replay,
        catalog,
        sources,
        configurations,
        progress=lambda done, _: marks.append((done, time.perf_counter())),
    )
    seconds = time.perf_counter() - started
    tenth = max(len(replay) // 10, 1)

    points = [(0, started), *marks]

    def rate(start: tuple[int, float], end: tuple[int, float]) -> float | None:
        return round((end[0] - start[0]) / (end[1] - start[1]), 1) if end[0] > start[0] else None

    first_end = next((p for p in points if p[0] >= tenth), points[-1])
    last_start = [p for p in points if p[0] <= len(replay) - tenth][-1]

    item_item = sources["item-item"]
    assert isinstance(item_item, ItemItemCosine)
    n_items = len(catalog)
    return {
        "bench": "evaluation_scale",
        "machine": f"{platform.machine()} cores={os.cpu_count()}",
        "catalog_items": n_items,
        "events": evaluation.events,
        "configurations": len(configurations),
        "seconds": round(seconds, 1),
        "events_per_s": round(evaluation.events / seconds, 1),
        "events_per_s_first_tenth": rate(points[0], first_end),
        "events_per_s_last_tenth": rate(last_start, points[-1]),
        "hybrid_hit_rate_at_10": round(evaluation.results["hybrid"].overall.hit_rate, 4),
        "item_item_bytes": item_item.co.nbytes,
        "item_item_entries": item_item.co.entries,
        "dense_matrix_bytes": 4 * n_items**2,
        "item_item_bytes_over_dense": round(item_item.co.nbytes / (4 * n_items**2), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[1700, 10_000])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=610)
    parser.add_argument("--limit", type=int, help="replay only the first N events")
    args = parser.parse_args()
    for items in args.items:
        print(json.dumps(run(items, args.events, args.users, args.limit)), flush=True)


if __name__ == "__main__":
    main()
