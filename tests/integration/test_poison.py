"""Poison-pill recovery with a real worker process, a real broker and an item that kills
the process (issue 16).

The killer is a genuine SIGSEGV (``killer_worker.py``): every input the production
decoders are known to die on is now refused before decoding, so no hostile upload can
be relied on to kill the production worker, and a test-only hook in production code
would test the hook. What is under test is the worker's recovery from a death while
encoding, whatever its cause: the in-progress marker, the item-by-item retry, the
``poison`` dead letter, and that the worker then runs on, with every other item stored.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from streams.admin import produce
from streams.bounds import EXIT_STUCK_AT_STOP
from streams.broker import LocalBroker
from streams.events import DeadLetter
from streams.poison import MARKER_NAME
from streams.process import WorkerProcess, settings_env
from tests.conftest import TopicReader, isolated_settings
from tests.integration.killer_worker import HANGER, KILLER

pytestmark = pytest.mark.integration


class KillerWorkerProcess(WorkerProcess):
    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.killer_worker"],
                env=settings_env(self.settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def wait_for_death(self, timeout_s: float) -> int:
        assert self._process is not None
        code = self._process.wait(timeout=timeout_s)
        self._process = None
        return code


def test_an_item_that_kills_the_worker_is_dead_lettered_as_poison_and_the_rest_stored(
    broker: LocalBroker, tmp_path
) -> None:
    settings = isolated_settings(
        broker,
        tmp_path / "data",
        partitions=1,  # one batch holds every item, in order
        encode_batch_window_s=2.0,
        consumer_session_timeout_s=6,
    )
    uploads = [
        (f"item-{n}", {"item_id": f"item-{n}", "title": KILLER if n == 4 else f"Item {n}"})
        for n in range(9)
    ]
    produce(settings, settings.topic_items, uploads)
    marker = settings.data_dir / MARKER_NAME
    worker = KillerWorkerProcess(settings, settings.data_dir / "worker-1.log")
    worker.start()
    try:
        # 1: dies in the batch; the marker names its items as suspects, none alone.
        assert worker.wait_for_death(timeout_s=300) == -11
        first = json.loads(marker.read_text())
        assert [settings.topic_items, 0, 4] in first["suspects"] and first["alone"] is None
        # 2: retries them one at a time, and dies on the killer, marked alone.
        worker = KillerWorkerProcess(settings, settings.data_dir / "worker-2.log")
        worker.start()
        assert worker.wait_for_death(timeout_s=300) == -11
        second = json.loads(marker.read_text())
        assert second["alone"] == [settings.topic_items, 0, 4]
        # 3: dead-letters the killer as poison without encoding it, and stays up.
        worker = KillerWorkerProcess(settings, settings.data_dir / "worker-3.log")
        worker.start()
        stats = worker.wait_until(lambda s: s["items"] >= 8, timeout_s=300, what="8 items")
        assert stats["items"] == 8
        assert worker.get("/api/items/item-3/")["title"] == "Item 3"
        reader = TopicReader(settings, settings.topic_dead_letters)
        [(key, value)] = reader.wait_for(lambda messages: len(messages) >= 1, timeout_s=120)
        reader.close()
        letter = DeadLetter.model_validate_json(value)
        assert (key, letter.reason, letter.offset) == ("item-4", "poison", 4)
        deadline = time.monotonic() + 60
        while marker.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not marker.exists()
        # New items after it are encoded in batches again.
        produce(settings, settings.topic_items, [("late", {"item_id": "late", "title": "Late"})])
        worker.wait_until(lambda s: s["items"] >= 9, timeout_s=120, what="a later item")
    finally:
        worker.kill()


def test_sigterm_stops_a_worker_whose_batch_is_stuck_and_loses_none_of_it(
    broker: LocalBroker, tmp_path
) -> None:
    """Before: encoding ran in asyncio's thread pool and Faust waits for a batch before it
    stops, so a batch stuck in a read kept the worker alive after SIGTERM, for good. Now
    the worker exits ``STOP_GRACE_S`` after the stop without committing the batch, and the
    next start retries it one item at a time: the stuck item ends as ``encode-timeout``,
    its neighbour is stored."""
    settings = isolated_settings(broker, tmp_path / "data", partitions=1, encode_batch_window_s=2.0)
    uploads = [
        ("stuck", {"item_id": "stuck", "title": HANGER}),
        ("fine", {"item_id": "fine", "title": "A fine item"}),
    ]
    worker = KillerWorkerProcess(settings, settings.data_dir / "worker-1.log")
    worker.start()
    try:
        worker.wait_until(lambda s: True, timeout_s=300, what="web server up")
        produce(settings, settings.topic_items, uploads)
        marker = settings.data_dir / MARKER_NAME
        deadline = time.monotonic() + 120
        while not marker.exists():  # the batch is being encoded, and never will be
            assert time.monotonic() < deadline, "the batch never started"
            time.sleep(0.2)
        assert worker._process is not None
        worker._process.send_signal(signal.SIGTERM)
        assert worker.wait_for_death(timeout_s=120) == EXIT_STUCK_AT_STOP
        assert len(json.loads(marker.read_text())["suspects"]) == 2
        # The next start, with a short time bound: nothing of the batch was committed.
        quick = settings.model_copy(update={"encode_timeout_s": 5.0})
        worker = KillerWorkerProcess(quick, settings.data_dir / "worker-2.log")
        worker.start()
        worker.wait_until(lambda s: s["items"] >= 1, timeout_s=300, what="the neighbour")
        reader = TopicReader(settings, settings.topic_dead_letters)
        [(key, value)] = reader.wait_for(lambda messages: len(messages) >= 1, timeout_s=120)
        reader.close()
        assert (key, DeadLetter.model_validate_json(value).reason) == ("stuck", "encode-timeout")
        assert worker.get("/api/items/fine/")["title"] == "A fine item"
    finally:
        worker.kill()


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_http_writes_need_the_token_json_and_the_worker_s_own_origin(
    broker: LocalBroker, tmp_path
) -> None:
    settings = isolated_settings(
        broker, tmp_path / "data", api_token="a-long-test-token", encoders="hashing"
    )
    worker = WorkerProcess(settings, settings.data_dir / "worker.log")
    worker.start()
    try:
        worker.wait_until(lambda s: True, timeout_s=300, what="web server up")
        # An interaction for an item the catalog lacks is refused (422) before it is queued.
        produce(settings, settings.topic_items, [("i1", {"item_id": "i1", "title": "One"})])
        worker.wait_until(lambda s: s["items"] >= 1, timeout_s=120, what="item stored")
        base = f"http://{settings.web_host}:{settings.web_port}"
        body = json.dumps(
            {
                "event_id": "e1",
                "user_id": "u1",
                "item_id": "i1",
                "kind": "click",
                "ts": "2026-01-01T00:00:00Z",
            }
        ).encode()
        url = f"{base}/api/interactions/"
        auth = {"Authorization": "Bearer a-long-test-token"}
        as_json = {"Content-Type": "application/json"}
        assert post(url, body, {**auth, "Content-Type": "text/plain"})[0] == 415
        evil = {**auth, **as_json, "Origin": "https://evil.example"}
        assert post(url, body, evil)[0] == 403
        assert post(url, body, as_json)[0] == 401
        assert post(url, body, {**as_json, "Authorization": "Bearer wrong"})[0] == 401
        own = {**auth, **as_json, "Origin": base}
        assert post(url, body, own) == (202, {"event_id": "e1", "queued": True})
        with pytest.raises(urllib.error.HTTPError) as missing:
            worker.get("/table/users/u1/")  # Faust's own table views are off
        assert missing.value.code == 404
    finally:
        worker.stop()
