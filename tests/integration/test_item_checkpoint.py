"""A restarted worker loads its item-side snapshot and reads only the tail of
item-updates, and ends with the item side a full rebuild from the whole topic gives."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaConsumer, TopicPartition

from models.hybrid import CF, CONTENT, HybridRecommender
from models.packed import FLOAT32, unpack
from models.vector_store import EdgeVectorStore
from streams.broker import LocalBroker
from streams.events import ItemRecord, ItemUpdate
from streams.metrics import WorkerMetrics
from streams.process import WorkerProcess
from streams.replica import ItemSideReplica, snapshot_path
from streams.settings import Settings
from tests.conftest import isolated_settings
from tests.integration.helpers import (
    event_log,
    send_logged,
    start_worker_with_catalog,
    wait_until_replicated,
)

pytestmark = pytest.mark.integration

READ_AT_START = re.compile(r"(\d+) item-updates records read at start")


def item_update_ends(settings: Settings) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=settings.effective_bootstrap_servers)
    try:
        topic = settings.topic_item_updates
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return {tp.partition: end for tp, end in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def read_all(settings: Settings) -> dict[int, list[bytes]]:
    """Every record of item-updates, by partition, in order."""
    ends = item_update_ends(settings)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.effective_bootstrap_servers, enable_auto_commit=False
    )
    try:
        tps = [TopicPartition(settings.topic_item_updates, p) for p in ends]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        values: dict[int, list[bytes]] = {p: [] for p in ends}
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp.partition] for tp in tps):
            assert time.monotonic() < deadline, "item-updates not read to its end"
            for tp, records in consumer.poll(timeout_ms=500).items():
                values[tp.partition].extend(
                    r.value for r in records if r.offset < ends[tp.partition]
                )
        return values
    finally:
        consumer.close()


def rebuilt_item_side(settings: Settings, store_dir: Path) -> HybridRecommender:
    """The item side folded from the whole topic by the replica's own code, in process."""
    values = read_all(settings)
    first = next(
        update
        for records in values.values()
        for update in map(ItemUpdate.validate_json, records)
        if isinstance(update, ItemRecord)
    )
    dims = {name: len(unpack(text, name, FLOAT32)) for name, text in first.vectors.items()}
    hybrid = HybridRecommender(settings.hybrid_weights, content_dim=dims[CONTENT])
    store = EdgeVectorStore(store_dir, {**dims, CF: hybrid.cf_vector_size}, {CF: "dot"})
    store.start()
    try:
        replica = ItemSideReplica(settings, hybrid, store, WorkerMetrics(lag=lambda: {}))
        for partition in sorted(values):
            replica.fold(values[partition])
    finally:
        store.stop()
    return hybrid


def settle(settings: Settings, worker: WorkerProcess) -> None:
    """Until the worker has read item-updates to an end that no longer moves."""
    ends = None
    while ends != (now := item_update_ends(settings)):
        ends = now
        wait_until_replicated(settings, [worker], timeout_s=120)
        time.sleep(2)


def test_a_restart_reads_only_the_tail_and_equals_a_full_rebuild(
    broker: LocalBroker, tmp_path: Path
) -> None:
    settings = isolated_settings(broker, tmp_path / "data", encoders="hashing")
    log = event_log(seed=18, n_events=60)
    workers: list[WorkerProcess] = []
    try:
        workers.append(start_worker_with_catalog(settings, "first.log"))
        for n, (event_id, user, item, kind) in enumerate(log[:30]):
            send_logged(settings, n, event_id, user, item, kind)
        workers[-1].wait_until(
            lambda s: s["processed"].get(settings.topic_interactions, 0) >= 30, 180, "30 events"
        )
        settle(settings, workers[-1])
        workers[-1].stop()  # a graceful stop writes a snapshot of everything read
        assert snapshot_path(settings).exists()
        at_snapshot = sum(item_update_ends(settings).values())

        second = WorkerProcess(settings, settings.data_dir / "second.log")
        workers.append(second)
        second.start()
        for n, (event_id, user, item, kind) in enumerate(log[30:], start=30):
            send_logged(settings, n, event_id, user, item, kind)
        second.wait_until(
            lambda s: s["processed"].get(settings.topic_interactions, 0) >= 30, 180, "30 more"
        )
        settle(settings, second)
        assert READ_AT_START.findall(second.log_path.read_text()) == ["0"]
        # A crash: no snapshot at stop, so the next start reads what came after the
        # first run's snapshot (the second run's own changes) and nothing before it.
        second.kill()
        tail = sum(item_update_ends(settings).values()) - at_snapshot
        assert tail > 0

        third = WorkerProcess(settings, settings.data_dir / "third.log")
        workers.append(third)
        third.start()
        third.wait_until(lambda s: s["catalog"] > 0, 180, "item side loaded")
        settle(settings, third)
        read = READ_AT_START.findall(third.log_path.read_text())
        assert read == [str(tail)], f"read {read} at start, the tail holds {tail}"

        rebuilt = rebuilt_item_side(settings, tmp_path / "rebuilt-store")
        stats = third.stats() or {}
        assert stats["catalog"] == len(rebuilt)
        for item_id in rebuilt.catalog.ids:
            served = third.get(f"/api/items/{item_id}/")
            expected = rebuilt.item_state(item_id)
            assert served["engagements"] == expected["engagements"], item_id
            for key in ("trending_log_mass",):
                assert (served[key] is None) == (expected[key] is None), item_id
                if expected[key] is not None:
                    assert served[key] == pytest.approx(expected[key], rel=1e-12)
            # The CF factors are sums of the same changes, added in another order by a
            # worker that applied its own first: equal to rounding.
            assert np.allclose(served[CF]["factor"], expected[CF]["factor"], atol=1e-12)
            assert served[CF]["bias"] == pytest.approx(expected[CF]["bias"], abs=1e-12)
    finally:
        for worker in workers:
            worker.stop()


def test_a_restart_blending_other_sources_rebuilds_the_item_side_without_losing_a_change(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """``hybrid_weights`` changed between two runs (trending dropped): the snapshot is of
    other sources, so the item side is rebuilt from the whole topic, and every record
    of the first run is applied, its learned blend's step included, source by source."""
    settings = isolated_settings(broker, tmp_path / "data", encoders="hashing")
    log = event_log(seed=19, n_events=30)
    workers: list[WorkerProcess] = []
    try:
        workers.append(start_worker_with_catalog(settings, "first.log"))
        for n, (event_id, user, item, kind) in enumerate(log):
            send_logged(settings, n, event_id, user, item, kind)
        workers[-1].wait_until(
            lambda s: s["processed"].get(settings.topic_interactions, 0) >= 30, 180, "30 events"
        )
        settle(settings, workers[-1])
        workers[-1].stop()

        fewer = settings.model_copy(
            update={"hybrid_weights": {"item-item": 1.0, "cf": 0.2, "content": 0.1}}
        )
        second = WorkerProcess(fewer, fewer.data_dir / "second.log")
        workers.append(second)
        second.start()
        second.wait_until(lambda s: s["catalog"] > 0, 180, "item side loaded")
        settle(fewer, second)
        read = READ_AT_START.findall(second.log_path.read_text())
        assert read == [str(sum(item_update_ends(settings).values()))], "not a full rebuild"
        stats = second.stats() or {}
        assert "item-update" not in stats["dead_letters"], stats["dead_letters"]
        assert stats["blend_steps_unplaced"] == 0

        rebuilt = rebuilt_item_side(settings, tmp_path / "rebuilt-store")  # the first sources
        engaged = 0
        for item_id in rebuilt.catalog.ids:
            served = second.get(f"/api/items/{item_id}/")
            expected = rebuilt.item_state(item_id)
            assert served["engagements"] == expected["engagements"], item_id
            engaged += expected["engagements"] > 0
            assert np.allclose(served[CF]["factor"], expected[CF]["factor"], atol=1e-12)
        assert engaged > 5
    finally:
        for worker in workers:
            worker.stop()
