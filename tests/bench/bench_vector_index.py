"""The embedded store's HNSW index, built in another process: what a candidate query
costs before and after, what the index misses, and how long the store's caller waits.

Fills an ``EdgeVectorStore`` with ``--items`` clustered vectors (the worker's named
vectors: a 384-wide content vector, compared by cosine, and a 33-wide CF vector by dot
product), times the candidate stage's query (``nearest`` on "content", 200 hits, a few
seen items excluded) on the unindexed shard, builds the index with ``maintain`` while
CF vectors change (``--writes-per-s``, written once a second as the worker publishes
them), and times the same queries on the indexed shard. Recall is the share of
the exact 200 nearest (Qdrant's exact search on the same shard) the indexed query
returns. The caller's waits are the calls to ``maintain`` that copied the shard, that
applied the writes made meanwhile to the built copy (a few per call, the first opening
it), and that swapped it in. Prints one JSON line.

    python -m tests.bench.bench_vector_index --items 100000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import qdrant_edge as qe

from models.vector_store import EdgeVectorStore, StoredItem
from streams.load import percentile

CONTENT, CF = "content", "cf"
SIZES = {CONTENT: 384, CF: 33}


def clustered(rng: np.random.Generator, n: int, centres: np.ndarray) -> np.ndarray:
    """Vectors around ``centres``: items of a few hundred tastes, not noise."""
    return centres[rng.integers(len(centres), size=n)] + 0.7 * rng.standard_normal(
        (n, centres.shape[1])
    )


def timed_queries(store: EdgeVectorStore, queries: np.ndarray, limit: int) -> list[float]:
    times = []
    for query in queries:
        started = time.perf_counter()
        store.nearest_ids(query, CONTENT, limit, exclude=["i1", "i2", "i3"])
        times.append((time.perf_counter() - started) * 1000)
    return times


def recall(store: EdgeVectorStore, queries: np.ndarray, limit: int) -> float:
    found = 0
    for query in queries:
        hits = store.nearest_ids(query, CONTENT, limit)
        exact = store.shard.query(
            qe.QueryRequest(
                limit=limit,
                query=qe.Query.Nearest(query.astype(np.float32).tolist(), using=CONTENT),
                params=qe.SearchParams(exact=True),
                with_payload=qe.PayloadSelector.Include(["item_id"]),
                with_vector=False,
            )
        )
        found += len(set(hits) & {p.payload["item_id"] for p in exact})
    return found / (limit * len(queries))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--limit", type=int, default=200, help="hits per query")
    parser.add_argument(
        "--writes-per-s", type=int, default=200, help="CF vectors changed during the build"
    )
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    # Queries (users' profiles) lie among the items, around the same tastes.
    centres = rng.standard_normal((300, SIZES[CONTENT]))
    content = clustered(rng, args.items, centres)
    store = EdgeVectorStore(
        Path(tempfile.mkdtemp(prefix="bench-index-")) / "items",
        SIZES,
        {CF: "dot"},
        index_after=args.items,
    )
    store.start()
    for start in range(0, args.items, 1000):
        stop = min(start + 1000, args.items)
        store.upsert(
            [
                StoredItem(f"i{n}", {CONTENT: content[n], CF: rng.standard_normal(SIZES[CF])})
                for n in range(start, stop)
            ]
        )
        if stop % 5000 == 0 and stop < args.items:
            store.maintain()  # as the worker's upkeep during an upload: each flushes
    queries = clustered(rng, args.queries, centres)
    brute = timed_queries(store, queries, args.limit)

    started = time.perf_counter()
    store.maintain()  # flushes the shard, copies it and starts the child
    copy_ms = (time.perf_counter() - started) * 1000
    assert store.indexing, "no build started"
    writes, swap_ms, steps_ms, build_started = 0, 0.0, [], time.perf_counter()
    next_write = build_started
    while store.indexing:
        time.sleep(0.05)  # as the worker's upkeep between two steps
        if time.perf_counter() >= next_write:  # as the worker publishes CF vectors: 1/s
            batch = rng.integers(args.items, size=int(args.writes_per_s))
            store.set_vectors({f"i{i}": {CF: rng.standard_normal(SIZES[CF])} for i in batch})
            writes, next_write = writes + len(batch), next_write + 1.0
        started = time.perf_counter()
        more = store.maintain()
        took_ms = (time.perf_counter() - started) * 1000
        if more:  # a step of the built copy's catch-up with the writes made meanwhile
            steps_ms.append(took_ms)
        elif not store.indexing:
            swap_ms = took_ms
    build_s = time.perf_counter() - build_started
    indexed = timed_queries(store, queries, args.limit)
    print(
        json.dumps(
            {
                "bench": "vector_index",
                "machine": f"{platform.machine()} cores={os.cpu_count()}",
                "items": args.items,
                "limit": args.limit,
                "reference_unindexed_query_p50_ms": round(percentile(brute, 50), 2),
                "reference_unindexed_query_p99_ms": round(percentile(brute, 99), 2),
                "indexed_query_p50_ms": round(percentile(indexed, 50), 2),
                "indexed_query_p99_ms": round(percentile(indexed, 99), 2),
                "p50_ratio_unindexed_over_indexed": round(
                    percentile(brute, 50) / percentile(indexed, 50), 1
                ),
                "recall_at_limit": round(recall(store, queries[:50], args.limit), 4),
                "build_s": round(build_s, 1),
                "writes_during_build": writes,
                "outside_index_after_swap": store.unindexed,
                "caller_wait_copy_ms": round(copy_ms, 1),
                "caller_wait_catch_up_steps": len(steps_ms),
                "caller_wait_longest_catch_up_step_ms": round(max(steps_ms, default=0.0), 1),
                "caller_wait_swap_ms": round(swap_ms, 1),
            }
        )
    )
    store.stop()


if __name__ == "__main__":
    main()
