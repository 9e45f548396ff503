"""A new item reaches the users whose taste it fits, without their clicking: pushed to
the best fits, and in every stale list read over HTTP."""

from __future__ import annotations

import pytest

from streams.admin import produce
from streams.broker import LocalBroker
from streams.events import Recommendations
from tests.conftest import TopicReader, isolated_settings
from tests.integration.helpers import click, recommendations_for, start_worker_with_catalog

pytestmark = pytest.mark.integration

NEW_JAZZ = {
    "item_id": "jazz-new",
    "title": "Saxophone Nights",
    "text": "Late-night jazz: saxophone solos, swing and bebop from a smoky club.",
    "tags": ["music", "jazz"],
}


def test_a_new_item_is_pushed_to_the_users_it_fits_and_in_lists_read_over_http(
    broker: LocalBroker, tmp_path
) -> None:
    settings = isolated_settings(broker, tmp_path / "kafka", new_item_push_users=1)
    reader = TopicReader(settings, settings.topic_recommendations)
    worker = start_worker_with_catalog(settings)
    try:
        log = [
            ("n-1", "carol", "jazz-2"),
            ("n-2", "dan", "cook-2"),
            ("n-3", "carol", "jazz-4"),
            ("n-4", "dan", "cook-5"),
        ]
        for n, (event_id, user, item) in enumerate(log):
            produce(
                settings,
                settings.topic_interactions,
                [(user, click(event_id, user, item, minute=n))],
            )
        reader.wait_for(lambda m: recommendations_for(m, "n-4") is not None)
        produce(settings, settings.topic_items, [("jazz-new", NEW_JAZZ)])
        trigger = "new-item:jazz-new"
        got = reader.wait_for(lambda m: recommendations_for(m, trigger) is not None, timeout_s=120)
        pushed = [
            Recommendations.model_validate_json(value)
            for _, value in got
            if Recommendations.model_validate_json(value).trigger_event_id == trigger
        ]
        assert [message.user_id for message in pushed] == ["carol"]  # at most 1: the best fit
        assert "jazz-new" in [item.item_id for item in pushed[0].items]
        assert pushed[0].based_on_events == 2

        # Nobody clicked since: the stored lists predate the item and are ranked again
        # when read. dan was not pushed to (bound of 1), yet his list is current too.
        carol = worker.get("/api/users/carol/recommendations/")
        assert carol["trigger_event_id"] == "refreshed:n-3"
        assert "jazz-new" in [item["item_id"] for item in carol["items"]]
        dan = worker.get("/api/users/dan/recommendations/")
        assert dan["trigger_event_id"] == "refreshed:n-4" and dan["based_on_events"] == 2
        assert worker.get("/streamrec/stats/")["lists_ranked_at_read"] == 2
    finally:
        worker.stop()
        reader.close()
