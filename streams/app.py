"""The Faust app: topics, tables and agents that adapt the core (models/, encoders/) to Kafka.

Agents only parse, route and persist; every decision is made by the core classes.
Anything a message cannot be turned into goes to the dead-letter topic with a reason,
and the agent carries on with the next message.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import faust
from faust.types import EventT
from pydantic import ValidationError

from encoders.base import Encoder
from encoders.text import compose_item_text
from models.hybrid import CONTENT, HybridRecommender, Recommendation, UnknownItemError
from models.popularity import ItemStats, TrendingPopularity
from models.signals import signal_weight
from models.user_state import UserState
from models.vector_store import StoredItem, VectorStore, open_vector_store
from streams.events import (
    MAX_RAW_CHARS,
    DeadLetter,
    Interaction,
    ItemSignal,
    ItemUpload,
    Reason,
    Recommendations,
    RecommendedItem,
    describe_validation_error,
)
from streams.settings import Settings

log = logging.getLogger(__name__)


class Rejected(Exception):
    """A message that cannot be processed; ``reason`` is a short code for counting."""

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error


def parse(model: type[ItemUpload] | type[Interaction], raw: bytes | None, key: str | None) -> Any:
    """Decode and validate one message whose key must equal its id field."""
    if raw is None:
        raise Rejected("schema", "empty message value: send a JSON object")
    try:
        value = model.model_validate_json(raw)
    except ValidationError as error:
        invalid_json = any(e["type"] == "json_invalid" for e in error.errors())
        if invalid_json:
            raise Rejected("invalid-json", f"not valid JSON: {error.errors()[0]['msg']}") from None
        raise Rejected("schema", describe_validation_error(error)) from None
    id_field = "item_id" if model is ItemUpload else "user_id"
    expected = getattr(value, id_field)
    if key is not None and key != expected:
        raise Rejected(
            "key-mismatch",
            f"message key {key!r} differs from {id_field} {expected!r}: "
            f"produce with key={id_field}",
        )
    return value


@dataclass
class Metrics:
    """Counters the web view reports (Prometheus export is a later step)."""

    processed: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)


class StreamrecApp:
    """The Faust app with its store, encoder and agents; ``start``/``stop`` own the resources."""

    def __init__(
        self,
        settings: Settings,
        encoder: Encoder[str],
        store: VectorStore | None = None,
    ) -> None:
        self.settings = settings
        self.encoder = encoder
        self.store = store or open_vector_store(
            settings.qdrant_url or settings.data_dir / "qdrant",
            {CONTENT: encoder.dim},
            collection=settings.collection,
            api_key=settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None,
        )
        self.hybrid = HybridRecommender(self.store)
        self.trending = TrendingPopularity()
        self.metrics = Metrics()
        self.app = self._create_faust_app()
        self._declare()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self.store.start()

    def stop(self) -> None:
        self.store.stop()

    # -- wiring ------------------------------------------------------------------------

    def _create_faust_app(self) -> faust.App:
        s = self.settings
        servers = [f"kafka://{host}" for host in s.effective_bootstrap_servers.split(",")]
        return faust.App(
            s.consumer_group,
            broker=servers,
            broker_credentials=_credentials(s),
            store="memory://",
            datadir=str(s.data_dir / "faust"),
            topic_partitions=s.partitions,
            topic_replication_factor=s.replication_factor,
            consumer_auto_offset_reset="earliest",
            web_host=s.web_host,
            web_bind=s.web_host,
            web_port=s.web_port,
            web_in_thread=False,
            producer_acks=-1,
        )

    def _declare(self) -> None:
        s, app = self.settings, self.app
        raw = {"key_serializer": "raw", "value_serializer": "raw", "partitions": s.partitions}
        self.items_topic = app.topic(s.topic_items, **raw)
        self.interactions_topic = app.topic(s.topic_interactions, **raw)
        self.item_updates_topic = app.topic(s.topic_item_updates, **raw)
        self.recommendations_topic = app.topic(s.topic_recommendations, **raw)
        self.dead_letters_topic = app.topic(s.topic_dead_letters, **raw)
        # One value per user / item holds state and the position it reflects, so a
        # redelivered message is recognised in the same write that applied it.
        self.users = app.Table("users", default=None, partitions=s.partitions)
        self.item_stats = app.Table("item-stats", default=None, partitions=s.partitions)
        self.ingest_items = app.agent(self.items_topic, name="ingest-items")(self._ingest_items)
        self.on_interactions = app.agent(self.interactions_topic, name="interactions")(
            self._on_interactions
        )
        self.on_item_updates = app.agent(self.item_updates_topic, name="item-updates")(
            self._on_item_updates
        )

        async def stats(view: Any, request: Any) -> Any:
            return view.json(
                {
                    "items": self.store.count(),
                    "processed": dict(self.metrics.processed),
                    "dead_letters": dict(self.metrics.dead_letters),
                }
            )

        app.page("/streamrec/stats/")(stats)

    # -- agents ------------------------------------------------------------------------

    async def _ingest_items(self, stream: faust.StreamT) -> None:
        s = self.settings
        async for events in stream.take_events(s.encode_batch_size, within=s.encode_batch_window_s):
            await self.ingest_batch(events)

    async def ingest_batch(self, events: Sequence[EventT]) -> None:
        """Validate, encode (in a thread: torch releases the GIL) and upsert one batch."""
        uploads: dict[str, tuple[ItemUpload, str]] = {}
        for event in events:
            try:
                upload = parse(ItemUpload, event.value, _key(event))
                text = compose_item_text(upload.title, upload.text, upload.tags)
                if not text:
                    raise Rejected(
                        "no-text",
                        "item has no title, text or tags: this worker encodes text; add a title",
                    )
            except Rejected as rejected:
                await self.dead_letter(event, rejected)
                continue
            uploads[upload.item_id] = (upload, text)  # a later upload in the batch wins
        if not uploads:
            return
        vectors = await asyncio.to_thread(self.encoder.encode, [t for _, t in uploads.values()])
        # Re-uploading an item must not reset what its owner learned about it.
        known = self.store.get(list(uploads), with_vectors=False)
        self.store.upsert(
            [
                StoredItem(
                    upload.item_id,
                    {CONTENT: vector},
                    {
                        "title": upload.title,
                        "tags": upload.tags,
                        "modalities": ["text"],
                        "metadata": upload.metadata,
                        "created_at": upload.created_at.isoformat() if upload.created_at else None,
                        **_owned_fields(known.get(upload.item_id)),
                    },
                )
                for (upload, _), vector in zip(uploads.values(), vectors, strict=True)
            ]
        )
        self.metrics.processed[self.settings.topic_items] += len(uploads)

    async def _on_interactions(self, stream: faust.StreamT) -> None:
        async for event in stream.events():
            try:
                await self.handle_interaction(event)
            except Rejected as rejected:
                await self.dead_letter(event, rejected)

    async def handle_interaction(self, event: EventT) -> None:
        interaction: Interaction = parse(Interaction, event.value, _key(event))
        message = event.message
        entry = self.users.get(interaction.user_id) or {}
        state = UserState.from_dict(entry.get("state", {}))
        weight = signal_weight(interaction.kind.value, interaction.value)
        signal = ItemSignal(
            event_id=interaction.event_id,
            item_id=interaction.item_id,
            weight=weight,
            ts=interaction.ts,
            source_partition=message.partition,
            source_offset=message.offset,
        )
        if message.offset <= entry.get("offsets", {}).get(str(message.partition), -1):
            # Redelivered after a restart and already in the state: only make sure the item
            # owner heard of it (it ignores signals it has applied), then move on.
            await self._send(self.item_updates_topic, interaction.item_id, signal.to_bytes())
            return
        try:
            applied = self.hybrid.learn_one(
                state, interaction.event_id, interaction.item_id, weight, interaction.ts.timestamp()
            )
        except UnknownItemError as error:
            raise Rejected("unknown-item", str(error)) from None
        if not applied:
            raise Rejected(
                "duplicate", f"event_id {interaction.event_id!r} was already applied; ignored"
            )
        offsets = {**entry.get("offsets", {}), str(message.partition): message.offset}
        self.users[interaction.user_id] = {"state": state.to_dict(), "offsets": offsets}
        await self._send(self.item_updates_topic, interaction.item_id, signal.to_bytes())
        recommendations = self.hybrid.recommend(state, self.settings.top_k)
        await self._send(
            self.recommendations_topic,
            interaction.user_id,
            self.to_message(interaction, state, recommendations).to_bytes(),
        )
        self.metrics.processed[self.settings.topic_interactions] += 1

    def to_message(
        self, trigger: Interaction, state: UserState, ranked: list[Recommendation]
    ) -> Recommendations:
        return Recommendations(
            user_id=trigger.user_id,
            items=[
                RecommendedItem(
                    item_id=rec.item_id,
                    score=rec.score,
                    title=rec.title,
                    reasons=[
                        Reason(source=r.source, because_of=r.because_of, score=r.score)
                        for r in rec.reasons
                    ],
                )
                for rec in ranked
            ],
            trigger_event_id=trigger.event_id,
            based_on_events=state.events_applied,
            generated_at=datetime.now(UTC),
            model_version=self.settings.model_version,
        )

    async def _on_item_updates(self, stream: faust.StreamT) -> None:
        async for event in stream.events():
            try:
                signal = ItemSignal.model_validate_json(event.value)
            except ValidationError as error:
                await self.dead_letter(event, Rejected("schema", describe_validation_error(error)))
                continue
            entry = self.item_stats.get(signal.item_id) or {}
            applied = entry.get("applied", {})
            if signal.source_offset <= applied.get(str(signal.source_partition), -1):
                continue  # already counted before a restart
            stats = ItemStats(**entry.get("stats", {}))
            self.trending.learn_one(stats, signal.weight, signal.ts.timestamp())
            self.store.set_payload(signal.item_id, stats.payload())
            self.item_stats[signal.item_id] = {
                "stats": {"trending": stats.trending, "engagements": stats.engagements},
                "applied": {**applied, str(signal.source_partition): signal.source_offset},
            }
            self.metrics.processed[self.settings.topic_item_updates] += 1

    # -- helpers -----------------------------------------------------------------------

    async def dead_letter(self, event: EventT, rejected: Rejected) -> None:
        message = event.message
        raw = event.value if isinstance(event.value, bytes) else b""
        letter = DeadLetter(
            source_topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=_key(event),
            reason=rejected.reason,
            error=rejected.error,
            raw=raw[:MAX_RAW_CHARS].decode("utf-8", errors="replace"),
            failed_at=datetime.now(UTC),
        )
        log.warning(
            "dead letter from %s[%s]@%s: %s",
            message.topic,
            message.partition,
            message.offset,
            rejected.error,
        )
        self.metrics.dead_letters[rejected.reason] += 1
        await self._send(self.dead_letters_topic, _key(event), letter.to_bytes())

    async def _send(self, topic: faust.TopicT, key: str | None, value: bytes) -> None:
        await topic.send(key=key.encode() if key is not None else None, value=value)


def _key(event: EventT) -> str | None:
    key = event.key
    if key is None:
        return None
    return key.decode("utf-8", errors="replace") if isinstance(key, bytes) else str(key)


def _owned_fields(existing: StoredItem | None) -> dict[str, Any]:
    """Payload fields the item's owner maintains, kept across re-uploads."""
    defaults = ItemStats().payload()
    if existing is None:
        return defaults
    return {name: existing.payload.get(name, value) for name, value in defaults.items()}


def _credentials(s: Settings) -> faust.types.auth.CredentialsT | None:
    if s.security_protocol == "PLAINTEXT":
        return None
    context = None
    if s.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=str(s.ssl_cafile) if s.ssl_cafile else None)
        if s.ssl_certfile:
            context.load_cert_chain(
                str(s.ssl_certfile), str(s.ssl_keyfile) if s.ssl_keyfile else None
            )
    if s.security_protocol == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=s.sasl_username,
        password=s.sasl_password.get_secret_value() if s.sasl_password else None,
        mechanism=s.sasl_mechanism or "PLAIN",
        ssl_context=context,
    )
