"""The broker goes away and comes back while a worker runs: the worker reconnects by itself
and carries on, and what it had stored and learned is still there."""

from __future__ import annotations

import time

import pytest

from streams.admin import produce
from streams.broker import BrokerFlavour
from tests.conftest import TopicReader, isolated_settings, new_broker
from tests.integration.helpers import click, recommendations_for, start_worker_with_catalog

pytestmark = pytest.mark.integration


def test_worker_carries_on_after_a_broker_restart(broker_flavour: BrokerFlavour, tmp_path) -> None:
    broker = new_broker(broker_flavour, tmp_path / "broker")
    broker.start()
    settings = isolated_settings(broker, tmp_path / "data", encoders="hashing")
    worker = start_worker_with_catalog(settings)
    try:
        reader = TopicReader(settings, settings.topic_recommendations)
        produce(settings, settings.topic_interactions, [("dora", click("b-1", "dora", "jazz-1"))])
        reader.wait_for(lambda m: recommendations_for(m, "b-1") is not None)
        reader.close()

        broker.stop()
        time.sleep(3)  # the worker notices: connections fail, it retries
        broker.start()

        reader = TopicReader(settings, settings.topic_recommendations)
        event = click("b-2", "dora", "jazz-2", minute=1)
        produce(settings, settings.topic_interactions, [("dora", event)])
        got = reader.wait_for(lambda m: recommendations_for(m, "b-2") is not None, timeout_s=120)
        reader.close()
        after = recommendations_for(got, "b-2")
        assert after.based_on_events == 2, "the user's state survived the broker restart"
        assert not {"jazz-1", "jazz-2"} & {item.item_id for item in after.items}
        assert worker.stats()["items"] == 30
    finally:
        worker.stop()
        broker.stop()
