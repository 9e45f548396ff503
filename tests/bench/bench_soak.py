"""Soak: a worker driven at a steady rate for a set time; memory over time and latency.

Starts noida-db and a worker with a synthetic catalog, then drives interactions at
``--rate`` per second in rounds of ``--round-seconds``, sampling the worker's resident
memory after each round. Memory should level off once every user and item has its
state (state grows with distinct users and items, not with events). Prints one JSON
line: latency percentiles over the whole run and RSS per round.

    python -m tests.bench.bench_soak --seconds 300 --rate 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from streams.broker import LocalBroker
from streams.load import drive
from tests.bench import stop_children_on_sigterm
from tests.bench.bench_latency import (
    interactions,
    memory_mb,
    synthetic_catalog,
    worker_with_catalog,
)
from tests.conftest import free_port


def soak(
    broker: LocalBroker,
    workdir: Path,
    seconds: float,
    rate: float,
    round_seconds: float,
    items: int = 300,
    users: int = 100,
) -> dict:
    settings, worker, _, _ = worker_with_catalog(broker, workdir, synthetic_catalog(items))
    try:
        assert worker.pid is not None
        memory = [round(memory_mb(worker.pid, "VmRSS"), 1)]
        rounds = max(1, round(seconds / round_seconds))
        per_round = int(rate * round_seconds)
        events = interactions(rounds * per_round, items, users, seed=7)
        figures = []
        for n in range(rounds):
            batch = events[n * per_round : (n + 1) * per_round]
            figures.append(drive(settings, batch, rate))
            memory.append(round(memory_mb(worker.pid, "VmRSS"), 1))
    finally:
        worker.stop()
    received = sum(int(f["recommendations_received"]) for f in figures)
    return {
        "bench": "soak",
        "machine": f"{platform.machine()} cores={os.cpu_count()}",
        "seconds": rounds * round_seconds,
        "target_rate_per_s": rate,
        "events_sent": len(events),
        "recommendations_received": received,
        "p50_ms_per_round": [f["p50_ms"] for f in figures],
        "p99_ms_per_round": [f["p99_ms"] for f in figures],
        "worst_p99_ms": max(float(f["p99_ms"]) for f in figures),
        "rss_mb_after_catalog_then_each_round": memory,
        "rss_growth_mb_second_half": round(memory[-1] - memory[len(memory) // 2], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--round-seconds", type=float, default=30.0)
    args = parser.parse_args()
    stop_children_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="streamrec-soak-"))
    broker = LocalBroker(free_port(), workdir / "broker")
    broker.start()
    try:
        print(json.dumps(soak(broker, workdir, args.seconds, args.rate, args.round_seconds)))
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
