"""The worker's interaction handler as tests drive it: no Faust, no broker, no MiniLM."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from models.hybrid import HybridRecommender
from models.vector_store import open_vector_store
from streams.interactions import InteractionHandler
from streams.metrics import WorkerMetrics
from streams.outbox import Outbox
from streams.replica import ItemSideReplica
from streams.settings import Settings


class SentTo:
    """An output topic that keeps what is sent to it, acknowledged at once."""

    def __init__(self, name: str, sent: list[tuple[str, bytes]]) -> None:
        self.name, self.sent = name, sent

    async def send(self, key: bytes | None, value: bytes) -> asyncio.Future:
        self.sent.append((self.name, value))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class Handler:
    """The worker's interaction handler, no Faust: a dict for its table, lists for topics."""

    def __init__(self, data_dir: Path) -> None:
        settings = Settings(data_dir=data_dir)
        hybrid = HybridRecommender(content_dim=8)
        rng = np.random.default_rng(0)
        for n in range(6):
            hybrid.add_item(f"item-{n}", f"Item {n}", rng.normal(size=8))
        self.sent: list[tuple[str, bytes]] = []
        topics = {
            name: SentTo(name, self.sent)
            for name in (settings.topic_item_updates, settings.topic_recommendations)
        }
        metrics = WorkerMetrics(lag=dict)
        store = open_vector_store(data_dir / "qdrant", {"content": 8})
        self.users: dict[str, Any] = {}
        self.handler = InteractionHandler(
            settings,
            hybrid,
            self.users,
            ItemSideReplica(settings, hybrid, store, metrics),
            Outbox(topics, settings.topic_dead_letters, 1_000_000, metrics),
            committed=lambda topic: {},
            metrics=metrics,
        )
        self.settings = settings

    def deliver(
        self, offset: int, event_id: str, item: str, timestamp: float | None = None
    ) -> list[tuple[str, bytes]]:
        """Hand the handler the interaction at ``offset`` (stamped ``timestamp`` by the
        broker, in seconds); what it sent."""
        value = (
            f'{{"event_id": "{event_id}", "user_id": "ann", "item_id": "{item}", '
            f'"kind": "click", "ts": "{datetime(2026, 1, 1, 0, offset, tzinfo=UTC).isoformat()}"}}'
        )
        message = SimpleNamespace(
            topic=self.settings.topic_interactions, partition=0, offset=offset, timestamp=timestamp
        )
        event = SimpleNamespace(key=b"ann", value=value.encode(), message=message)
        before = len(self.sent)
        asyncio.run(self.handler.handle(event))
        return self.sent[before:]
