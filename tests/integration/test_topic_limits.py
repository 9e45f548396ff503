"""Topics the worker writes, created beforehand by a team with a smaller
``max.message.bytes`` than the producer's 1 MB, through a real broker and a real worker.

The broker applies a topic's limit to each batch of records and refuses the whole batch
(``MessageSizeTooLargeError``) after the worker has sent it; Faust only logs that, so
the records were lost while the offsets of their sources were committed: items never
stored and never dead-lettered, clicks never answered, on both brokers. Small records
were lost too, batched together past the limit (aiokafka does not split a refused batch
as the Java producer does). The worker now reads the limits at start
(``streams.admin.message_limits``), checks each record against its topic's, keeps its
batches under the smallest, and cuts a dead letter to fit its topic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streams.admin import ITEM_UPDATES_CONFIG, create_topics, message_limits, produce
from streams.broker import Broker
from streams.demo import catalog_uploads
from streams.process import WorkerProcess
from streams.settings import Settings
from tests.conftest import TopicReader, settings_with_team_topics
from tests.integration.helpers import click, recommendations_for

pytestmark = pytest.mark.integration

#: With the hashing encoders an item's record on item-updates is about 4.3 KB, a list
#: 1.7 KB: one fits its topic alone, two batched together do not.
LIMITS = {"topic_item_updates": 6_000, "topic_recommendations": 3_000, "topic_dead_letters": 2_000}


def settings_with_small_topics(broker: Broker, data_dir: Path) -> Settings:
    """Settings whose output topics a team created beforehand with ``LIMITS``."""
    configs = {name: {"max.message.bytes": str(limit)} for name, limit in LIMITS.items()}
    configs["topic_item_updates"].update(ITEM_UPDATES_CONFIG)  # kept for ever, as it must be
    settings = settings_with_team_topics(broker, data_dir, configs, encoders="hashing")
    create_topics(settings)
    return settings


def test_message_limits_are_read_from_the_broker(broker: Broker, tmp_path: Path) -> None:
    settings = settings_with_small_topics(broker, tmp_path)
    limits = message_limits(settings)
    for name, limit in LIMITS.items():
        assert limits[getattr(settings, name)] == limit
    # The changelog does not exist before the first start: the broker's default applies.
    assert settings.users_changelog not in limits


def test_outputs_fit_topics_with_a_small_max_message_bytes_and_none_is_lost(
    broker: Broker, tmp_path: Path
) -> None:
    settings = settings_with_small_topics(broker, tmp_path)
    catalog = catalog_uploads()
    big: tuple[str, dict[str, Any]] = (
        "big-1",
        {"item_id": "big-1", "title": "Big", "text": "jazz", "metadata": {"notes": "n" * 3_000}},
    )
    recs = TopicReader(settings, settings.topic_recommendations)
    letters = TopicReader(settings, settings.topic_dead_letters)
    worker = WorkerProcess(settings, settings.data_dir / "worker.log")
    worker.start()
    try:
        worker.wait_until(lambda s: True, timeout_s=180, what="web server up")
        produce(settings, settings.topic_items, [*catalog[:15], big, *catalog[15:]])
        # Before, the catalog's records went in batches the broker refused: none stored.
        worker.wait_until(
            lambda s: s["items"] >= len(catalog), timeout_s=120, what="catalog indexed"
        )
        users = [f"lim-{n}" for n in range(8)]
        produce(
            settings,
            settings.topic_interactions,
            [(user, click(f"l-{n}", user, "jazz-1", minute=n)) for n, user in enumerate(users)],
        )
        got = recs.wait_for(
            lambda m: all(recommendations_for(m, f"l-{n}") for n in range(len(users))),
            timeout_s=90,
        )
        assert {recommendations_for(got, f"l-{n}").user_id for n in range(len(users))} == set(users)
        [letter] = [json.loads(v) for _, v in letters.wait_for(lambda m: len(m) >= 1, 60)]
        assert (letter["key"], letter["reason"]) == ("big-1", "output-oversized")
        assert "max.message.bytes" in letter["error"]
        stats = worker.stats()
        assert stats["items"] == len(catalog)  # every item but the oversized one
        assert stats["dead_letters"] == {"output-oversized": 1}
        assert stats["sends_refused"] == {}
    finally:
        letters.close()
        recs.close()
        worker.stop()
    assert "MessageSizeTooLarge" not in (settings.data_dir / "worker.log").read_text()
