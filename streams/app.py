"""The Faust app: topics, tables and agents that adapt the core (models/, encoders/) to Kafka.

Agents only parse, route and persist; every decision is made by the core classes.
Anything a message cannot be turned into goes to the dead-letter topic with a reason,
and the agent carries on with the next message.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections import deque
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

import faust
from aiokafka.errors import KafkaError
from faust.types import TP, EventT
from pydantic import ValidationError

from encoders.base import Encoder
from encoders.fusion import (
    AverageFusion,
    Embeddings,
    Fusion,
    ModalityProjection,
    WeightedFusion,
)
from encoders.learned_fusion import LearnedFusion
from encoders.media import MediaError, MediaFetcher, MediaPolicy
from encoders.multimodal import (
    EncodedItem,
    ItemContent,
    MediaSource,
    MultimodalEncoder,
    internal_error,
)
from models.hybrid import CF, CONTENT, HybridRecommender, Recommendation, UnknownItemError
from models.signals import signal_weight
from models.user_state import UserState
from models.vector_store import (
    IncompatibleStoreError,
    StoredItem,
    VectorStore,
    open_vector_store,
)
from streams.bounds import (
    MAX_ERROR_CHARS,
    NonFiniteState,
    OversizedOutput,
    cancel_exit,
    check_size,
    clip,
    clip_key,
    exit_after_grace,
    in_daemon_thread,
    key_too_long,
    require_finite,
)
from streams.delivery_book import DeliveryBook
from streams.events import (
    MAX_RAW_CHARS,
    DeadLetter,
    Interaction,
    ItemChanges,
    ItemRecord,
    ItemUpload,
    MediaRef,
    Recommendations,
    describe_validation_error,
    pack_vector,
)
from streams.fresh_lists import ReadTimeLists
from streams.kafka_compat import install as install_kafka_compat
from streams.kafka_compat.delivery_watchdog import DeliveryWatchdog
from streams.kafka_compat.offset_continuity import CatchUpReader, CaughtUp, OffsetContinuity
from streams.metrics import WorkerMetrics
from streams.new_items import NewItemPusher
from streams.poison import PoisonGuard, Position
from streams.replica import ItemSideReplica
from streams.settings import Settings
from streams.web import install_views, web_middlewares

log = logging.getLogger(__name__)

#: Co-engaged pairs kept for refitting a learned fusion (the most recent ones).
MAX_COENGAGED_PAIRS = 20_000
#: Acknowledged item changes remembered before those already committed are forgotten.
MAX_ACKED_REMEMBERED = 100_000
#: Items re-fused per step after a refit.
REFUSE_PAGE = 256


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
    too_long = key_too_long(key)
    if too_long is not None:
        raise Rejected("key-oversized", too_long)
    try:
        value = model.model_validate_json(raw)
    except ValidationError as error:
        invalid_json = any(e["type"] == "json_invalid" for e in error.errors())
        if invalid_json:
            message = clip(error.errors()[0]["msg"])
            raise Rejected("invalid-json", f"not valid JSON: {message}") from None
        raise Rejected("schema", clip(describe_validation_error(error), MAX_ERROR_CHARS)) from None
    id_field = "item_id" if model is ItemUpload else "user_id"
    expected = getattr(value, id_field)
    if key is not None and key != expected:
        raise Rejected(
            "key-mismatch",
            f"message key {clip(key)!r} differs from {id_field} {expected!r}: "
            f"produce with key={id_field}",
        )
    return value


class StreamrecApp:
    """The Faust app with its store, encoder and agents; ``start``/``stop`` own the resources."""

    def __init__(
        self,
        settings: Settings,
        encoder: MultimodalEncoder,
        store: VectorStore | None = None,
    ) -> None:
        settings.check_web_exposure()
        self.settings = settings
        self.encoder = encoder
        self.hybrid = HybridRecommender(
            settings.hybrid_weights,
            content_dim=encoder.fusion.dim,
            learned=settings.hybrid_blend == "learned",
            served_k=settings.top_k,
        )
        # The fused vector, each modality's own (what a learned fusion is refitted from),
        # and the CF item vector (factor and bias, compared by dot product).
        self.store = store or open_vector_store(
            settings.qdrant_url or settings.data_dir / "qdrant",
            {CONTENT: encoder.fusion.dim, **encoder.dims, CF: self.hybrid.cf_vector_size},
            {CF: "dot"},
            collection=settings.collection,
            api_key=settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None,
        )
        self.hybrid.use_store(
            self.store, settings.dense_ranking_max_items, settings.candidates_per_source
        )
        self.metrics = WorkerMetrics(lag=self._lag)
        #: Items users engaged with one after the other: what a learned fusion learns from.
        self.coengaged: deque[tuple[str, str]] = deque(maxlen=MAX_COENGAGED_PAIRS)
        self.pairs_since_fit = 0
        #: (source partition, offset) of interactions whose item changes the broker has
        #: acknowledged: durable in item-updates, so no longer kept to be re-sent.
        self.acked_changes: set[tuple[int, int]] = set()
        self.fusion_path = settings.data_dir / "fusion" / "learned.pt"
        self.poison = PoisonGuard(settings.data_dir)
        self.app = self._create_faust_app()
        self.replica = ItemSideReplica(settings, self.hybrid, self.store, self.metrics)
        self.app.add_dependency(self.replica)
        self._declare()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        try:
            self.store.start()
        except IncompatibleStoreError as error:
            # The store is derived: the replica refills it from item-updates on every start.
            log.warning("%s; starting it afresh", error)
            self.store.reset()
        fusion = self.encoder.fusion
        if isinstance(fusion, LearnedFusion) and self.fusion_path.exists():
            fusion.load(self.fusion_path)
            log.info("loaded fusion %s from %s", fusion.version, self.fusion_path)

    def stop(self) -> None:
        self.store.stop()

    # -- wiring ------------------------------------------------------------------------

    def _create_faust_app(self) -> faust.App:
        s = self.settings
        servers = [f"kafka://{host}" for host in s.effective_bootstrap_servers.split(",")]
        install_kafka_compat(s)  # process-wide; per broker flavour (docs/kafka.md)
        return faust.App(
            s.consumer_group,
            broker=servers,
            broker_credentials=_credentials(s),
            store="memory://",
            datadir=str(s.data_dir / "faust"),
            topic_partitions=s.partitions,
            topic_replication_factor=s.replication_factor,
            consumer_auto_offset_reset="earliest",
            consumer_max_fetch_size=s.consumer_max_fetch_bytes,
            broker_max_poll_records=s.consumer_max_poll_records,
            broker_max_poll_interval=s.consumer_max_poll_interval_s,
            stream_buffer_maxsize=s.stream_buffer_max_events,
            table_standby_replicas=s.standby_replicas,
            consumer_group_instance_id=s.effective_worker_id,
            broker_session_timeout=s.consumer_session_timeout_s,
            broker_heartbeat_interval=min(3.0, s.consumer_session_timeout_s / 3),
            web_host=s.web_host,
            web_bind=s.web_host,
            web_port=s.web_port,
            web_in_thread=False,
            # Faust's own views would serve any user's whole stored state (/table/...).
            web_tables_enabled=False,
            web_graph_enabled=False,
            # One path style, and JSON for every error (streams/web.py).
            web_application_options={"middlewares": web_middlewares()},
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
        # One value per user holds its state and the position it reflects, so a
        # redelivered message is recognised in the same write that applied it.
        self.users = app.Table("users", default=None, partitions=s.partitions)
        self.new_items = NewItemPusher(
            self.hybrid,
            self.users,
            partial(self._send, self.recommendations_topic),
            s.new_item_push_users,
            s.top_k,
            s.model_version,
        )
        app.timer(s.new_item_push_interval_s, name="push-new-items")(self._push_new_items)
        self.read_time_lists = ReadTimeLists(
            self.hybrid, s.top_k, s.model_version, s.http_list_max_age_s
        )
        self.ingest_items = app.agent(self.items_topic, name="ingest-items")(self._ingest_items)
        self.on_interactions = app.agent(self.interactions_topic, name="interactions")(
            self._on_interactions
        )

        install_views(self)
        self.watchdog = DeliveryWatchdog(
            app, {s.topic_items, s.topic_interactions}, s.delivery_stalled_after_s
        )
        self.continuity = OffsetContinuity()
        self.catch_up = CatchUpReader(
            {"bootstrap_servers": s.effective_bootstrap_servers.split(","), **s.aiokafka_options()}
        )
        app.add_dependency(self.catch_up)

        @app.on_partitions_assigned.connect
        async def _forget_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
            # Another worker may have moved these on meanwhile: start from the committed offset.
            self.continuity.forget(assigned)

        app.add_dependency(self.watchdog)

        if isinstance(self.encoder.fusion, LearnedFusion):
            app.timer(s.fusion_refresh_interval_s, name="refresh-fusion")(self._maybe_refit_fusion)

    # -- agents ------------------------------------------------------------------------

    async def _ingest_items(self, stream: faust.StreamT) -> None:
        s = self.settings
        async for events in stream.take_events(s.encode_batch_size, within=s.encode_batch_window_s):
            in_order: list[EventT | CaughtUp] = []
            for event in events:
                in_order += [*await self._skipped_before(event), event]
            await self.ingest_batch(in_order)

    async def _skipped_before(self, event: EventT) -> list[CaughtUp]:
        """Records of the event's partition that never reached the agent before it, read
        directly from the broker, to handle first (``kafka_compat/offset_continuity.py``)."""
        tp, offset = event.message.tp, event.message.offset
        self.watchdog.delivered(tp)
        if not self.continuity.expects(tp):
            thread = self.app.consumer._thread  # Faust has no public committed offset
            try:
                committed = await thread.call_thread(thread._ensure_consumer().committed, tp)
            except KafkaError as error:  # the coordinator moved: check from this record on
                log.warning("committed offset of %s unknown (%s)", tp, error)
                committed = offset
            self.continuity.start(tp, committed or 0)
        skipped = self.continuity.missing(tp, offset)
        if skipped is None:
            return []
        first, end = skipped
        log.warning("offsets %d to %d of %s never reached the agent: read", first, end - 1, tp)
        try:
            return await self.catch_up.read(tp, first, end)
        except (KafkaError, TimeoutError) as error:
            log.error("offsets %d to %d of %s could not be read: %s", first, end - 1, tp, error)
            return []

    async def ingest_batch(self, events: Sequence[EventT | CaughtUp]) -> None:
        """Validate, fetch and encode (in a thread: I/O and torch release the GIL), then
        publish each encoded item to item-updates, from which every worker's replica
        stores it (``streams/replica.py``).

        Every record ends stored or dead-lettered, alone: an item whose media fails, or
        that fails in any unforeseen way, is dead-lettered and the rest of the batch is
        stored. A batch runs under the poison guard (``streams/poison.py``) and a time
        bound; one that overruns it is encoded again one item at a time.
        """
        uploads: dict[str, tuple[ItemUpload, EventT | CaughtUp]] = {}
        for event in events:
            try:
                upload = parse(ItemUpload, event.value, _key(event))
            except Rejected as rejected:
                await self.dead_letter(event, rejected)
                continue
            except Exception as error:  # a parser's own failure: this record alone
                await self.dead_letter(event, _internal(error))
                continue
            uploads[upload.item_id] = (upload, event)  # a later upload in the batch wins
        batch: list[tuple[ItemUpload, EventT | CaughtUp]] = []
        alone: list[tuple[ItemUpload, EventT | CaughtUp]] = []
        for upload, event in uploads.values():
            position = _position(event)
            if self.poison.is_poison(position):
                await self.dead_letter(
                    event,
                    Rejected(
                        "poison",
                        "the worker died while encoding this item alone, after dying on its "
                        "batch: it is not encoded again",
                    ),
                )
                self.poison.dismiss(position)
            elif self.poison.is_suspect(position):
                alone.append((upload, event))
            else:
                batch.append((upload, event))
        started = time.perf_counter()
        stored = 0
        if batch:
            try:
                with self.poison.batch(_position(event) for _, event in batch):
                    results = await self._encode([upload for upload, _ in batch])
                stored += await self._publish_results(batch, results)
            except TimeoutError:
                log.warning(
                    "a batch of %d items overran encode_timeout_s=%g: encoding them one at a time",
                    len(batch),
                    self.settings.encode_timeout_s,
                )
                alone += batch
        for upload, event in alone:
            with self.poison.alone(_position(event)):
                try:
                    results = await self._encode([upload])
                except TimeoutError:
                    await self.dead_letter(
                        event,
                        Rejected(
                            "encode-timeout",
                            f"encoding this item alone took over encode_timeout_s="
                            f"{self.settings.encode_timeout_s:g}",
                        ),
                    )
                    continue
            stored += await self._publish_results([(upload, event)], results)
        if not batch and not alone:
            return
        encoded_s = time.perf_counter() - started
        self.metrics.processed[self.settings.topic_items] += stored
        self.metrics.encode_batch_size.observe(len(batch) + len(alone))
        self.metrics.encode_seconds.observe(encoded_s)
        log.info(
            "items: %d of %d stored in %.3f s (fetch, decode, encode, publish)",
            stored,
            len(events),
            encoded_s,
        )

    async def _encode(self, uploads: list[ItemUpload]) -> list[EncodedItem | MediaError]:
        """The encoder's results for ``uploads``, one per upload, within ``encode_timeout_s``
        (TimeoutError otherwise). If the encoder raises, the uploads are encoded again one
        at a time, so the exception becomes the ``internal-error`` of its own item only."""
        contents = [content_of(upload) for upload in uploads]
        encoding = asyncio.ensure_future(
            in_daemon_thread(partial(self.encoder.encode, contents), self.settings.encode_timeout_s)
        )
        try:
            while True:  # returns as soon as the encoding ends; looks at a stop twice a second
                done, _ = await asyncio.wait({encoding}, timeout=0.5)
                if done:
                    cancel_exit()
                    return encoding.result()
                if self.app.should_stop:
                    exit_after_grace(len(uploads))
        except TimeoutError:
            raise
        except Exception as error:
            if len(uploads) == 1:
                return [internal_error(error)]
            # Found item by item: only the item that fails is lost.
            return [(await self._encode([upload]))[0] for upload in uploads]

    async def _publish_results(
        self,
        batch: list[tuple[ItemUpload, EventT | CaughtUp]],
        results: list[EncodedItem | MediaError],
    ) -> int:
        stored = 0
        for (upload, event), result in zip(batch, results, strict=True):
            if isinstance(result, MediaError):
                await self.dead_letter(event, Rejected(result.reason, result.message))
                continue
            try:
                await self.publish_item(stored_item(upload, result, self.encoder.fusion.version))
            except OversizedOutput as error:
                await self.dead_letter(event, Rejected("output-oversized", str(error)))
                continue
            except Exception as error:
                log.exception("item %s could not be published", clip(upload.item_id))
                await self.dead_letter(event, _internal(error))
                continue
            stored += 1
        return stored

    async def publish_item(self, item: StoredItem) -> None:
        record = ItemRecord(
            item_id=item.item_id,
            vectors={name: pack_vector(vector) for name, vector in item.vectors.items()},
            payload=item.payload,
        )
        await self._send(self.item_updates_topic, item.item_id, record.to_bytes())

    async def _push_new_items(self) -> None:
        await self.new_items.tick(self.replica.items_at_catch_up)

    async def _maybe_refit_fusion(self) -> None:
        if self.pairs_since_fit >= self.settings.fusion_refresh_pairs:
            await self.refit_fusion()

    async def refit_fusion(self) -> dict[str, float]:
        """Fit the learned fusion to the co-engaged pairs, save it, re-fuse the catalog.

        A copy is trained in a thread while the live model keeps fusing new uploads; the
        copy replaces it once saved, and the catalog pass then moves every item, including
        those uploaded meanwhile, to the new version.
        """
        live = self.encoder.fusion
        assert isinstance(live, LearnedFusion)
        pairs = list(self.coengaged)
        self.pairs_since_fit = 0
        ids = sorted({item for pair in pairs for item in pair})
        stored = self.store.get(ids, with_vectors=True)
        index = {item_id: n for n, item_id in enumerate(i for i in ids if i in stored)}
        usable = [(index[a], index[b]) for a, b in pairs if a in index and b in index]
        if not usable:
            return {"pairs": 0}
        items = [_modality_embeddings(stored[item_id]) for item_id in index]
        candidate = copy.deepcopy(live)
        report = await asyncio.to_thread(candidate.fit, items, usable)
        self.fusion_path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.fusion_path.with_suffix(".tmp")
        candidate.save(partial)
        partial.replace(self.fusion_path)  # atomic: a crash never leaves half a model
        self.encoder.fusion = candidate
        # Store calls stay in the event loop (one caller at a time); only fusing is threaded.
        # Re-fused items go through item-updates like new ones, so every replica moves.
        for page in _pages(self.store.scroll(REFUSE_PAGE), REFUSE_PAGE):
            embeddings = [_modality_embeddings(item) for item in page]
            vectors = await asyncio.to_thread(candidate.fuse, embeddings)
            for item, vector in zip(page, vectors, strict=True):
                await self.publish_item(
                    StoredItem(
                        item.item_id,
                        # The CF vector is the replica's to keep, not part of the record.
                        {**{n: v for n, v in item.vectors.items() if n != CF}, CONTENT: vector},
                        {**item.payload, "fusion": candidate.version},
                    )
                )
        log.info("fusion refitted to %s on %d pairs: %s", candidate.version, len(usable), report)
        return report

    async def _on_interactions(self, stream: faust.StreamT) -> None:
        async for delivered in stream.events():
            for event in [*await self._skipped_before(delivered), delivered]:
                await self._interaction(event)

    async def _interaction(self, event: EventT | CaughtUp) -> None:
        # Rank only once the item side holds what the log held at start (after a
        # restart, an item known before would otherwise be "unknown"). Waited for
        # inside the loop: the stream must be iterated from the start, as Faust's
        # subscription and recovery expect.
        await self.replica.caught_up.wait()
        try:
            await self.handle_interaction(event)
        except Rejected as rejected:
            await self.dead_letter(event, rejected)
        except Exception as error:
            # A bug or unreadable stored state must not crash the agent: Faust would
            # restart it on the same event, and the partition would stall for good.
            log.exception("interaction at %s failed", event.message.offset)
            await self.dead_letter(
                event, Rejected("internal-error", f"{type(error).__name__}: {error}")
            )

    async def handle_interaction(self, event: EventT | CaughtUp) -> None:
        interaction: Interaction = parse(Interaction, event.value, _key(event))
        message = event.message
        user_id = interaction.user_id
        entry = self.users.get(user_id) or {}
        offset = message.offset
        # Repeats are recognised by event id, not by offset alone (streams/delivery_book.py).
        book = DeliveryBook(entry)
        decision = book.decide(message.partition, offset, interaction.event_id)
        if decision.verdict == "refuse":
            raise Rejected(decision.reason, decision.error)
        if decision.verdict == "repeat":
            # Redelivered after a restart and already in the state: re-send its item
            # changes in case they were lost with the process (replicas skip repeats).
            pending = entry.get("pending", {}).get(decision.applied_at)
            if pending is not None:
                # Applied here at once unless the log already brought it, so the events
                # after it are ranked on the same item side as before the crash.
                self.replica.apply_local(ItemChanges.model_validate_json(pending))
                await self._send(self.item_updates_topic, user_id, pending.encode())
            latest = entry.get("latest")
            if latest is not None and latest.get("trigger_event_id") == interaction.event_id:
                # Its list may have been lost with the process too: the state reached the
                # changelog, the message did not. Sent again (consumers take the newest).
                resent = Recommendations.model_validate(latest).to_bytes()
                await self._send(self.recommendations_topic, user_id, resent)
            return
        try:
            stored, update_json, recommendations = self._learn(interaction, event, entry, book)
        except Exception:
            # Refused or failed before its state was written: its position is remembered
            # all the same, so a redelivery is this event again, not a reused offset.
            self.users[user_id] = {
                **entry,
                **book.after(message.partition, offset, interaction.event_id),
            }
            raise
        self.users[user_id] = stored
        sent = await self._send(self.item_updates_topic, user_id, update_json.encode())
        sent.add_done_callback(partial(self._on_changes_sent, (message.partition, offset)))
        await self._send(self.recommendations_topic, user_id, recommendations.to_bytes())
        self.metrics.processed[self.settings.topic_interactions] += 1
        if message.timestamp:  # seconds since the epoch, as the broker stamped it
            self.metrics.observe_click_to_recommendation(max(time.time() - message.timestamp, 0))

    def _learn(
        self,
        interaction: Interaction,
        event: EventT | CaughtUp,
        entry: dict[str, Any],
        book: DeliveryBook,
    ) -> tuple[dict[str, Any], str, Recommendations]:
        """Learn a new interaction: the user's entry to store, the item changes (JSON) to
        send to item-updates, and the list."""
        message, user_id = event.message, interaction.user_id
        partition, offset = str(message.partition), message.offset
        state = self.hybrid.load_state(entry.get("state", {}))
        previous = state.history.recent[-1][0] if state.history.recent else None
        weight = signal_weight(interaction.kind.value, interaction.value)
        ts = interaction.ts.timestamp()
        try:
            changes = self.hybrid.learn_one(
                user_id, state, interaction.event_id, interaction.item_id, weight, ts
            )
        except UnknownItemError as error:
            raise Rejected("unknown-item", str(error)) from None
        if changes is None:
            raise Rejected(
                "duplicate", f"event_id {interaction.event_id!r} was already applied; ignored"
            )
        logged_step = self.replica.logged_steps.pop((message.partition, offset), None)
        if logged_step is not None:
            # The event was processed before a crash that lost the user's new state but not
            # its item changes: those are applied; end where that step ended.
            self.hybrid.adopt_steps(state, logged_step)
        update = ItemChanges(
            event_id=interaction.event_id,
            user_id=user_id,
            source_partition=message.partition,
            source_offset=offset,
            changes=changes,
            user_steps=self.hybrid.item_dependent_steps(state),
        )
        try:  # the invariant at every state write: no NaN or infinity is ever stored
            require_finite(changes, "the item changes")
            require_finite(self.hybrid.dump_state(state), "the user state")
        except NonFiniteState as error:
            raise Rejected("non-finite", str(error)) from None
        self.replica.apply_local(update)
        if weight > 0 and previous is not None:
            previous_id = self.hybrid.catalog.ids[previous]
            if previous_id != interaction.item_id:
                self.coengaged.append((previous_id, interaction.item_id))
                self.pairs_since_fit += 1
        recommendations = self.to_message(
            interaction, state, self.hybrid.recommend(user_id, state, self.settings.top_k, ts)
        )
        update_json = update.model_dump_json()
        stored = {
            "state": self.hybrid.dump_state(state),
            **book.after(message.partition, offset, interaction.event_id),
            # Item changes not yet known durable, to re-send if this event is redelivered.
            "pending": {
                **self._not_durable(entry.get("pending", {}), message.topic),
                f"{partition}:{offset}": update_json,
            },
            "latest": recommendations.model_dump(mode="json"),  # what the HTTP API serves
            "latest_catalog": len(self.hybrid),  # whether it is still fresh: fresh_lists.py
        }
        return stored, update_json, recommendations

    def _on_changes_sent(self, source: tuple[int, int], sent: asyncio.Future) -> None:
        if not sent.cancelled() and sent.exception() is None:
            self.acked_changes.add(source)

    def _not_durable(self, pending: dict[str, str], topic: str) -> dict[str, str]:
        """The pending changes neither acknowledged by the broker nor behind an offset the
        group committed. Without the first test a user's pending changes grew with the
        commit lag: under a backlog of MovieLens 100k one user's entry passed the
        producer's 1 MB limit and the worker's producer crashed."""
        committed = {
            tp.partition: offset
            for tp, offset in self.app.monitor.tp_committed_offsets.items()
            if tp.topic == topic
        }
        if len(self.acked_changes) > MAX_ACKED_REMEMBERED:  # those of users not seen since
            self.acked_changes = {(p, o) for p, o in self.acked_changes if o >= committed.get(p, 0)}
        kept = {}
        for key, value in pending.items():
            partition, offset = (int(n) for n in key.split(":"))
            if (partition, offset) in self.acked_changes:
                self.acked_changes.discard((partition, offset))
            elif offset >= committed.get(partition, 0):
                kept[key] = value
        return kept

    def to_message(
        self, trigger: Interaction, state: UserState, ranked: list[Recommendation]
    ) -> Recommendations:
        return Recommendations.of(
            trigger.user_id,
            ranked,
            trigger.event_id,
            state.events_applied,
            self.settings.model_version,
        )

    # -- helpers -----------------------------------------------------------------------

    def _lag(self) -> dict[tuple[str, int], int]:
        """Per source partition: messages on the broker not yet committed by this worker."""
        s, monitor = self.settings, self.app.monitor
        sources = {s.topic_items, s.topic_interactions}
        return {
            **{
                (tp.topic, tp.partition): max(end - monitor.tp_committed_offsets.get(tp, 0), 0)
                for tp, end in monitor.tp_end_offsets.items()
                if tp.topic in sources
            },
            **self.replica.lag(),
        }

    async def dead_letter(self, event: EventT | CaughtUp, rejected: Rejected) -> None:
        """Send the record's dead letter, bounded whatever the record: the raw value cut to
        ``MAX_RAW_CHARS`` with its size stated, the key and the error text cut too."""
        message = event.message
        raw = event.value if isinstance(event.value, bytes) else b""
        key = clip_key(_key(event))
        error = clip(rejected.error, MAX_ERROR_CHARS)
        letter = DeadLetter(
            source_topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=key,
            reason=rejected.reason,
            error=error,
            raw=raw[:MAX_RAW_CHARS].decode("utf-8", errors="replace"),
            raw_bytes=len(raw),
            failed_at=datetime.now(UTC),
        )
        log.warning(
            "dead letter from %s[%s]@%s (%s): %s",
            message.topic,
            message.partition,
            message.offset,
            rejected.reason,
            clip(error),
        )
        await self._send(self.dead_letters_topic, key, letter.to_bytes())
        self.metrics.dead_letters[rejected.reason] += 1

    async def _send(self, topic: faust.TopicT, key: str | None, value: bytes) -> asyncio.Future:
        """Queue a message; the returned future completes when the broker acknowledges it.

        Raises ``OversizedOutput`` before sending a record the producer would refuse (the
        refusal would crash the agent and lose the records batched with it)."""
        encoded_key = key.encode() if key is not None else None
        check_size(encoded_key, value, self.app.conf.producer_max_request_size)
        return await topic.send(key=encoded_key, value=value)


def _position(event: EventT | CaughtUp) -> Position:
    message = event.message
    return message.topic, message.partition, message.offset


def _internal(error: BaseException) -> Rejected:
    return Rejected("internal-error", clip(f"{type(error).__name__}: {error}", MAX_ERROR_CHARS))


def _key(event: EventT | CaughtUp) -> str | None:
    key = event.key
    if key is None:
        return None
    return key.decode("utf-8", errors="replace") if isinstance(key, bytes) else str(key)


def build_item_encoder(settings: Settings) -> MultimodalEncoder:
    """The encoders, fusion strategy and media policy the settings ask for."""
    s = settings
    text, image, audio = _modality_encoders(settings)
    projection = ModalityProjection(
        {e.modality: e.dim for e in (text, image, audio)}, common_dim=text.dim
    )
    fusion: Fusion = {
        "average": lambda: AverageFusion(projection),
        "weighted": lambda: WeightedFusion(projection, s.fusion_weights),
        "learned": lambda: LearnedFusion(projection),
    }[s.fusion]()
    policy = MediaPolicy(
        max_bytes=s.media_max_bytes,
        max_image_pixels=s.media_max_image_pixels,
        max_audio_seconds=s.media_max_audio_seconds,
        max_image_side=s.media_max_image_side,
        min_audio_sample_rate=s.media_min_audio_sample_rate,
        max_audio_sample_rate=s.media_max_audio_sample_rate,
        max_audio_channels=s.media_max_audio_channels,
        allowed_schemes=tuple(s.media_allowed_schemes),
        allowed_dirs=tuple(s.media_allowed_dirs),
        allowed_hosts=tuple(h.lower() for h in s.media_allowed_hosts),
        allow_private_hosts=s.media_allow_private_hosts,
        connect_timeout_s=s.media_connect_timeout_s,
        read_timeout_s=s.media_read_timeout_s,
    )
    return MultimodalEncoder(text, fusion, MediaFetcher(policy), image=image, audio=audio)


def _modality_encoders(settings: Settings) -> tuple[Encoder, Encoder, Encoder]:
    if settings.encoders == "hashing":
        from encoders.hashing import HashingTextEncoder, PixelImageEncoder, SpectrumAudioEncoder

        return HashingTextEncoder(), PixelImageEncoder(), SpectrumAudioEncoder()
    from encoders.audio import LogMelAudioEncoder
    from encoders.image import EfficientNetLite0ImageEncoder
    from encoders.text import MiniLMTextEncoder

    threads = settings.torch_threads
    return (
        MiniLMTextEncoder(threads=threads),
        EfficientNetLite0ImageEncoder(threads=threads),
        LogMelAudioEncoder(threads=threads),
    )


def stored_item(upload: ItemUpload, encoded: EncodedItem, fusion_version: str) -> StoredItem:
    """An encoded upload as the vector store keeps it: the fused vector and each modality's."""
    payload = {
        "title": upload.title,
        "tags": upload.tags,
        "modalities": encoded.modalities,
        "fusion": fusion_version,
        "metadata": upload.metadata,
        "created_at": upload.created_at.isoformat() if upload.created_at else None,
    }
    if encoded.thumbnail:
        payload["thumbnail"] = encoded.thumbnail
    return StoredItem(upload.item_id, {CONTENT: encoded.vector, **encoded.embeddings}, payload)


def content_of(upload: ItemUpload) -> ItemContent:
    """The encoder's view of an upload (the core knows nothing of the wire format)."""

    def source(ref: MediaRef | None) -> MediaSource | None:
        return None if ref is None else MediaSource(uri=ref.uri, data=ref.data, mime=ref.mime)

    return ItemContent(
        upload.title, upload.text, upload.tags, source(upload.image), source(upload.audio)
    )


def _pages(items: Iterator[StoredItem], size: int) -> Iterator[list[StoredItem]]:
    page: list[StoredItem] = []
    for item in items:
        page.append(item)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page


def _modality_embeddings(item: StoredItem) -> Embeddings:
    return {name: vector for name, vector in item.vectors.items() if name != CONTENT}


def _credentials(s: Settings) -> faust.types.auth.CredentialsT | None:
    if s.security_protocol == "PLAINTEXT":
        return None
    context = s.ssl_context()
    if s.security_protocol == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=s.sasl_username,
        password=s.sasl_password.get_secret_value() if s.sasl_password else None,
        mechanism=s.sasl_mechanism or "PLAIN",
        ssl_context=context,
    )
