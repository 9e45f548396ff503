"""Restart-to-ready with N records on item-updates: read whole (checkpoint off) against
a snapshot plus the tail.

A worker ingests a synthetic catalog (the real text encoder), then N records are put on
item-updates: one interaction's item changes each, computed by the hybrid's own user
side (``HybridRecommender.learn_one``) for synthetic users, what a worker writes (up to
``--distinct`` events are learned; past that they are sent again under new offsets, so
a million records take minutes to produce, not an hour).
Then, on the same broker and topics, three starts of a worker, each timed from process
start to ``/ready/`` (partitions assigned, tables recovered, item side caught up):

- ``before``: checkpoints off (``item_checkpoint_interval_s = 0``), reads all N records;
- ``from_old_snapshot``: the snapshot taken when the catalog was ingested, reads N;
- ``after``: restarted after a graceful stop (snapshot of everything), reads the tail.

One JSON line each, with the records read at start (from the worker's log) and the
worker's peak RSS.

    python -m tests.bench.bench_restart --records 100000 --items 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaProducer

from models.hybrid import HybridRecommender
from models.signals import signal_weight
from models.user_state import UserState
from streams.broker import make_broker
from streams.events import ItemChanges
from streams.process import WorkerProcess
from streams.replica import snapshot_path
from streams.settings import Settings
from tests.bench import stop_children_on_sigterm
from tests.bench.bench_latency import memory_mb, synthetic_catalog, worker_with_catalog
from tests.conftest import free_port
from tests.integration.helpers import ready

READ_AT_START = re.compile(r"(\d+) item-updates records read at start")
KINDS = ["click", "view", "like", "purchase", "skip"]


def produce_changes(
    settings: Settings, item_ids: list[str], n: int, users: int, distinct: int
) -> float:
    """Put ``n`` ItemChanges records on item-updates; seconds it took."""
    return asyncio.run(_produce_changes(settings, item_ids, n, users, distinct))


async def _produce_changes(
    settings: Settings, item_ids: list[str], n: int, users: int, distinct: int
) -> float:
    hybrid = HybridRecommender(settings.hybrid_weights, content_dim=1)
    for item_id in item_ids:
        hybrid.add_item(item_id, item_id, None)
    states: dict[str, UserState] = {}
    rng = random.Random(7)
    start = datetime.now(UTC) - timedelta(days=1)
    # aiokafka's producer (the worker's): kafka-python builds record batches and their
    # CRC32C in pure Python, about 400 records (3.4 MB) a second here, an hour for 1M.
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.effective_bootstrap_servers,
        acks="all",
        linger_ms=20,
        max_batch_size=256 << 10,  # Apache Kafka refuses batches over about 1 MB
        max_request_size=16 << 20,
        **settings.aiokafka_options(),
    )
    await producer.start()
    started = time.perf_counter()
    try:
        learned: list[tuple[str, dict, dict]] = []
        for offset in range(n):
            event_id = f"restart-{offset}"
            if offset < distinct:
                user = f"user-{rng.randrange(users)}"
                state = states.setdefault(user, UserState())
                # A skewed choice of items, as real engagement is.
                item = item_ids[min(int(rng.paretovariate(1.2)) - 1, len(item_ids) - 1)]
                weight = signal_weight(rng.choice(KINDS), None)
                ts = (start + timedelta(milliseconds=offset)).timestamp()
                changes = hybrid.learn_one(user, state, event_id, item, weight, ts) or {}
                hybrid.apply(changes)
                learned.append((user, changes, hybrid.item_dependent_steps(state)))
            user, changes, steps = learned[offset % distinct]
            # Offsets only grow: a replica folds every record (none looks re-sent).
            message = ItemChanges(
                event_id=event_id,
                user_id=user,
                source_partition=0,
                source_offset=offset,
                changes=changes,
                user_steps=steps,
            )
            # Awaiting send only queues the record (backpressure when the buffer is full).
            await producer.send(
                settings.topic_item_updates, key=user.encode(), value=message.to_bytes()
            )
        await producer.flush()
    finally:
        await producer.stop()
    return time.perf_counter() - started


LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def logged_at(log: str, marker: str) -> datetime | None:
    """When the worker's log first says ``marker``."""
    for line in log.splitlines():
        match = LOG_TIME.match(line)
        if match and marker in line:
            return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
    return None


def timed_start(settings: Settings, log: Path) -> tuple[WorkerProcess, dict]:
    worker = WorkerProcess(settings, log)
    started = time.perf_counter()
    worker.start()
    deadline = time.monotonic() + 3600
    while not ready(worker):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not ready in an hour; see {log}")
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    text = log.read_text()
    read = READ_AT_START.findall(text)
    # The item side's share of it (snapshot load and reading the log), without the
    # process start (imports, encoder weights), group join and table recovery.
    opening = logged_at(text, "item-side replica: starting")
    caught_up = logged_at(text, "item-side replica caught up")
    return worker, {
        "seconds_to_ready": round(seconds, 2),
        "item_side_catch_up_s": (caught_up - opening).total_seconds()
        if caught_up and opening
        else None,
        "records_read_at_start": int(read[-1]) if read else None,
        "worker_peak_rss_mb": round(memory_mb(worker.pid), 1) if worker.pid else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--distinct", type=int, default=5000, help="events learned, then re-sent")
    # noida-db keeps its whole log in memory and rewrites it as one JSON file: at a
    # million records (about 10 GB) it slows to a crawl; Apache Kafka does not.
    parser.add_argument("--broker", choices=["noida-db", "kafka"], default="noida-db")
    args = parser.parse_args()
    stop_children_on_sigterm()

    workdir = Path(tempfile.mkdtemp(prefix="streamrec-bench-restart-"))
    broker = make_broker(args.broker, free_port(), workdir)
    broker.start()
    try:
        catalog = synthetic_catalog(args.items)
        settings, worker, _, _ = worker_with_catalog(broker, workdir, catalog)
        worker.stop()  # a snapshot of the catalog alone
        assert snapshot_path(settings).exists()
        produce_s = produce_changes(
            settings, [c["item_id"] for c in catalog], args.records, args.users, args.distinct
        )
        common = {
            "bench": "restart_to_ready",
            "machine": f"{platform.machine()} cores={os.cpu_count()}",
            "broker": broker.flavour,
            "item_updates_records": args.records + args.items,
            "catalog_items": args.items,
            "produce_records_per_s": round(args.records / produce_s, 1),
        }
        off = settings.model_copy(
            update={"data_dir": workdir / "data-off", "item_checkpoint_interval_s": 0.0}
        )
        runs = [("before", off, "before.log"), ("from_old_snapshot", settings, "old.log")]
        results = {}
        for name, run_settings, log in runs:
            worker, result = timed_start(run_settings, workdir / log)
            worker.stop()
            results[name] = result
            print(json.dumps({**common, "run": name, **result}), flush=True)
        worker, result = timed_start(settings, workdir / "after.log")
        worker.stop()
        ratio = results["before"]["seconds_to_ready"] / max(result["seconds_to_ready"], 1e-9)
        print(
            json.dumps(
                {
                    **common,
                    "run": "after",
                    **result,
                    "snapshot_mb": round(snapshot_path(settings).stat().st_size / 1e6, 1),
                    "speedup_before_over_after": round(ratio, 2),
                }
            ),
            flush=True,
        )
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
