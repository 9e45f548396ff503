"""Every user's list and every item can be read over HTTP from any worker, whatever
characters their ids hold (1-256 of any, as the topics take them).

Against two real workers, each user's list read from both (so half the reads are routed
to the other worker by Faust): ids with ``{`` or ``}`` answered 404 "no such path" by
path, and ``.`` and ``..`` could not be asked for by any client that resolves dot
segments (browsers, yarl, urllib3; Faust's own routing among them). The query forms,
``/api/recommendations/?user_id=`` and ``/api/item/?item_id=``, read every id.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from streams.admin import produce
from streams.broker import LocalBroker
from streams.demo import catalog_uploads
from streams.process import WorkerProcess
from tests.conftest import TopicReader, free_port, isolated_settings
from tests.integration.helpers import click, ready, recommendations_for

pytestmark = pytest.mark.integration

#: Valid ids on both topics; some no URL path carries as they are, some aiohttp's default
#: path segment refused, and ordinary ones beside them.
IDS = [".", "..", "{x}", "a}", "a/b", "a/../b", "%2E%2E", "a+b", "a b?c#d", "😀" * 64, "ann"]


def get(worker: WorkerProcess, target: str) -> tuple[int, Any]:
    url = f"http://{worker.settings.web_host}:{worker.settings.web_port}{target}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_every_user_and_item_can_be_read_from_either_worker_whatever_its_id(
    broker: LocalBroker, tmp_path: Path
) -> None:
    settings = isolated_settings(broker, tmp_path, encoders="hashing", standby_replicas=0)
    workers = []
    for n in range(2):
        own = settings.model_copy(update={"data_dir": tmp_path / f"w-{n}", "web_port": free_port()})
        workers.append(WorkerProcess(own, own.data_dir / "worker.log"))
        workers[-1].start()
    reader = TopicReader(settings, settings.topic_recommendations)
    try:
        catalog = catalog_uploads()
        crafted = [(i, {"item_id": i, "title": f"item {i}", "text": "jazz piano"}) for i in IDS]
        produce(settings, settings.topic_items, catalog + crafted)
        total = len(catalog) + len(crafted)
        for worker in workers:
            worker.wait_until(lambda s: s["catalog"] >= total, 180, "catalog replicated")
            worker.wait_until(lambda s, w=worker: ready(w), 60, "partitions assigned")
        for n, user in enumerate(IDS):
            event = click(f"ids-{n}", user, IDS[(n + 1) % len(IDS)], minute=n)
            produce(settings, settings.topic_interactions, [(user, event)])
        reader.wait_for(
            lambda m: all(recommendations_for(m, f"ids-{n}") for n in range(len(IDS))), 90
        )
        stats = [worker.stats() or {} for worker in workers]
        served = [s["processed"].get(settings.topic_interactions, 0) for s in stats]
        assert all(served), f"both workers own users: {served}"

        unread = []
        for w, worker in enumerate(workers):
            worker.wait_until(lambda s: s["catalog"] >= total, 60, "every item replicated")
            for user in IDS:
                reads = [("query", "/api/recommendations/?" + urlencode({"user_id": user}))]
                if user not in (".", ".."):  # dot segments: no path carries them
                    path = f"/api/users/{quote(user, safe='')}/recommendations/"
                    reads.append(("path", path))
                for form, target in reads:
                    status, body = get(worker, target)
                    if status != 200 or body.get("user_id") != user:
                        unread.append((w, "user", form, user, status, body))
            for item in IDS:
                reads = [("query", "/api/item/?" + urlencode({"item_id": item}))]
                if item not in (".", ".."):
                    reads.append(("path", f"/api/items/{quote(item, safe='')}/"))
                for form, target in reads:
                    status, body = get(worker, target)
                    if status != 200 or body.get("item_id") != item:
                        unread.append((w, "item", form, item, status, body))
        assert not unread, unread
    finally:
        for worker in workers:
            worker.stop()
        reader.close()
