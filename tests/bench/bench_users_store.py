"""The users table in memory against on disk (``users_store``): memory per user and
restart-to-ready with N users, both measured in the same run on the same broker.

For each store, a worker with a small catalog (hashing encoder) takes one click from
each of N new users; then it is stopped and started again, timed from process start to
``/ready/`` (partitions assigned, the users table recovered). One JSON line per store
with the worker's resident memory before and after the users, per user, the seconds to
ready, and the users-changelog records the restart read (from Faust's recovery log).

    python -m tests.bench.bench_users_store --users 20000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path

from streams.admin import produce
from streams.broker import Broker, make_broker
from tests.bench import stop_children_on_sigterm
from tests.bench.bench_latency import memory_mb, synthetic_catalog, worker_with_catalog
from tests.bench.bench_restart import timed_start
from tests.conftest import free_port
from tests.integration.helpers import click

#: Faust's recovery log: the changelog's highwater and where reading starts, by partition
#: (a row under the first names the topic as 〃).
RECOVERY_ROW = re.compile(r"\|\s*(?:\S+-users-changelog|〃)\s*\|\s*(\d+)\s*\|\s*(-?\d+)\s*\|")


def changelog_read_at_start(log: str) -> int | None:
    """Changelog records the first recovery of this log read: highwater minus start offset."""
    highwater, offsets = (
        _recovery_table(log, "Highwater for active"),
        _recovery_table(log, "active offsets at start of reading"),
    )
    if highwater is None or offsets is None:
        return None
    return sum(max(h - offsets.get(p, -1), 0) for p, h in highwater.items())


def _recovery_table(log: str, title: str) -> dict[str, int] | None:
    """The rows (partition -> offset) of the first table Faust logs under ``title``."""
    at = log.find(title)
    if at < 0:
        return None
    table = log[at:].split("\n[", 1)[0]  # up to the next log line
    return {p: int(v) for p, v in RECOVERY_ROW.findall(table)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--broker", choices=["noida-db", "kafka"], default="noida-db")
    args = parser.parse_args()
    stop_children_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="streamrec-bench-users-"))
    catalog = synthetic_catalog(args.items)
    for store in ("memory", "rocksdb"):  # a broker each: topics, group and changelog apart
        broker = make_broker(args.broker, free_port(), workdir / store)
        broker.start()
        try:
            print(json.dumps(measure(broker, workdir / store, catalog, store, args.users)))
        finally:
            broker.stop()


def measure(broker: Broker, workdir: Path, catalog: list[dict], store: str, users: int) -> dict:
    ids = [c["item_id"] for c in catalog]
    settings, worker, _, _ = worker_with_catalog(broker, workdir, catalog, encoders="hashing")
    settings = settings.model_copy(update={"users_store": store})
    worker.stop()
    worker, _ = timed_start(settings, workdir / "first.log")
    try:
        before = memory_mb(worker.pid, "VmRSS")
        started = time.perf_counter()
        produce(
            settings,
            settings.topic_interactions,
            [(f"u{n}", click(f"e{n}", f"u{n}", ids[n % len(ids)])) for n in range(users)],
        )
        worker.wait_until(
            lambda s: s["processed"].get(settings.topic_interactions, 0) >= users,
            timeout_s=3600,
            what="every user's click",
        )
        seconds = time.perf_counter() - started
        after = memory_mb(worker.pid, "VmRSS")
    finally:
        worker.stop()
    log = workdir / "restart.log"
    worker, restart = timed_start(settings, log)
    worker.stop()
    return {
        "bench": "users_store",
        "machine": f"{platform.machine()} cores={os.cpu_count()}",
        "broker": broker.flavour,
        "users_store": store,
        "users": users,
        "clicks_per_s": round(users / seconds, 1),
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "kb_per_user": round((after - before) * 1024 / users, 2),
        "restart_seconds_to_ready": restart["seconds_to_ready"],
        "changelog_records_read_at_restart": changelog_read_at_start(log.read_text()),
    }


if __name__ == "__main__":
    main()
