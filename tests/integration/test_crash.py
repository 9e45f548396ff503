"""SIGKILL the worker in the middle of a stream of interactions, several times, and start it
again each time: nothing is lost and nothing is applied twice. The final user state, item
state and recommendations equal those of a run without crashes (the in-process engine,
which the congruence test holds to the crash-free worker).

Why it holds: Faust flushes table changelogs and produced messages before it commits
offsets, so a killed worker's state is never behind its committed offsets; what it
redoes is recognised (users keep the offsets they applied and re-send the item changes
of events not yet committed; the item-side replica skips changes it has folded), and
the item side is rebuilt from the item-updates log at every start.
"""

from __future__ import annotations

import random
import time

import pytest

from models.vector_store import EdgeVectorStore
from streams.admin import produce
from streams.broker import LocalBroker
from streams.demo import catalog_uploads
from streams.process import WorkerProcess
from tests.conftest import TopicReader, isolated_settings
from tests.integration.helpers import (
    START,
    click,
    event_log,
    in_process_engine,
    recommendations_for,
    send_logged,
    start_worker_with_catalog,
    wait_until_committed,
    wait_until_replicated,
)

pytestmark = pytest.mark.integration


def test_sigkill_mid_stream_loses_nothing_and_applies_nothing_twice(
    broker: LocalBroker, tmp_path
) -> None:
    # A killed worker stays in its group until its session times out: keep that short.
    settings = isolated_settings(
        broker, tmp_path / "kafka", consumer_session_timeout_s=6, encoders="hashing"
    )
    log = event_log(seed=3, n_events=40)
    rng = random.Random(5)
    kill_after = sorted(rng.sample(range(4, len(log) - 4), 2))
    reader = TopicReader(settings, settings.topic_recommendations)
    workers = [start_worker_with_catalog(settings, "worker-1.log")]
    engine = in_process_engine(settings)
    try:
        for n, (event_id, user, item, kind) in enumerate(log):
            send_logged(settings, n, event_id, user, item, kind)
            if n in kill_after:
                time.sleep(rng.uniform(0.0, 0.03))  # while the event is being processed
                workers[-1].kill()
                workers.append(
                    WorkerProcess(settings, settings.data_dir / f"worker-{len(workers) + 1}.log")
                )
                workers[-1].start()
            # One event at a time: the order events are applied in is then the log's, as
            # in process. (Kafka orders events only within a partition, and a CF step
            # reads item factors other users' steps move: a backlog drained in another
            # cross-partition order is another valid run, with other factors.)
            reader.wait_for(lambda m, e=event_id: recommendations_for(m, e) is not None, 180)
        wait_until_committed(settings, settings.topic_interactions, timeout_s=180)
        for n, (event_id, user, item, kind) in enumerate(log):
            engine.process(
                event_id, user, item, kind, None, START.timestamp() + 60 * n, settings.top_k
            )

        # One more event per user, once everything before it is applied: its list is
        # ranked from the user's whole state and every item's counts.
        for m, user in enumerate(["ann", "ben", "cat", "dan"]):
            n = len(log) + m
            probe = click(f"probe-{m}", user, "space-1", "view", minute=n)
            produce(settings, settings.topic_interactions, [(user, probe)])
            got = reader.wait_for(
                lambda msgs, e=probe["event_id"]: recommendations_for(msgs, e) is not None
            )
            from_kafka = recommendations_for(got, probe["event_id"])
            expected = engine.process(
                probe["event_id"],
                user,
                "space-1",
                "view",
                None,
                START.timestamp() + 60 * n,
                settings.top_k,
            )
            assert expected is not None
            assert from_kafka.based_on_events == engine.users[user].events_applied, user
            assert [i.item_id for i in from_kafka.items] == [r.item_id for r in expected], user
            for sent, made in zip(from_kafka.items, expected, strict=True):
                assert sent.score == pytest.approx(made.score, abs=1e-5)
        # The item side: every item's engagements, CF factor and bias.
        wait_until_replicated(settings, workers[-1:])
        for item in (item_id for item_id, _ in catalog_uploads()):
            served = workers[-1].get(f"/api/items/{item}/")
            expected_item = engine.hybrid.item_state(item)
            assert served.get("engagements") == expected_item.get("engagements"), item
            assert served["cf"]["factor"] == pytest.approx(expected_item["cf"]["factor"], abs=1e-9)
            assert served["cf"]["bias"] == pytest.approx(expected_item["cf"]["bias"], abs=1e-9)
    finally:
        for worker in workers:
            worker.stop()
        reader.close()

    assert len(workers) == 3, "the worker was killed twice"


def test_sigkill_during_item_ingestion_stores_every_item_once(
    broker: LocalBroker, tmp_path
) -> None:
    settings = isolated_settings(
        broker, tmp_path / "kafka", consumer_session_timeout_s=6, encoders="hashing"
    )
    worker = WorkerProcess(settings, settings.data_dir / "worker-1.log")
    worker.start()
    worker.wait_until(lambda s: True, 180, "web server up")
    uploads = [
        (f"bulk-{n}", {"item_id": f"bulk-{n}", "title": f"Item {n}", "text": f"text number {n}"})
        for n in range(300)
    ]
    produce(settings, settings.topic_items, uploads)
    try:
        worker.wait_until(lambda s: s["items"] > 0, 60, "first batch stored")
        worker.kill()  # mid-way: some batches stored, their offsets perhaps not committed
        worker = WorkerProcess(settings, settings.data_dir / "worker-2.log")
        worker.start()
        worker.wait_until(lambda s: s["items"] >= len(uploads), 180, "every item stored")
        wait_until_committed(settings, settings.topic_items)
        assert worker.stats()["items"] == len(uploads), "no item is stored twice"
    finally:
        worker.stop()
    with EdgeVectorStore(settings.data_dir / "qdrant" / settings.collection, {}) as store:
        assert store.count() == len(uploads)
        stored = store.get([item_id for item_id, _ in uploads], with_vectors=False)
    assert sorted(stored) == sorted(item_id for item_id, _ in uploads)
