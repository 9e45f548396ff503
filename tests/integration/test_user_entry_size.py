"""A user's table entry stays within the producer's limit as the users table writes it,
however long or far from ASCII the ids of that user's events and items are
(``streams/user_entry.py``).

Before: one user's 300 clicks with 250-emoji event ids (each 3,000 bytes as the table
writes it, escaped) grew their entry to 1,000,699 bytes at the 203rd; Faust's producer
refused the changelog record (``MessageSizeTooLargeError``), its buffer crashed and the
worker exited, the rest of that user's clicks and another user's click unanswered."""

from __future__ import annotations

import pytest

from streams.admin import produce
from streams.broker import LocalBroker
from tests.conftest import TopicReader, isolated_settings
from tests.integration.helpers import click, recommendations_for, start_worker_with_catalog

pytestmark = pytest.mark.integration

#: 250 emoji: 1,000 bytes of UTF-8, 3,000 as the users table writes them.
LONG = "\U0001f600" * 250


def test_a_user_s_clicks_with_the_longest_ids_never_grow_their_entry_past_the_limit(
    broker: LocalBroker, tmp_path
) -> None:
    settings = isolated_settings(broker, tmp_path / "data", encoders="hashing")
    reader = TopicReader(settings, settings.topic_recommendations)
    worker = start_worker_with_catalog(settings, "worker.log")
    try:
        items = ["jazz-1", "jazz-2", "cook-1", "cook-2"]
        clicks = [
            ("bot", click(f"{LONG}{n:06d}", "bot", items[n % len(items)], minute=n % 50))
            for n in range(300)
        ]
        after = [
            ("bot", click("bot-after", "bot", "jazz-3")),
            ("ann", click("ann-1", "ann", "jazz-3")),
        ]
        produce(settings, settings.topic_interactions, [*clicks, *after])
        try:
            messages = reader.wait_for(
                lambda m: all(recommendations_for(m, e) for e in ("bot-after", "ann-1")), 180
            )
        except TimeoutError:
            answered = sum(key == "bot" for key, _ in reader.messages)
            raise AssertionError(
                f"lists stopped after {answered} of the bot's 300 clicks; "
                f"see {settings.data_dir / 'worker.log'}"
            ) from None
        last = recommendations_for(messages, "bot-after")
        assert last is not None and last.based_on_events == 301
        assert worker.stats() is not None  # still serving
        dead = worker.stats()["dead_letters"]
        assert not dead, dead
    finally:
        worker.stop()
