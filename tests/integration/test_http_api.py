"""The worker's HTTP API against a running worker: latest list, items, health,
readiness, Prometheus metrics, and an OpenAPI description whose paths all answer."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.admin import produce
from streams.broker import LocalBroker
from tests.conftest import TopicReader, isolated_settings
from tests.integration.helpers import click, recommendations_for, start_worker_with_catalog

pytestmark = pytest.mark.integration


def get(base: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    """GET ``path``, or POST ``body`` to it as JSON."""
    request = urllib.request.Request(base + path, data=body)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        body, status = error.read(), error.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def status_and_location(url: str) -> tuple[int, str | None]:
    """The answer to ``url`` itself, a redirect not followed."""
    try:
        with urllib.request.build_opener(_NoRedirect).open(url, timeout=10) as response:
            return response.status, None
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Location")


def test_http_api_serves_lists_items_health_metrics_and_its_description(
    broker: LocalBroker, tmp_path
) -> None:
    settings = isolated_settings(broker, tmp_path / "data")
    base = f"http://{settings.web_host}:{settings.web_port}"
    reader = TopicReader(settings, settings.topic_recommendations)
    worker = start_worker_with_catalog(settings)
    try:
        produce(settings, settings.topic_interactions, [("gus", b"{not json")])
        produce(settings, settings.topic_interactions, [("gus", click("h-1", "gus", "jazz-1"))])
        reader.wait_for(lambda m: recommendations_for(m, "h-1") is not None)
        worker.wait_until(lambda s: s["dead_letters"].get("invalid-json") == 1, 30, "dead letter")

        assert get(base, "/health/") == (200, {"status": "ok"})
        status, ready = get(base, "/ready/")
        assert status == 200 and ready["ready"] is True, ready

        status, latest = get(base, "/api/users/gus/recommendations/")
        assert status == 200 and latest["trigger_event_id"] == "h-1"
        assert latest["items"] and "jazz-1" not in {i["item_id"] for i in latest["items"]}
        status, missing = get(base, "/api/users/nobody/recommendations/")
        assert status == 404 and "nobody" in missing["error"]

        status, item = get(base, "/api/items/jazz-1/")
        assert status == 200 and item["title"] and item["engagements"] in (0, 1)
        assert get(base, "/api/items/no-such-item/")[0] == 404

        status, listed = get(base, "/api/items/?limit=3")
        assert status == 200 and len(listed) == 3 and all(i["title"] for i in listed)
        assert get(base, "/api/items/?limit=many")[0] == 400

        # Interactions in over HTTP: refused with the field named, or queued and answered.
        status, refused = get(base, "/api/interactions/", b'{"event_id": "h-2", "user_id": "gus"}')
        assert status == 422 and "item_id" in refused["error"], refused
        unknown = json.dumps(click("h-x", "gus", "no-such-item")).encode()
        status, refused = get(base, "/api/interactions/", unknown)
        assert status == 422 and "no-such-item" in refused["error"], refused
        assert "upload it" in refused["error"]
        good = click("h-2", "gus", "jazz-2")
        status, queued = get(base, "/api/interactions/", json.dumps(good).encode())
        assert (status, queued) == (202, {"event_id": "h-2", "queued": True})
        reader.wait_for(lambda m: recommendations_for(m, "h-2") is not None)

        status, text = get(base, "/metrics")
        assert status == 200
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        topic = settings.topic_interactions
        assert samples[("streamrec_events_processed_total", (("topic", topic),))] == 2
        assert samples[("streamrec_dead_letters_total", (("reason", "invalid-json"),))] == 1
        assert samples[("streamrec_click_to_recommendation_seconds_count", ())] == 2
        assert samples[("streamrec_encode_batch_size_sum", ())] >= 30
        assert any(name == "streamrec_consumer_lag" for name, _ in samples)

        # One path style: without the slash, a redirect to the path with it; every error,
        # even aiohttp's own, is JSON naming the fix.
        assert status_and_location(base + "/api/items/jazz-1") == (308, "/api/items/jazz-1/")
        assert get(base, "/metrics/")[0] == 200
        status, missing = get(base, "/no/such/path/")
        assert status == 404 and "/openapi.json" in missing["error"]
        status, wrong = get(base, "/health/", b"{}")
        assert status == 405 and "POST" in wrong["error"]

        status, spec = get(base, "/openapi.json")
        assert status == 200 and spec["openapi"].startswith("3.")
        post = spec["paths"]["/api/interactions/"]["post"]
        body_schema = post["requestBody"]["content"]["application/json"]["schema"]
        assert body_schema == {"$ref": "#/components/schemas/Interaction"}
        interaction = spec["components"]["schemas"]["Interaction"]
        assert {"event_id", "user_id", "item_id", "kind", "ts"} <= set(interaction["required"])
        for path, methods in spec["paths"].items():
            if "get" not in methods:
                continue
            concrete = path.replace("{user_id}", "gus").replace("{item_id}", "jazz-1")
            parameters = methods["get"].get("parameters", [])
            queried = [p["name"] for p in parameters if p["in"] == "query"]
            if queried:  # the query forms of the reads: ?user_id=gus, ?item_id=jazz-1
                ids = {"user_id": "gus", "item_id": "jazz-1"}
                concrete += "?" + "&".join(f"{name}={ids[name]}" for name in queried)
            assert get(base, concrete)[0] == 200, path
    finally:
        worker.stop()
        reader.close()
