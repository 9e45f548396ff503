"""Click-to-recommendation latency through the real broker, beside the raw core in process.

Starts noida-db and a worker, uploads a synthetic catalog, then produces interactions at
a target rate and times each one from produce to the consumed recommendations message.
The reference is the same core (learn + recommend on an embedded store with the same
catalog) called directly in this process.

The floor: after the worker, a bare Faust agent that answers each interaction with a
10-item Recommendations message (``tests/bench/faust_echo.py``) is driven through the
same broker and topics with the same driver (``streams.load.drive``), at the target rate
and at full speed; the worker is driven at full speed too (``--full-speed-events``), and
its sustained rate is reported as a ratio of the echo's. A second echo moves the
worker's records without its work (a table entry, item changes sent and read back, the
list) at full speed: the floor of the worker's record pattern. Prints one JSON line.

    python -m tests.bench.bench_latency --items 1000 --rate 50 --seconds 20
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from encoders.hashing import HashingTextEncoder
from encoders.text import MiniLMTextEncoder, compose_item_text
from models.engine import InProcessRecommender
from models.hybrid import HybridRecommender
from streams.admin import create_topics, produce
from streams.broker import Broker, make_broker
from streams.load import drive, percentile
from streams.process import WorkerProcess, settings_env
from streams.settings import Settings
from tests.bench import stop_children_on_sigterm
from tests.conftest import free_port

ADJECTIVES = [
    "Silent",
    "Golden",
    "Lost",
    "Electric",
    "Hidden",
    "Broken",
    "Wild",
    "Last",
    "Frozen",
    "Secret",
]
NOUNS = [
    "River",
    "Planet",
    "Kitchen",
    "Orchestra",
    "Garden",
    "Stadium",
    "City",
    "Machine",
    "Forest",
    "Ocean",
]
GENRES = [
    "thriller",
    "comedy",
    "documentary",
    "jazz album",
    "cookbook",
    "sci-fi novel",
    "football story",
    "podcast",
    "travel guide",
    "drama",
]


def synthetic_catalog(n: int) -> list[dict]:
    combos = itertools.cycle(itertools.product(ADJECTIVES, NOUNS, GENRES))
    return [
        {"item_id": f"item-{i}", "title": f"The {a} {b}", "tags": [g]}
        for i, (a, b, g) in zip(range(n), combos, strict=False)
    ]


def memory_mb(pid: int, field: str = "VmHWM") -> float:
    """A process's memory from /proc: ``VmHWM`` (peak resident) or ``VmRSS`` (resident now)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker_with_catalog(
    broker: Broker,
    workdir: Path,
    catalog: list[dict],
    encoders: str = "pretrained",
    vector_index_after: int = Settings().vector_index_after,
) -> tuple[Settings, WorkerProcess, float, float]:
    """A worker on ``broker`` with ``catalog`` stored and, past ``vector_index_after``
    items, indexed; returns the seconds ingestion took, and then the index."""
    settings = Settings(
        **broker.client_settings(),
        data_dir=workdir / "data",
        web_port=free_port(),
        encoders=encoders,
        vector_index_after=vector_index_after,
    )
    create_topics(settings)
    worker = WorkerProcess(settings, workdir / "worker.log")
    worker.start()
    try:
        worker.wait_until(lambda s: True, 180, "web server up")
        started = time.perf_counter()
        produce(settings, settings.topic_items, [(c["item_id"], c) for c in catalog])
        worker.wait_until(lambda s: s["items"] >= len(catalog), 1800, "catalog stored")
        ingested = time.perf_counter()
        worker.wait_until(
            lambda s: (
                not vector_index_after or s["items_outside_vector_index"] < vector_index_after
            ),
            3600,
            "vector index built",
        )
    except BaseException:
        worker.stop()
        raise
    return settings, worker, ingested - started, time.perf_counter() - ingested


def interactions(n: int, items: int, users: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(hours=1)
    return [
        {
            "event_id": f"bench-{i}",
            "user_id": f"user-{rng.randrange(users)}",
            "item_id": f"item-{rng.randrange(items)}",
            "kind": rng.choice(["click", "view", "like", "purchase", "skip"]),
            "ts": (start + timedelta(milliseconds=i)).isoformat(),
        }
        for i in range(n)
    ]


def interactions_from(start: int, n: int, items: int, users: int, seed: int) -> list[dict]:
    """``interactions`` with event ids from ``start`` on (each run answers its own ids)."""
    events = interactions(n, items, users, seed)
    for offset, event in enumerate(events):
        event["event_id"] = f"bench-{start + offset}"
    return events


def faust_echo_floor(
    settings: Settings,
    workdir: Path,
    rate: float,
    rate_events: list[dict],
    full: list[dict],
    records: str = "list",
) -> dict:
    """The bare Faust echo through the same broker and driver: at ``rate`` (unless
    ``rate_events`` is empty), then at full speed. ``records``: "list" (the list alone)
    or "worker" (the worker's records, ``tests/bench/faust_echo.py``). Its consumer
    starts at the topic's end, so it is warmed up first."""
    log_path = workdir / f"echo-{records}.log"
    log = log_path.open("ab")
    echo = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.faust_echo", "worker", "-l", "warn"],
        env={**settings_env(settings), "STREAMREC_ECHO_RECORDS": records},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        warm = 0
        while True:  # until its group is assigned and it answers
            probe = interactions_from(10_000_000 + warm, 1, 10, 10, seed=warm)
            warm += 1
            if drive(settings, probe, None, timeout_s=3)["recommendations_received"]:
                break
            if time.monotonic() > deadline or echo.poll() is not None:
                raise RuntimeError(f"the Faust echo did not answer; see {log_path}")
        at_rate = drive(settings, rate_events, rate) if rate_events else {}
        at_full = drive(settings, full, None)
        return {"at_rate": at_rate, "full_speed": at_full}
    finally:
        echo.terminate()
        try:
            echo.wait(timeout=30)
        except subprocess.TimeoutExpired:
            echo.kill()
        log.close()


def reference_core(
    catalog: list[dict],
    events: list[dict],
    k: int,
    encoders: str = "pretrained",
    learned: bool = True,
) -> dict:
    """The same core, called in process: learn, apply, recommend per event, with the
    worker's blend (the raw encoder is the worker's text encoder, timed on the catalog)."""
    encoder = MiniLMTextEncoder(threads=1) if encoders == "pretrained" else HashingTextEncoder()
    texts = [compose_item_text(c["title"], "", c["tags"]) for c in catalog]
    started = time.perf_counter()
    vectors = encoder.encode(texts)
    encode_s = time.perf_counter() - started
    latencies = []
    engine = InProcessRecommender(HybridRecommender(content_dim=encoder.dim, learned=learned))
    for c, vector in zip(catalog, vectors, strict=True):
        engine.add_item(c["item_id"], c["title"], vector)
    for event in events:
        started = time.perf_counter()
        ts = datetime.fromisoformat(event["ts"]).timestamp()
        engine.process(
            event["event_id"], event["user_id"], event["item_id"], event["kind"], None, ts, k
        )
        latencies.append((time.perf_counter() - started) * 1000)
    return {
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "encode_items_per_s": len(texts) / encode_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0, help="interactions per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--broker", choices=["noida-db", "kafka"], default="noida-db", help="the local broker"
    )
    parser.add_argument(
        "--encoders",
        choices=["pretrained", "hashing"],
        default="pretrained",
        help="the worker's encoders (hashing: no model weights, for large catalogs)",
    )
    parser.add_argument(
        "--full-speed-events",
        type=int,
        default=2000,
        help="events driven as fast as possible, at the worker and at the Faust echo",
    )
    parser.add_argument(
        "--vector-index-after",
        type=int,
        default=Settings().vector_index_after,
        help="the worker's setting (0: no HNSW index, every Qdrant query reads every vector)",
    )
    parser.add_argument(
        "--echo-records-parts",
        nargs="*",
        default=[],
        metavar="PARTS",
        help="also run the echo moving only these of the worker's records, each a comma list"
        " of table, changes, read_back (e.g. table changes,read_back): what each part costs",
    )
    args = parser.parse_args()
    stop_children_on_sigterm()

    workdir = Path(tempfile.mkdtemp(prefix="streamrec-bench-"))
    catalog = synthetic_catalog(args.items)
    events = interactions(int(args.rate * args.seconds), args.items, args.users)
    broker = make_broker(args.broker, free_port(), workdir)
    broker.start()
    worker: WorkerProcess | None = None
    n_rate = len(events)
    full_worker = interactions_from(n_rate, args.full_speed_events, args.items, args.users, 2)
    try:
        settings, worker, ingest_s, index_s = worker_with_catalog(
            broker, workdir, catalog, args.encoders, args.vector_index_after
        )
        load = drive(settings, events, args.rate)
        full_speed = drive(settings, full_worker, None)
        worker_peak_mb = memory_mb(worker.pid) if worker.pid else float("nan")
        worker_stats = worker.stats() or {}
        worker_gc = worker_stats.get("garbage_collection")
        worker_loop = worker_stats.get("event_loop_stalls")
        worker.stop()
        echo_rate = interactions_from(2 * n_rate + args.full_speed_events, n_rate, 10, 10, 3)
        echo_full = interactions_from(
            3 * n_rate + args.full_speed_events, args.full_speed_events, 10, 10, 4
        )
        floor = faust_echo_floor(settings, workdir, args.rate, echo_rate, echo_full)
        echo_records = interactions_from(
            3 * n_rate + 2 * args.full_speed_events, args.full_speed_events, 10, args.users, 5
        )
        records_floor = faust_echo_floor(
            settings, workdir, args.rate, [], echo_records, records="worker"
        )
        parts_rate = {}
        for n, parts in enumerate(args.echo_records_parts):
            events_for_parts = interactions_from(
                3 * n_rate + (3 + n) * args.full_speed_events,
                args.full_speed_events,
                10,
                args.users,
                6 + n,
            )
            run = faust_echo_floor(settings, workdir, args.rate, [], events_for_parts, parts)
            parts_rate[parts] = run["full_speed"]["sustained_rate_per_s"]
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()

    reference = reference_core(
        catalog, events, settings.top_k, args.encoders, settings.hybrid_blend == "learned"
    )
    print(
        json.dumps(
            {
                "bench": "click_to_recommendation",
                "broker": broker.flavour,
                "machine": f"{platform.machine()} {platform.processor() or ''} cores={__import__('os').cpu_count()}".strip(),
                "catalog_items": len(catalog),
                "encoders": args.encoders,
                "users": args.users,
                **load,
                "worker_peak_rss_mb": round(worker_peak_mb, 1),
                "worker_freeze_heap_at_ready": settings.freeze_heap_at_ready,
                "worker_garbage_collection": worker_gc,
                "worker_event_loop_stalls": worker_loop,
                "catalog_ingest_items_per_s": round(len(catalog) / ingest_s, 1),
                "vector_index_after": args.vector_index_after,
                "vector_index_built_after_ingest_s": round(index_s, 1),
                "reference_core_p50_ms": round(reference["p50_ms"], 2),
                "reference_core_p99_ms": round(reference["p99_ms"], 2),
                "reference_raw_encoder_items_per_s": round(reference["encode_items_per_s"], 1),
                "p50_ratio_end_to_end_over_core": round(load["p50_ms"] / reference["p50_ms"], 1),
                "worker_full_speed_rate_per_s": full_speed["sustained_rate_per_s"],
                "worker_full_speed_p50_ms": full_speed["p50_ms"],
                "worker_full_speed_p99_ms": full_speed["p99_ms"],
                "faust_echo_p50_ms": floor["at_rate"]["p50_ms"],
                "faust_echo_p99_ms": floor["at_rate"]["p99_ms"],
                "faust_echo_full_speed_rate_per_s": floor["full_speed"]["sustained_rate_per_s"],
                "full_speed_ratio_worker_over_faust_echo": round(
                    full_speed["sustained_rate_per_s"]
                    / max(floor["full_speed"]["sustained_rate_per_s"], 1e-9),
                    3,
                ),
                "p99_ratio_worker_over_faust_echo": round(
                    load["p99_ms"] / max(floor["at_rate"]["p99_ms"], 1e-9), 1
                ),
                # The echo moving the worker's records (table entry, item changes sent
                # and read back, the list): the floor of the worker's record pattern.
                "faust_echo_worker_records_full_speed_rate_per_s": records_floor["full_speed"][
                    "sustained_rate_per_s"
                ],
                "full_speed_ratio_worker_over_worker_records_echo": round(
                    full_speed["sustained_rate_per_s"]
                    / max(records_floor["full_speed"]["sustained_rate_per_s"], 1e-9),
                    3,
                ),
                **(
                    {"faust_echo_records_parts_full_speed_rate_per_s": parts_rate}
                    if parts_rate
                    else {}
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
