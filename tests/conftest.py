"""Shared fixtures: a real broker per session and per-test settings on it.

``--broker`` picks the broker the integration tests run on: ``noida-db`` (the embedded
default, no Java), ``kafka`` (Apache Kafka 4, from ``deploy/kafka/pom.xml``) or ``both``,
in which case every test that uses a broker runs once on each (CI runs both).
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic

from streams.admin import create_topics
from streams.broker import Broker, BrokerFlavour, KafkaBroker, LocalBroker
from streams.settings import Settings

# Property tests check what the code does, never how fast: on a loaded 2-core machine
# hypothesis' default 200 ms deadline per example failed tests that were right.
hypothesis_settings.register_profile("streamrec", deadline=None)
hypothesis_settings.load_profile("streamrec")


@pytest.fixture(scope="session")
def minilm() -> Any:
    """MiniLM, loaded once for the whole session rather than once per test module."""
    from encoders.text import MiniLMTextEncoder

    return MiniLMTextEncoder(threads=1)


def own_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The records ``caplog`` caught but those of kafka-python's loggers: a client an
    earlier test left closing logs from its own thread (connection refused once that
    test's broker stopped), into whichever test runs then."""
    return [r for r in caplog.records if r.name.split(".")[0] != "kafka"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


BROKER_CHOICES: dict[str, list[BrokerFlavour]] = {
    "noida-db": ["noida-db"],
    "noida": ["noida-db"],
    "kafka": ["kafka"],
    "both": ["noida-db", "kafka"],
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--broker",
        choices=sorted(BROKER_CHOICES),
        default="noida-db",
        help="broker of the integration tests: noida-db (default), kafka, or both",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Session-scoped: pytest groups the tests by broker, so each starts once.
    if "broker_flavour" in metafunc.fixturenames:
        flavours = BROKER_CHOICES[metafunc.config.getoption("--broker")]
        metafunc.parametrize("broker_flavour", flavours, scope="session")


def new_broker(flavour: BrokerFlavour, data_dir: Path) -> LocalBroker | KafkaBroker:
    """A broker of ``flavour`` on a free port (not started)."""
    if flavour == "kafka":
        return KafkaBroker(free_port(), data_dir)
    return LocalBroker(free_port(), data_dir)


@pytest.fixture(scope="session")
def broker(
    broker_flavour: BrokerFlavour, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalBroker | KafkaBroker]:
    local = new_broker(broker_flavour, tmp_path_factory.mktemp(f"broker-{broker_flavour}"))
    local.start()
    yield local
    local.stop()


def isolated_settings(broker: Broker, data_dir: Path, **overrides: Any) -> Settings:
    """Settings on the test broker with topics and consumer group of their own (created)."""
    settings = uncreated_settings(broker, data_dir, **overrides)
    create_topics(settings)
    return settings


def settings_with_team_topics(
    broker: Broker,
    data_dir: Path,
    topic_configs: Mapping[str, Mapping[str, str]],
    **overrides: Any,
) -> Settings:
    """Settings as ``isolated_settings`` makes them, with no topic created but those of
    ``topic_configs`` (by setting name, ``topic_item_updates``...): created as another
    team would have, with those configs."""
    settings = uncreated_settings(broker, data_dir, **overrides)
    admin = KafkaAdminClient(bootstrap_servers=settings.effective_bootstrap_servers)
    try:
        admin.create_topics(
            [
                NewTopic(getattr(settings, name), settings.partitions, 1, topic_configs=dict(c))
                for name, c in topic_configs.items()
            ]
        )
    finally:
        admin.close()
    return settings


def uncreated_settings(broker: Broker, data_dir: Path, **overrides: Any) -> Settings:
    """Settings on the test broker with topic and consumer group names of their own."""
    run = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        **broker.client_settings(),
        "data_dir": data_dir,
        "web_port": free_port(),
        "consumer_group": f"streamrec-{run}",
        "topic_items": f"items-{run}",
        "topic_interactions": f"interactions-{run}",
        "topic_recommendations": f"recommendations-{run}",
        "topic_item_updates": f"item-updates-{run}",
        "topic_dead_letters": f"dead-letters-{run}",
        "torch_threads": 1,
        **overrides,
    }
    return Settings(**values)


class TopicReader:
    """Reads a topic from the beginning and waits for messages a test expects."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = KafkaConsumer(
            bootstrap_servers=settings.effective_bootstrap_servers,
            enable_auto_commit=False,
            **settings.kafka_client_options(),
        )
        deadline = time.monotonic() + 10
        partitions = None
        while not partitions and time.monotonic() < deadline:
            partitions = self.consumer.partitions_for_topic(topic)
        assert partitions, f"topic {topic} does not exist"
        self.consumer.assign([TopicPartition(topic, p) for p in partitions])
        self.consumer.seek_to_beginning()
        self.messages: list[tuple[str | None, bytes]] = []

    def wait_for(
        self, predicate: Callable[[list[tuple[str | None, bytes]]], bool], timeout_s: float = 60
    ) -> list[tuple[str | None, bytes]]:
        deadline = time.monotonic() + timeout_s
        while not predicate(self.messages):
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected messages did not arrive; got {self.messages}")
            for records in self.consumer.poll(timeout_ms=200).values():
                for record in records:
                    key = record.key.decode() if record.key is not None else None
                    self.messages.append((key, record.value))
        return self.messages

    def close(self) -> None:
        self.consumer.close()
