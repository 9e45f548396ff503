"""Helpers for tests that run a real worker process against the real broker."""

from __future__ import annotations

import json
import random
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from models.engine import InProcessRecommender
from streams.admin import produce
from streams.demo import catalog_uploads
from streams.events import ItemUpload, Recommendations
from streams.process import WorkerProcess
from streams.served import reference_engine
from streams.settings import Settings

START = datetime.now(UTC) - timedelta(hours=1)


def click(
    event_id: str, user: str, item: str, kind: str = "click", minute: int = 0
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "user_id": user,
        "item_id": item,
        "kind": kind,
        "ts": (START + timedelta(minutes=minute)).isoformat(),
    }


def start_worker_with_catalog(
    settings: Settings, log_name: str = "worker.log", env: Mapping[str, str] | None = None
) -> WorkerProcess:
    worker = WorkerProcess(settings, settings.data_dir / log_name, env)
    worker.start()
    worker.wait_until(lambda s: True, timeout_s=180, what="web server up")
    catalog = catalog_uploads()
    produce(settings, settings.topic_items, catalog)
    worker.wait_until(lambda s: s["items"] >= len(catalog), timeout_s=120, what="catalog indexed")
    return worker


def send_logged(settings: Settings, n: int, event_id: str, user: str, item: str, kind: str) -> None:
    """Produce event ``n`` of a test log (``n`` minutes after START), keyed by its user."""
    event = click(event_id, user, item, kind, minute=n)
    produce(settings, settings.topic_interactions, [(user, event)])


def readiness(worker: WorkerProcess) -> tuple[bool, str]:
    """The worker's /ready/: whether it is ready, and why ("" while not serving)."""
    try:
        answer = worker.get("/ready/")
    except urllib.error.HTTPError as error:  # 503: not ready, with the reason in the body
        answer = json.loads(error.read())
    except OSError:
        return False, ""
    return bool(answer["ready"]), str(answer["reason"])


def ready(worker: WorkerProcess) -> bool:
    """Whether the worker's /ready/ says so (partitions assigned, state recovered)."""
    return readiness(worker)[0]


def recommendations_for(
    messages: list[tuple[str | None, bytes]], event_id: str
) -> Recommendations | None:
    for _, value in messages:
        message = Recommendations.model_validate_json(value)
        if message.trigger_event_id == event_id:
            return message
    return None


def wait_until_committed(settings: Settings, topic: str, timeout_s: float = 60) -> None:
    """Wait until the worker's group has committed every message now in ``topic``.

    Faust commits a message once its agent has finished with it, so this is the
    moment the effects of everything sent to the topic so far are applied.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=settings.effective_bootstrap_servers,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        ends = consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all((consumer.committed(tp) or 0) >= ends[tp] for tp in partitions):
                return
            time.sleep(0.2)
        raise TimeoutError(f"{topic}: not committed up to {ends} within {timeout_s:.0f}s")
    finally:
        consumer.close()


def in_process_engine(settings: Settings | None = None) -> InProcessRecommender:
    """The demo catalog encoded by the worker's own encoding code, in the in-process engine:
    the reference a Kafka run must agree with."""
    uploads = [ItemUpload.model_validate(value) for _, value in catalog_uploads()]
    return reference_engine(settings or Settings(), uploads)


def wait_until_replicated(
    settings: Settings, workers: list[WorkerProcess], timeout_s: float = 60
) -> None:
    """Wait until every worker's item-side replica has read all of item-updates."""
    consumer = KafkaConsumer(bootstrap_servers=settings.effective_bootstrap_servers)
    try:
        topic = settings.topic_item_updates
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        ends = {
            str(tp.partition): offset for tp, offset in consumer.end_offsets(partitions).items()
        }
    finally:
        consumer.close()
    for worker in workers:
        worker.wait_until(
            lambda s: all(s["item_updates_read"].get(p, 0) >= end for p, end in ends.items()),
            timeout_s,
            f"item-updates read to {ends}",
        )


KINDS = ["click", "click", "view", "like", "purchase", "skip"]


def event_log(seed: int, n_events: int) -> list[tuple[str, str, str, str]]:
    """(event_id, user, item, kind), time-ordered, with tastes so lists are not trivial."""
    rng = random.Random(seed)
    items = [item_id for item_id, _ in catalog_uploads()]
    users = {"ann": "jazz", "ben": "cook", "cat": "space", "dan": "ball"}
    log = []
    for n in range(n_events):
        user = rng.choice(sorted(users))
        liked = [i for i in items if i.startswith(users[user])]
        item = rng.choice(liked if rng.random() < 0.7 else items)
        log.append((f"k-{n}", user, item, rng.choice(KINDS)))
    return log


def make_tls(
    directory: Path, name: str = "test", names: str = "IP:127.0.0.1,DNS:localhost"
) -> tuple[Path, Path]:
    """A CA of its own and a server certificate it signs for ``names`` (subject
    alternative names; openssl CLI): returns (the CA certificate, the server's keystore:
    PKCS#8 key then certificate chain, as Kafka reads ``ssl.keystore.type=PEM``); the key
    and the certificate alone are ``{name}-server.key`` and ``.pem`` beside them."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_pem = directory / f"{name}-ca.key", directory / f"{name}-ca.pem"
    key, csr, cert = (directory / f"{name}-server.{ext}" for ext in ("key", "csr", "pem"))
    extensions = directory / f"{name}-san.cnf"
    extensions.write_text(f"subjectAltName={names}\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca_pem),
        "-days",
        "2",
        "-subj",
        f"/CN=streamrec {name} CA",
    )
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key))
    openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca_pem),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "2",
        "-extfile",
        str(extensions),
    )
    keystore = directory / f"{name}-keystore.pem"
    keystore.write_text(key.read_text() + cert.read_text() + ca_pem.read_text())
    return ca_pem, keystore


def compat_fired(worker: WorkerProcess) -> dict[str, float]:
    """How often each Kafka compatibility defence fired in the worker, from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://{worker.settings.web_host}:{worker.settings.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        sample.labels["defence"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "streamrec_kafka_compat_fired"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
