"""A worker builds its embedded Qdrant's HNSW index in a child process while it serves,
and its lists, retrieved through the index, keep coming."""

from __future__ import annotations

import pytest

from models.vector_store import EdgeVectorStore
from streams.admin import produce
from streams.broker import LocalBroker
from tests.conftest import TopicReader, isolated_settings
from tests.integration.helpers import click, recommendations_for, start_worker_with_catalog

pytestmark = pytest.mark.integration


def test_a_worker_indexes_its_store_beside_its_loop_and_serves_through_the_index(
    broker: LocalBroker, tmp_path
) -> None:
    # 30 items: above dense ranking's 5, lists go through Qdrant's candidate queries;
    # above 10 points outside the index, the store builds one.
    settings = isolated_settings(
        broker, tmp_path / "kafka", dense_ranking_max_items=5, vector_index_after=10
    )
    reader = TopicReader(settings, settings.topic_recommendations)
    worker = start_worker_with_catalog(settings)
    try:
        worker.wait_until(
            lambda s: s["items_outside_vector_index"] < 10, timeout_s=120, what="index swapped in"
        )
        assert worker.stats()["candidate_stage"]
        for n, item in enumerate(["jazz-2", "jazz-4"]):
            produce(
                settings,
                settings.topic_interactions,
                [("carol", click(f"v-{n}", "carol", item, minute=n))],
            )
        got = reader.wait_for(lambda m: recommendations_for(m, "v-1") is not None)
        listed = [item.item_id for item in recommendations_for(got, "v-1").items]
        assert len(listed) == settings.top_k and not {"jazz-2", "jazz-4"} & set(listed)
        assert sum(item.startswith("jazz-") for item in listed[:3]) >= 2
    finally:
        worker.stop()
    store_dir = settings.data_dir / "qdrant" / settings.collection
    assert not list(store_dir.parent.glob("*.indexing-*")), "a build's copy left behind"
    with EdgeVectorStore(store_dir, {}) as store:
        assert store.count() == 30 and store.shard.info().indexed_vectors_count >= 30
