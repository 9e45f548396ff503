"""The compatibility layer (streams/kafka_compat/): the upstream code it patches is the code
it was written against, each broker gets the patches it needs and no other, and every
defence that fires is counted where Prometheus reads it."""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import faust
import pytest
from aiohttp import web
from aiokafka.consumer.consumer import AIOKafkaConsumer
from aiokafka.consumer.fetcher import Fetcher, PartitionRecords
from aiokafka.consumer.group_coordinator import CoordinatorGroupRebalance, GroupCoordinator
from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.protocol.group import SyncGroupResponse_v0
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from streams import kafka_compat
from streams.kafka_compat import counts
from streams.metrics import WorkerMetrics
from streams.settings import Settings

#: The versions the patches were written and checked against.
RECORDED_VERSIONS = {
    "faust-streaming": "0.15.3",
    "aiokafka": "0.14.0",
    "mode-streaming": "0.7.1",
    "aiohttp": "3.14.5",
}

#: Every upstream function a patch replaces or calls by a private name, with its signature
#: when the patch was written.
RECORDED_SIGNATURES: dict[str, tuple[Callable[..., Any], str]] = {
    "Fetcher._proc_fetch_request": (
        Fetcher._proc_fetch_request,
        "(self, assignment, node_id, request)",
    ),
    "GroupCoordinator._maybe_leave_group": (GroupCoordinator._maybe_leave_group, "(self)"),
    "GroupCoordinator._send_req": (GroupCoordinator._send_req, "(self, request)"),
    "CoordinatorGroupRebalance._send_sync_group_request": (
        CoordinatorGroupRebalance._send_sync_group_request,
        "(self, request)",
    ),
    "AIOKafkaConsumerThread.seek_to_committed": (
        AIOKafkaConsumerThread.seek_to_committed,
        "(self) -> Mapping[faust.types.tuples.TP, int]",
    ),
    "AIOKafkaConsumer.seek_to_committed": (
        AIOKafkaConsumer.seek_to_committed,
        "(self, *partitions)",
    ),
    "Consumer._wait_next_records": (
        Consumer._wait_next_records,
        "(self, timeout: float) -> Tuple[Optional[Mapping[faust.types.tuples.TP, "
        "List[Any]]], Optional[Set[faust.types.tuples.TP]]]",
    ),
    "AIOKafkaConsumerThread._ensure_consumer": (
        AIOKafkaConsumerThread._ensure_consumer,
        "(self) -> aiokafka.consumer.consumer.AIOKafkaConsumer",
    ),
    "AIOKafkaConsumerThread.seek_wait": (
        AIOKafkaConsumerThread.seek_wait,
        "(self, partitions: Mapping[faust.types.tuples.TP, int]) -> None",
    ),
    "AIOKafkaConsumerThread.seek_to_beginning": (
        AIOKafkaConsumerThread.seek_to_beginning,
        "(self, *partitions: aiokafka.structs.TopicPartition) -> None",
    ),
    "AIOKafkaConsumerThread._create_worker_consumer": (
        AIOKafkaConsumerThread._create_worker_consumer,
        "(self, transport: 'Transport') -> aiokafka.consumer.consumer.AIOKafkaConsumer",
    ),
    "SubscriptionState.fetch_context": (SubscriptionState.fetch_context, "(self)"),
    "AppRunner._make_server": (web.AppRunner._make_server, "(self) -> aiohttp.web_server.Server"),
    "Server.__call__": (web.Server.__call__, "(self) -> aiohttp.web_protocol.RequestHandler"),
    "Server.connection_made": (
        web.Server.connection_made,
        "(self, handler: aiohttp.web_protocol.RequestHandler, "
        "transport: asyncio.transports.Transport) -> None",
    ),
    "PartitionRecords.__init__": (
        PartitionRecords.__init__,
        "(self, tp, records, aborted_transactions, fetch_offset, key_deserializer, "
        "value_deserializer, check_crcs, isolation_level)",
    ),
}

#: Private instance attributes the patches and services read, by the class that sets them.
RECORDED_ATTRIBUTES = {
    GroupCoordinator: ["_group_instance_id"],
    Recovery: ["_recovery_started_at", "_active_events_received_at"],
    PartitionRecords: ["_tp", "_records", "_check_crcs", "next_fetch_offset"],
    web.Server: ["_connections", "_kwargs", "_loop"],
    AIOKafkaConsumer: ["_isolation_level"],
}


@pytest.mark.parametrize("package", sorted(RECORDED_VERSIONS))
def test_the_patched_packages_are_the_versions_the_patches_were_checked_against(
    package: str,
) -> None:
    installed = importlib.metadata.version(package)
    assert installed == RECORDED_VERSIONS[package], (
        f"{package} is {installed}, the Kafka compatibility patches were checked against "
        f"{RECORDED_VERSIONS[package]}: read streams/kafka_compat/ against the new code "
        "(is each patch still needed, still right?), then update RECORDED_VERSIONS"
    )


@pytest.mark.parametrize("name", sorted(RECORDED_SIGNATURES))
def test_every_patched_or_called_private_function_keeps_its_signature(name: str) -> None:
    function, recorded = RECORDED_SIGNATURES[name]
    # A patch in place shows the replacement's signature: compare the upstream one.
    upstream = {patch.replacement: patch.original for patch in kafka_compat.PATCHES}
    function = upstream.get(function, function)
    assert str(inspect.signature(function)) == recorded, (
        f"{name} changed upstream: check streams/kafka_compat/ against it"
    )


@pytest.mark.parametrize("owner", list(RECORDED_ATTRIBUTES), ids=lambda c: c.__name__)
def test_the_private_attributes_read_still_exist(owner: type) -> None:
    source = inspect.getsource(owner)
    for attribute in RECORDED_ATTRIBUTES[owner]:
        assert f"self.{attribute}" in source, f"{owner.__name__}.{attribute} is gone upstream"


@pytest.fixture
def restore_patches() -> Iterator[None]:
    before = {patch.name: patch.installed for patch in kafka_compat.PATCHES}
    yield
    for patch in kafka_compat.PATCHES:
        patch.install() if before[patch.name] else patch.uninstall()


@pytest.mark.usefixtures("restore_patches")
def test_each_broker_gets_the_patches_it_needs_and_the_others_are_put_back() -> None:
    on_noida = kafka_compat.install(Settings(broker_flavour="noida-db"))
    assert on_noida == [
        "empty_fetch_backoff",
        "leave_on_stop",
        "rejoin_on_empty_assignment",
        "full_seek_to_committed",
        "poll_while_paused",
        "skip_undecodable_batches",
        "read_committed",
    ]
    assert all(patch.installed for patch in kafka_compat.PATCHES)
    on_kafka = kafka_compat.install(Settings(broker_flavour="kafka"))
    # noida-db's departures from the protocol are not patched on Kafka; client bugs are.
    assert on_kafka == [
        "full_seek_to_committed",
        "poll_while_paused",
        "skip_undecodable_batches",
        "read_committed",
    ]
    installed = {patch.name: patch.installed for patch in kafka_compat.PATCHES}
    assert installed == {
        "empty_fetch_backoff": False,
        "leave_on_stop": False,
        "rejoin_on_empty_assignment": False,
        "full_seek_to_committed": True,
        "poll_while_paused": True,
        "skip_undecodable_batches": True,
        "read_committed": True,
    }
    assert Fetcher._proc_fetch_request is kafka_compat.fetch_backoff.PATCH.original


class _Coordinator:
    """What a SyncGroup request reads and calls on aiokafka's group coordinator."""

    def __init__(self, answer: SyncGroupResponse_v0) -> None:
        self.answer = answer
        self.generation = 2
        self.member_id = "member-1"
        self._rebalance_timeout_ms = 60_000
        self.rejoins = 0

    async def _send_req(self, request: object) -> SyncGroupResponse_v0:
        return self.answer

    def request_rejoin(self) -> None:
        self.rejoins += 1


@pytest.mark.usefixtures("restore_patches")
def test_a_sync_group_answer_with_no_assignment_is_joined_again_on_noida_db(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(counts, "fired", counts.Counter())
    kafka_compat.install(Settings(broker_flavour="noida-db"))

    def sync(answer: bytes) -> tuple[bytes | None, int]:
        coordinator = _Coordinator(SyncGroupResponse_v0(error_code=0, member_assignment=answer))
        rebalance = CoordinatorGroupRebalance(coordinator, "group", 0, None, [], 10_000, 100)
        return asyncio.run(rebalance._send_sync_group_request(None)), coordinator.rejoins

    # What noida-db answered the leader in CI: no error, zero bytes. aiokafka alone would
    # hand b"" to the assignment decoder, whose error ends the coordinator for good.
    assert sync(b"") == (None, 1)  # None: aiokafka backs off and joins again
    assert counts.fired["empty_assignment_rejoin"] == 1
    assignment = ConsumerProtocolMemberAssignment(0, [], b"").encode()
    assert sync(assignment) == (assignment, 0)  # an assignment of nothing is kept


@pytest.mark.usefixtures("restore_patches")
def test_a_disabled_patch_is_not_installed_and_an_unknown_name_is_refused() -> None:
    settings = Settings(broker_flavour="kafka", kafka_compat_disabled=["poll_while_paused"])
    assert kafka_compat.install(settings) == [
        "full_seek_to_committed",
        "skip_undecodable_batches",
        "read_committed",
    ]
    assert not kafka_compat.paused_poll.PATCH.installed
    with pytest.raises(ValueError, match="kafka_compat_disabled: no patch named paused_pol;"):
        kafka_compat.install(Settings(kafka_compat_disabled=["paused_pol"]))


def test_the_broker_flavour_follows_the_local_broker_or_the_configured_servers() -> None:
    assert Settings().effective_broker_flavour == "noida-db"  # no servers: local noida-db
    assert Settings(local_broker="kafka").effective_broker_flavour == "kafka"
    assert Settings(bootstrap_servers="kafka-1:9092").effective_broker_flavour == "kafka"
    explicit = Settings(bootstrap_servers="127.0.0.1:19092", broker_flavour="noida-db")
    assert explicit.effective_broker_flavour == "noida-db"


def test_every_defence_is_exposed_to_prometheus_with_its_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(counts, "fired", counts.Counter())
    counts.fire("catch_up_read")
    counts.fire("catch_up_record", 3)
    text = WorkerMetrics(lag=dict).exposition().decode()
    assert 'streamrec_kafka_compat_fired_total{defence="catch_up_read"} 1.0' in text
    assert 'streamrec_kafka_compat_fired_total{defence="catch_up_record"} 3.0' in text
    for defence in counts.DEFENCES:  # fired or not, every defence has a series
        assert f'streamrec_kafka_compat_fired_total{{defence="{defence}"}}' in text
    with pytest.raises(KeyError, match="unknown defence"):
        counts.fire("no_such_defence")


@pytest.mark.usefixtures("restore_patches")
@pytest.mark.parametrize("flavour", ["noida-db", "kafka"])
def test_the_worker_s_consumer_reads_only_committed_records(flavour: str) -> None:
    kafka_compat.install(Settings(broker_flavour=flavour))

    async def isolation_level() -> str:
        app = faust.App("isolation", broker="kafka://localhost:1")
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        level = consumer._isolation_level
        await consumer.stop()  # never started: nothing to close but the object
        return level

    # Faust's own choice for an app that is not exactly-once: read_uncommitted.
    assert asyncio.run(isolation_level()) == "read_committed"
