"""One worker against two: the same event log gives the same item factors and lists.

Users are split between the two workers by partition; items are encoded by whichever
worker owns their partition. The item side (CF factors and biases, engagement counts,
content vectors) is replicated to both from item-updates, so every item has one state:
both workers' replicas agree with each other and with the single worker's.

Events are sent one at a time, each after the previous one's changes reached every
replica: then the runs are the same computation. Sent faster, a worker may rank or take
a CF step before the other worker's latest changes arrive (asynchronous SGD); that
event-order effect is what separates the runs otherwise (README, "Scaling out").

The two workers rank through the candidate stage (every list is ranked from what their
embedded Qdrant returns; enough candidates per source to retrieve every item), so the
same lists also show the candidate path agrees with ranking the whole catalog, and their
stores must hold every item's CF factor and bias, published in micro-batches.
"""

from __future__ import annotations

import urllib.error
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.hybrid import CF
from models.vector_store import EdgeVectorStore
from streams.admin import produce
from streams.broker import LocalBroker
from streams.demo import catalog_uploads
from streams.process import WorkerProcess
from tests.conftest import TopicReader, free_port, isolated_settings
from tests.integration.helpers import (
    event_log,
    ready,
    recommendations_for,
    send_logged,
    wait_until_replicated,
)

pytestmark = pytest.mark.integration


def run(
    broker: LocalBroker, directory: Path, n_workers: int, log: list, **overrides: Any
) -> dict[str, Any]:
    settings = isolated_settings(broker, directory, **overrides)
    workers = []
    for n in range(n_workers):
        own = settings.model_copy(
            update={"data_dir": directory / f"worker-{n}", "web_port": free_port()}
        )
        workers.append(WorkerProcess(own, own.data_dir / "worker.log"))
        workers[-1].start()
    reader = TopicReader(settings, settings.topic_recommendations)
    try:
        catalog = catalog_uploads()
        produce(settings, settings.topic_items, catalog)
        for worker in workers:
            worker.wait_until(lambda s: s["catalog"] >= len(catalog), 180, "catalog replicated")
            worker.wait_until(lambda s, w=worker: ready(w), 60, "partitions assigned")
        lists = {}
        for n, (event_id, user, item, kind) in enumerate(log):
            send_logged(settings, n, event_id, user, item, kind)
            got = reader.wait_for(lambda m, e=event_id: recommendations_for(m, e) is not None)
            sent = recommendations_for(got, event_id)
            lists[event_id] = [(i.item_id, i.score) for i in sent.items]
            wait_until_replicated(settings, workers)
        items = [item_id for item_id, _ in catalog]
        states = [{i: worker.get(f"/api/items/{i}/") for i in items} for worker in workers]
        users = sorted({user for _, user, _, _ in log})
        served = [{u: list_over_http(worker, u) for u in users} for worker in workers]
        stats = [worker.stats() for worker in workers]
        interactions = [s["processed"].get(settings.topic_interactions, 0) for s in stats]
    finally:
        for worker in workers:
            worker.stop()
        reader.close()
    stored_cf = []
    for worker in workers:
        with EdgeVectorStore(worker.settings.data_dir / "qdrant" / "items", {}) as store:
            stored_cf.append({i: item.vectors.get(CF) for i, item in store.get(items).items()})
    return {
        "lists": lists,
        "states": states,
        "interactions": interactions,
        "candidate_stage": [s["candidate_stage"] for s in stats],
        "cf": stored_cf,
        "served": served,
    }


def list_over_http(worker: WorkerProcess, user: str) -> str:
    """The trigger of the user's list as this worker's API serves it (ranked again or
    not), or the HTTP status."""
    try:
        served = worker.get(f"/api/users/{user}/recommendations/")
        return served["trigger_event_id"].removeprefix("refreshed:")
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code}"


def assert_same_item_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for item_id in a:
        assert a[item_id]["engagements"] == b[item_id]["engagements"], item_id
        assert a[item_id]["cf"]["factor"] == pytest.approx(b[item_id]["cf"]["factor"], abs=1e-9)
        assert a[item_id]["cf"]["bias"] == pytest.approx(b[item_id]["cf"]["bias"], abs=1e-9)


def test_one_and_two_workers_learn_the_same_item_factors(broker: LocalBroker, tmp_path) -> None:
    log = event_log(seed=11, n_events=24)
    one = run(broker, tmp_path / "one", 1, log)
    two = run(
        broker,
        tmp_path / "two",
        2,
        log,
        dense_ranking_max_items=0,
        candidates_per_source=1000,
        standby_replicas=0,  # a worker holds its own users only: a misrouted read is a 404
    )

    assert one["candidate_stage"] == [False] and two["candidate_stage"] == [True, True]
    assert all(count > 0 for count in two["interactions"]), "both workers served users"
    assert sum(two["interactions"]) == len(log) == one["interactions"][0]
    assert_same_item_state(two["states"][0], two["states"][1])  # the replicas agree
    assert_same_item_state(one["states"][0], two["states"][0])
    learned = [s for s in one["states"][0].values() if s["engagements"] > 0]
    assert len(learned) >= 10 and any(abs(v) > 0 for s in learned for v in s["cf"]["factor"])
    for event_id, expected in one["lists"].items():
        got = two["lists"][event_id]
        assert [i for i, _ in got] == [i for i, _ in expected], event_id
        assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-6)
    # Either worker serves every user's latest list, routing to the worker that holds it
    # ("dan" is hashed to another partition when JSON-quoted, as the table's changelog
    # writes keys: Faust's table_route sent him to the worker without him).
    last = {user: event_id for event_id, user, _, _ in log}
    assert two["served"] == [last, last]
    for stored in two["cf"]:  # each worker's Qdrant "cf" vectors: factor and bias
        for item_id, state in two["states"][0].items():
            if state["engagements"] == 0:
                continue
            expected = [*state["cf"]["factor"], state["cf"]["bias"]]
            assert np.allclose(stored[item_id], expected, atol=1e-5), item_id
