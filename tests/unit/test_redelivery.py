"""An event redelivered after its user's state was saved is not applied again, and what
may have been lost with the worker is sent again: its item changes while not known
durable, and its list when it is still the user's latest.

Found under load in the rebalance test: a worker stopped between saving a user's state
and sending the list; the worker that took the partition over found the event applied
and sent nothing, so two events never got a list. The handler runs here on its own (no
broker); the messages it would send are collected instead.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from encoders.fusion import AverageFusion, ModalityProjection
from encoders.hashing import HashingTextEncoder
from encoders.media import MediaFetcher, MediaPolicy
from encoders.multimodal import MultimodalEncoder
from streams.app import StreamrecApp
from streams.events import ItemChanges, Recommendations
from streams.settings import Settings


@pytest.fixture(scope="module")
def encoder() -> MultimodalEncoder:
    return MultimodalEncoder(
        HashingTextEncoder(),
        AverageFusion(ModalityProjection({"text": 384}, common_dim=384)),
        MediaFetcher(MediaPolicy()),
    )


class Handler:
    """The worker's interaction handler with a dict for its table and a list for Kafka."""

    def __init__(self, encoder: MultimodalEncoder, data_dir: Any) -> None:
        self.app = StreamrecApp(Settings(data_dir=data_dir), encoder)
        rng = np.random.default_rng(0)
        for n in range(6):
            self.app.hybrid.add_item(f"item-{n}", f"Item {n}", rng.normal(size=384))
        self.app.users = {}  # type: ignore[assignment]
        self.sent: list[tuple[str, bytes]] = []
        self.app._send = self._send  # type: ignore[method-assign]

    async def _send(self, topic: Any, key: str | None, value: bytes) -> asyncio.Future:
        self.sent.append((topic.get_topic_name(), value))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def deliver(self, offset: int, event_id: str, item: str) -> list[tuple[str, bytes]]:
        """Hand the handler the interaction at ``offset``; what it sent."""
        value = (
            f'{{"event_id": "{event_id}", "user_id": "ann", "item_id": "{item}", '
            f'"kind": "click", "ts": "{datetime(2026, 1, 1, 0, offset, tzinfo=UTC).isoformat()}"}}'
        )
        message = SimpleNamespace(
            topic=self.app.settings.topic_interactions, partition=0, offset=offset, timestamp=None
        )
        event = SimpleNamespace(key=b"ann", value=value.encode(), message=message)
        before = len(self.sent)
        asyncio.run(self.app.handle_interaction(event))  # type: ignore[arg-type]
        return self.sent[before:]


def lists(sent: list[tuple[str, bytes]]) -> list[Recommendations]:
    topic = Settings().topic_recommendations
    return [Recommendations.model_validate_json(v) for t, v in sent if t == topic]


def test_a_redelivered_latest_event_gets_its_list_again_and_nothing_is_applied_twice(
    encoder: MultimodalEncoder, tmp_path
) -> None:
    handler = Handler(encoder, tmp_path)
    first = handler.deliver(3, "e-1", "item-1")
    assert [m.trigger_event_id for m in lists(first)] == ["e-1"]
    state = handler.app.users["ann"]["state"]

    again = handler.deliver(3, "e-1", "item-1")  # the worker stopped after saving ann
    assert lists(again) == lists(first), "the same list, sent again"
    changes = [v for t, v in again if t == Settings().topic_item_updates]
    assert [ItemChanges.model_validate_json(v).event_id for v in changes] == ["e-1"]
    assert handler.app.users["ann"]["state"] == state, "not applied twice"


def test_a_redelivered_event_with_a_newer_list_sends_no_stale_list(
    encoder: MultimodalEncoder, tmp_path
) -> None:
    handler = Handler(encoder, tmp_path)
    handler.deliver(3, "e-1", "item-1")
    handler.deliver(4, "e-2", "item-2")
    assert lists(handler.deliver(3, "e-1", "item-1")) == []
    assert [m.based_on_events for m in lists(handler.deliver(4, "e-2", "item-2"))] == [2]


def test_a_new_event_at_an_offset_already_applied_is_refused_not_taken_for_a_repeat(
    encoder: MultimodalEncoder, tmp_path
) -> None:
    """A broker that lost records gave their offsets to new ones (streams/delivery_book.py):
    the worker refuses the new event with its reason (a dead letter) instead of skipping it
    as redelivered, and applies nothing for it."""
    from streams.app import Rejected

    handler = Handler(encoder, tmp_path)
    handler.deliver(3, "e-1", "item-1")
    state = handler.app.users["ann"]["state"]
    with pytest.raises(Rejected) as refused:
        handler.deliver(3, "e-2", "item-2")
    assert refused.value.reason == "offset-reused" and "'e-2'" in refused.value.error
    assert handler.app.users["ann"]["state"] == state
    assert [m.trigger_event_id for m in lists(handler.deliver(4, "e-2", "item-2"))] == ["e-2"]


def test_a_refused_event_redelivered_is_a_repeat_not_a_second_dead_letter(
    encoder: MultimodalEncoder, tmp_path
) -> None:
    """An event refused after it was found new (here: an unknown item) keeps its position:
    redelivered after a later event of the user (a rewind), it is recognised as itself,
    not dead-lettered again as an offset the broker reused."""
    from streams.app import Rejected

    handler = Handler(encoder, tmp_path)
    with pytest.raises(Rejected) as refused:
        handler.deliver(3, "e-1", "no-such-item")
    assert refused.value.reason == "unknown-item"
    handler.deliver(4, "e-2", "item-2")
    assert handler.deliver(3, "e-1", "no-such-item") == []  # a repeat: nothing sent, no raise
