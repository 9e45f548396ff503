"""A flood of HTTP connections against a real worker whose open-files limit is 1,024 (a
common default): connections that send nothing, or half a request line, and are kept.

Before the bound (``web_max_connections``), they took every descriptor the worker may
open (1,009), for as long as their client kept them: after a broker restart its Kafka
clients could not reconnect (``Unable connect to node ... Too many open files``) and no
record was processed until the connections timed out, the poison-pill marker could not
be written, and asyncio logged a traceback for each ``accept`` refused (about 3,000 a
second).
"""

from __future__ import annotations

import os
import resource
import socket
import time

import pytest

from streams.admin import produce
from streams.broker import BrokerFlavour
from tests.conftest import TopicReader, isolated_settings, new_broker
from tests.integration.helpers import click, recommendations_for, start_worker_with_catalog

pytestmark = pytest.mark.integration

WORKER_FILES = 1024
FLOOD = 1_100  # more than the worker may open


def kept(sock: socket.socket) -> bool:
    """Whether the worker keeps ``sock`` open (sent nothing back, not closed)."""
    sock.setblocking(False)
    try:
        sock.recv(4096)  # a 503, or the end of a connection closed
    except BlockingIOError:
        return True
    except ConnectionError:  # closed with half a request line unread: a reset
        pass
    return False


def test_a_flood_of_idle_connections_leaves_the_worker_its_kafka_clients_and_files(
    broker_flavour: BrokerFlavour, tmp_path
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * FLOOD:  # this process holds the flood's other ends
        if hard != resource.RLIM_INFINITY and hard < 2 * FLOOD:
            pytest.skip(f"this process may open {hard} files: the flood needs {2 * FLOOD}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (2 * FLOOD, hard))
    broker = new_broker(broker_flavour, tmp_path / "broker")
    broker.start()
    settings = isolated_settings(broker, tmp_path / "data", encoders="hashing")
    worker = start_worker_with_catalog(settings)
    flood: list[socket.socket] = []
    try:
        assert worker.pid is not None
        resource.prlimit(worker.pid, resource.RLIMIT_NOFILE, (WORKER_FILES, WORKER_FILES))
        reader = TopicReader(settings, settings.topic_recommendations)
        for n in range(FLOOD):
            sock = socket.create_connection((settings.web_host, settings.web_port), timeout=2)
            flood.append(sock)
            if n % 2:
                sock.sendall(b"GET /health/ HTT")
        time.sleep(1)  # the answers to those over the bound arrive
        held = sum(kept(sock) for sock in flood)
        files = len(os.listdir(f"/proc/{worker.pid}/fd"))
        assert held <= settings.web_max_connections < files < WORKER_FILES - 256, (held, files)

        # The worker's Kafka clients reconnect, and records are processed, under the flood.
        broker.stop()
        time.sleep(3)
        broker.start()
        produce(settings, settings.topic_interactions, [("flo", click("f-1", "flo", "jazz-1"))])
        item = {"item_id": "new-1", "title": "A new item", "text": "Sent in the flood."}
        produce(settings, settings.topic_items, [("new-1", item)])
        reader.wait_for(lambda m: recommendations_for(m, "f-1") is not None, timeout_s=30)
        reader.close()
    finally:
        for sock in flood:
            sock.close()
    try:
        stats = worker.wait_until(lambda s: s["items"] >= 31, timeout_s=30, what="new-1 stored")
        assert stats["dead_letters"] == {}
        log = worker.log_path.read_text()
        assert "Too many open files" not in log and "out of system resource" not in log
    finally:
        worker.stop()
        broker.stop()
