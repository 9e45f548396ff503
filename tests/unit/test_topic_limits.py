"""The worker's writes against the ``max.message.bytes`` of the topics they go to.

A team may create the topics the worker writes beforehand with a limit under the
producer's 1 MB. The broker refused such records (and whole batches of small ones) after
they were sent, and Faust only logged it: the records were lost while their sources were
committed (``tests/integration/test_topic_limits.py`` on a real broker). Each record is
now checked against its topic's limit before anything of it is stored or sent, the
producer's batches stay under the smallest limit, dead letters are cut to fit theirs, and
a refusal that still happens is counted and logged.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from aiokafka.errors import MessageSizeTooLargeError

from models.hybrid import HybridRecommender
from streams.admin import TopicLayoutError, check_changelog_kept, check_item_updates_kept
from streams.app import PRODUCER_BATCH_BYTES, StreamrecApp
from streams.bounds import (
    BATCH_FRAMING_BYTES,
    CHANGELOG_MIN_MESSAGE_BYTES,
    PRODUCER_MAX_REQUEST_BYTES,
    OversizedOutput,
    check_size,
)
from streams.encoding import build_item_encoder
from streams.events import DeadLetter, ItemChanges
from streams.metrics import WorkerMetrics
from streams.outbox import Outbox
from streams.records import Rejected
from streams.settings import Settings
from streams.user_entry import POSITIONS_SHARE
from tests.unit.interaction_handler import Handler, SentTo


class Refusing:
    """An output topic whose broker refuses every record after it is sent."""

    async def send(self, key: bytes | None, value: bytes) -> asyncio.Future:
        refused = asyncio.get_running_loop().create_future()
        refused.set_exception(MessageSizeTooLargeError())
        return refused


def outbox(limits: dict[str, int], sent: list[tuple[str, bytes]]) -> Outbox:
    topics = {name: SentTo(name, sent) for name in ("recs", "updates", "letters")}
    return Outbox(topics, "letters", 1_000_000, WorkerMetrics(lag=dict), limits)


def test_a_record_over_its_topic_s_max_message_bytes_is_refused_before_it_is_sent() -> None:
    sent: list[tuple[str, bytes]] = []
    box = outbox({"recs": 3_000}, sent)
    room = 3_000 - BATCH_FRAMING_BYTES - len(b"ann")

    async def run() -> None:
        await box.send("recs", "ann", b"x" * room)
        with pytest.raises(OversizedOutput, match=r"topic's max\.message\.bytes"):
            await box.send("recs", "ann", b"x" * (room + 1))
        await box.send("updates", "ann", b"x" * 100_000)  # no limit of its own: the producer's

    asyncio.run(run())
    assert [(topic, len(value)) for topic, value in sent] == [("recs", room), ("updates", 100_000)]


@pytest.mark.parametrize(
    "topic, what",
    [
        ("topic_item_updates", "the item changes"),
        ("topic_recommendations", "the list"),
        ("changelog", "the user's table entry"),
    ],
)
def test_an_event_whose_output_passes_its_topic_s_limit_is_refused_before_it_is_stored(
    tmp_path: Path, topic: str, what: str
) -> None:
    handler = Handler(tmp_path)
    settings = handler.settings
    assert handler.deliver(0, "e-0", "item-1")  # its outputs fit the broker's default
    sizes = {name: len(value) for name, value in handler.sent}
    entry_bytes = sizes[settings.topic_recommendations] + sizes[settings.topic_item_updates]
    name = settings.users_changelog if topic == "changelog" else getattr(settings, topic)
    before = dict(handler.users["ann"])
    # Room for the list and the item changes each, and on the changelog for the room an
    # entry keeps for its positions and 1 KB more, not for the entry holding both.
    handler.handler.outbox.topic_limits[name] = (
        POSITIONS_SHARE + 1_000 + BATCH_FRAMING_BYTES if topic == "changelog" else sizes[name] // 2
    )
    assert entry_bytes > 1_000
    with pytest.raises(Rejected) as refused:
        handler.deliver(1, "e-1", "item-2")
    assert refused.value.reason == "output-oversized"
    assert what in refused.value.error and "max.message.bytes" in refused.value.error
    assert handler.users["ann"]["state"] == before["state"]  # nothing of it stored
    # Nor sent, but for the item changes once they were applied here (before the list and
    # the entry could be measured): every replica must fold what this one did.
    applied_here = [] if topic == "topic_item_updates" else [settings.topic_item_updates]
    assert [name for name, _ in handler.sent[2:]] == applied_here


def test_a_dead_letter_is_cut_to_fit_a_small_dead_letters_topic() -> None:
    sent: list[tuple[str, bytes]] = []
    box = outbox({"letters": 1_000}, sent)
    message = SimpleNamespace(topic="interactions", partition=0, offset=7)
    record = SimpleNamespace(key=b"ann", value=b"v" * 5_000, message=message)
    asyncio.run(box.dead_letter(record, Rejected("schema", "e" * 1_500)))  # type: ignore[arg-type]
    [(topic, value)] = sent
    letter = DeadLetter.model_validate_json(value)
    assert topic == "letters" and len(value) <= 1_000 - BATCH_FRAMING_BYTES
    assert (letter.key, letter.reason, letter.offset, letter.raw_bytes) == (
        "ann",
        "schema",
        7,
        5_000,
    )
    assert letter.raw == "" and letter.error.startswith("eee")
    # Where it fits, the raw value is quoted as before.
    roomy: list[tuple[str, bytes]] = []
    asyncio.run(outbox({}, roomy).dead_letter(record, Rejected("schema", "short")))  # type: ignore[arg-type]
    assert DeadLetter.model_validate_json(roomy[0][1]).raw.startswith("vvv")
    # Where even that does not fit, it is counted as refused, never raised out of the agent.
    tiny: list[tuple[str, bytes]] = []
    box = outbox({"letters": 400}, tiny)
    asyncio.run(box.dead_letter(record, Rejected("schema", "short")))  # type: ignore[arg-type]
    assert tiny == [] and box.metrics.sends_refused == {"letters": 1}


def test_a_record_the_broker_refuses_is_counted_and_logged_once_per_topic(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = WorkerMetrics(lag=dict)
    box = Outbox({"recs": Refusing()}, "letters", 1_000_000, metrics)

    async def run() -> None:
        for n in range(3):
            await box.send("recs", f"u{n}", b"{}")
        await asyncio.sleep(0)  # the done callbacks

    with caplog.at_level(logging.ERROR, logger="streams.outbox"):
        asyncio.run(run())
    assert metrics.sends_refused == {"recs": 3}
    [logged] = [r.getMessage() for r in caplog.records if r.name == "streams.outbox"]
    assert "refused a record for recs" in logged and "MessageSizeTooLargeError" in logged
    assert b"streamrec_sends_refused_total" in metrics_text(metrics)


def metrics_text(metrics: WorkerMetrics) -> bytes:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry)


@pytest.mark.parametrize(
    "limits, batch", [({}, PRODUCER_BATCH_BYTES), ({"recs": 3_000, "letters": 9_000}, 3_000)]
)
def test_the_producer_s_batches_stay_under_the_smallest_limit_of_a_topic_written(
    tmp_path: Path, limits: dict[str, int], batch: int
) -> None:
    settings = Settings(data_dir=tmp_path, encoders="hashing")
    app = StreamrecApp(settings, build_item_encoder(settings), topic_limits=limits)
    assert app.app.conf.producer_max_batch_size == batch
    assert app.outbox.topic_limits == limits


@pytest.mark.parametrize(
    "configs, losing",
    [
        ({"cleanup.policy": "compact", "retention.ms": "-1", "retention.bytes": "-1"}, True),
        ({"cleanup.policy": "delete,compact", "retention.ms": "-1"}, True),
        ({"cleanup.policy": "delete", "retention.ms": "604800000"}, True),  # Kafka's default
        ({"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "1000"}, True),
        ({"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}, False),
        ({"retention.ms": "-1"}, False),  # a broker that states less: what it states is kept
    ],
)
def test_an_item_updates_that_may_lose_records_is_refused_naming_the_fix(
    configs: dict[str, str], losing: bool
) -> None:
    settings = Settings()
    described = {settings.topic_item_updates: configs, "other": {"cleanup.policy": "compact"}}
    if not losing:
        check_item_updates_kept(settings, described)
        return
    with pytest.raises(TopicLayoutError) as refused:
        check_item_updates_kept(settings, described)
    message = str(refused.value)
    assert message.startswith("item-updates may lose records (")
    assert "--add-config cleanup.policy=delete,retention.ms=-1,retention.bytes=-1" in message


@pytest.mark.parametrize(
    ("configs", "losing"),
    [
        ({"cleanup.policy": "delete", "retention.ms": "604800000"}, True),  # a broker's defaults
        ({"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}, True),
        ({"cleanup.policy": "compact,delete", "retention.ms": "604800000"}, True),
        ({"cleanup.policy": "compact, delete", "retention.bytes": "1000000"}, True),
        ({"cleanup.policy": "compact", "retention.ms": "604800000"}, False),  # as Faust makes it
        ({"cleanup.policy": "compact,delete", "retention.ms": "-1"}, False),
        ({"cleanup.policy": "compact", "max.message.bytes": "100000"}, True),  # too small
        ({"cleanup.policy": "compact", "max.message.bytes": "1048588"}, False),  # the default
        ({}, False),  # a broker that states nothing: what it states is kept
    ],
)
def test_a_users_changelog_that_may_lose_users_state_is_refused_naming_the_fix(
    configs: dict[str, str], losing: bool
) -> None:
    settings = Settings()
    changelog = settings.users_changelog
    described = {changelog: configs, settings.topic_item_updates: {"cleanup.policy": "delete"}}
    if not losing:
        check_changelog_kept(settings, described)
        return
    with pytest.raises(TopicLayoutError) as refused:
        check_changelog_kept(settings, described)
    message = str(refused.value)
    assert message.startswith(f"{changelog} cannot keep users' state (") and "\n" not in message
    wanted = f"cleanup.policy=compact,max.message.bytes={CHANGELOG_MIN_MESSAGE_BYTES}"
    assert f"--entity-name {changelog} --add-config {wanted}" in message
    # The least it asks for holds the largest entry the producer sends.
    check_size(
        None,
        PRODUCER_MAX_REQUEST_BYTES - 4_096,
        PRODUCER_MAX_REQUEST_BYTES,
        "entry",
        CHANGELOG_MIN_MESSAGE_BYTES,
    )


def test_an_event_refused_after_its_changes_were_applied_here_leaves_replicas_equal(
    tmp_path: Path,
) -> None:
    """A list too large for its topic is found after the event's changes were applied to
    this worker's item side: they were neither undone nor sent, so this replica differed
    from every other one for good."""
    handler = Handler(tmp_path)
    settings = handler.settings
    handler.deliver(0, "e-0", "item-1")
    handler.handler.outbox.topic_limits[settings.topic_recommendations] = 300  # no list fits
    with pytest.raises(Rejected, match="the list"):
        handler.deliver(1, "e-1", "item-2")
    peer = HybridRecommender(content_dim=8)
    rng = np.random.default_rng(0)
    for n in range(6):
        peer.add_item(f"item-{n}", f"Item {n}", rng.normal(size=8))
    for name, value in handler.sent:
        if name == settings.topic_item_updates:
            peer.apply(ItemChanges.model_validate_json(value).changes)
    items = [f"item-{n}" for n in range(6)]
    here = handler.handler.hybrid
    assert [peer.item_state(i) for i in items] == [here.item_state(i) for i in items]
    assert here.item_state("item-2")["engagements"] == 1
