"""The Faust app: topics, the users table and agents, wired to the parts that adapt the
core (models/, encoders/) to Kafka.

Agents only hand records on; each concept is its own module: ``ingestion.py`` (item
uploads), ``interactions.py`` (interactions and their redelivery bookkeeping),
``outbox.py`` (every send, dead letters), ``fusion_refit.py``, ``replica.py`` (the item
side), ``new_items.py`` and ``fresh_lists.py`` (lists without a click), ``web.py`` (the
HTTP API, through the narrow ``WorkerBackend`` this app implements) and
``kafka_compat/`` (what the worker changes in Faust and aiokafka).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faust
from aiokafka.errors import KafkaError
from faust.types import TP, EventT

from encoders.fusion import learned
from encoders.multimodal import MultimodalEncoder
from models.hybrid import CF, CONTENT, HybridRecommender
from models.vector_store import IncompatibleStoreError, VectorStore, open_vector_store
from streams.bounds import PRODUCER_MAX_REQUEST_BYTES, clip
from streams.ease_refit import EaseRefitter
from streams.events import Interaction
from streams.fresh_lists import ReadTimeLists
from streams.fusion_refit import FusionRefitter
from streams.heap import CollectionPauses, freeze_long_lived
from streams.ingestion import ItemIngestion
from streams.interactions import InteractionHandler
from streams.kafka_compat import install as install_kafka_compat
from streams.kafka_compat.delivery_watchdog import DeliveryWatchdog
from streams.kafka_compat.offset_continuity import CatchUpReader, CaughtUp, OffsetContinuity
from streams.kafka_compat.undecodable_batches import SKIPPED
from streams.loop_stalls import LoopStalls
from streams.metrics import WorkerMetrics
from streams.new_items import NewItemPusher
from streams.outbox import Outbox
from streams.poison import PoisonGuard
from streams.replica import ItemSideReplica
from streams.settings import Settings
from streams.users_store import ROCKSDB_OPTIONS, has_room, set_aside_unreadable
from streams.users_table import USERS_TABLE, users_table
from streams.web import install_views, web_middlewares

log = logging.getLogger(__name__)

#: The producer's batch size where every topic written takes more (Faust's default).
PRODUCER_BATCH_BYTES = 16_384


class StreamrecApp:
    """The Faust app with its store, encoder and agents; ``start``/``stop`` own the resources."""

    def __init__(
        self,
        settings: Settings,
        encoder: MultimodalEncoder,
        store: VectorStore | None = None,
        topic_limits: Mapping[str, int] | None = None,
    ) -> None:
        """``topic_limits``: the ``max.message.bytes`` of the topics the worker writes, as
        the broker states them (``streams.admin.message_limits``)."""
        settings.check_web_exposure()
        self.settings = s = settings
        self.topic_limits = dict(topic_limits or {})
        self.encoder = encoder
        self.hybrid = HybridRecommender(
            content_dim=encoder.fusion.dim,
            modality_projection=encoder.fusion.projection.project,
            **s.hybrid_options(),
        )
        # The fused vector, each modality's own (what a learned fusion is refitted from),
        # and the CF item vector (factor and bias, compared by dot product).
        self.store = store or open_vector_store(
            s.qdrant_url or s.data_dir / "qdrant",
            {CONTENT: encoder.fusion.dim, **encoder.dims, CF: self.hybrid.cf_vector_size},
            {CF: "dot"},
            collection=s.collection,
            api_key=s.qdrant_api_key.get_secret_value() if s.qdrant_api_key else None,
            index_after=s.vector_index_after,
            min_free_bytes=s.min_free_disk_mb * 2**20,
        )
        self.hybrid.use_store(self.store, s.dense_ranking_max_items, s.candidates_per_source)
        self.metrics = WorkerMetrics(lag=self._lag)
        self.collection_pauses = CollectionPauses()
        self.loop_stalls = LoopStalls(self.metrics.event_loop_stall)
        self.app = self._create_faust_app()
        self.replica = ItemSideReplica(s, self.hybrid, self.store, self.metrics)
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
        self.fusion.load()
        if self.settings.users_store == "rocksdb":
            set_aside_unreadable(Path(self.app.conf.tabledir), USERS_TABLE)

    def stop(self) -> None:
        self.collection_pauses.uninstall()
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
            store=f"{s.users_store}://",
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
            producer_max_request_size=PRODUCER_MAX_REQUEST_BYTES,
            # The broker applies a topic's max.message.bytes to a whole batch and refuses
            # it, every record in it lost (aiokafka does not split it and retry, as the
            # Java producer does): no batch may pass the smallest limit of a topic written.
            producer_max_batch_size=min([PRODUCER_BATCH_BYTES, *self.topic_limits.values()]),
        )

    def _declare(self) -> None:
        s, app = self.settings, self.app
        raw = {"key_serializer": "raw", "value_serializer": "raw", "partitions": s.partitions}
        topics = {
            name: app.topic(name, **raw)
            for name in (
                s.topic_items,
                s.topic_interactions,
                s.topic_item_updates,
                s.topic_recommendations,
                s.topic_dead_letters,
            )
        }
        self.interactions_topic = topics[s.topic_interactions]
        # One value per user holds its state and the position it reflects, so a
        # redelivered message is recognised in the same write that applied it.
        self.users = users_table(
            app, s.partitions, ROCKSDB_OPTIONS if s.users_store == "rocksdb" else None
        )
        self.outbox = Outbox(
            topics,
            s.topic_dead_letters,
            app.conf.producer_max_request_size,
            self.metrics,
            self.topic_limits,
        )
        self.poison = PoisonGuard(s.data_dir)
        self.ingestion = ItemIngestion(
            s, self.encoder, self.poison, self.outbox, self.metrics, lambda: app.should_stop
        )
        self.fusion = FusionRefitter(
            self.encoder,
            self.store,
            self.ingestion.publish_item,
            s.data_dir / "fusion" / "learned.pt",
            s.fusion_refresh_pairs,
            s.fusion_refresh_interval_s,
            s.fusion_fit_max_pairs,
            s.fusion_fit_epochs,
        )
        self.interactions = InteractionHandler(
            s,
            self.hybrid,
            self.users,
            self.replica,
            self.outbox,
            self._committed,
            self.metrics,
            on_engaged=self.fusion.engaged,
        )
        self.new_items = NewItemPusher(
            self.hybrid,
            self.users,
            lambda key, value: self.outbox.send(s.topic_recommendations, key, value),
            s.new_item_push_users,
            s.top_k,
            s.model_version,
            s.new_item_push_budget_s,
        )
        app.timer(s.new_item_push_interval_s, name="push-new-items")(self._push_new_items)
        self.read_time_lists = ReadTimeLists(
            self.hybrid, s.top_k, s.model_version, s.http_list_max_age_s
        )
        app.agent(topics[s.topic_items], name="ingest-items")(self._ingest_items)
        app.agent(self.interactions_topic, name="interactions")(self._on_interactions)

        token = s.api_token.get_secret_value() if s.api_token is not None else None
        install_views(
            app, self.interactions_topic, self, token, s.topic_items, s.web_max_connections
        )
        self.continuity = OffsetContinuity()
        self.catch_up = CatchUpReader(
            {"bootstrap_servers": s.effective_bootstrap_servers.split(","), **s.aiokafka_options()}
        )
        self.watchdog = DeliveryWatchdog(
            app,
            {s.topic_items, s.topic_interactions},
            s.delivery_stalled_after_s,
            self.catch_up.holds_records,
        )
        app.add_dependency(self.catch_up)

        @app.on_partitions_assigned.connect
        async def _forget_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
            # Another worker may have moved these on meanwhile: start from the committed offset.
            self.continuity.forget(assigned)

        app.add_dependency(self.watchdog)
        app.timer(1.0, name="dead-letter-skipped-batches")(self._dead_letter_skipped_batches)

        if learned(self.encoder.fusion) is not None:
            app.timer(1.0, name="refresh-fusion")(self.fusion.maybe_refit)
        self.ease_refit: EaseRefitter | None = None
        if self.hybrid.ease is not None:
            self.ease_refit = EaseRefitter(self.hybrid.ease)
            app.timer(s.ease_refit_interval_s, name="refit-ease")(self.ease_refit.maybe_refit)
        app.task(self._when_ready)

    # -- agents ------------------------------------------------------------------------

    async def _ingest_items(self, stream: faust.StreamT) -> None:
        s = self.settings
        async for events in stream.take_events(s.encode_batch_size, within=s.encode_batch_window_s):
            in_order: list[EventT | CaughtUp] = []
            for event in events:
                in_order += [*await self._skipped_before(event), event]
            await self.ingestion.ingest_batch(in_order)

    async def _on_interactions(self, stream: faust.StreamT) -> None:
        async for delivered in stream.events():
            for event in [*await self._skipped_before(delivered), delivered]:
                # Rank only once the item side holds what the log held at start (after a
                # restart, an item known before would otherwise be "unknown"). Waited for
                # inside the loop: the stream must be iterated from the start, as Faust's
                # subscription and recovery expect.
                await self.replica.caught_up.wait()
                await self._room_for_users()
                await self.interactions.process(event)

    async def _room_for_users(self) -> None:
        """With the users table on disk, a click waits on the log while data_dir's disk is
        under ``min_free_disk_mb`` (``users_store.has_room``), instead of every click being
        dead-lettered as its entry cannot be written."""
        s = self.settings
        said = -math.inf
        while (
            s.users_store == "rocksdb"
            and not has_room(s.data_dir, s.min_free_disk_mb * 2**20)
            and not self.app.should_stop
        ):
            if time.monotonic() - said > 60:
                said = time.monotonic()
                log.error(
                    "clicks wait: the disk of data_dir (%s) has less free space than "
                    "min_free_disk_mb (%d MB), and the users table is on it; free space there "
                    "or give data_dir a larger disk",
                    s.data_dir,
                    s.min_free_disk_mb,
                )
            await asyncio.sleep(1.0)

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
        try:
            records = await self.catch_up.read(tp, first, end)
        except (KafkaError, TimeoutError) as error:
            log.error("offsets %d to %d of %s could not be read: %s", first, end - 1, tp, error)
            return []
        # A transaction's control records and aborted records leave such gaps too, every
        # transaction: only records that do come back were lost on their way.
        if records:
            log.warning(
                "offsets %d to %d of %s never reached the agent: %d records read",
                first,
                end - 1,
                tp,
                len(records),
            )
        return records

    async def _when_ready(self) -> None:
        """At ready, the heap is frozen and the collector's pauses are counted; then the
        loop's stalls are, until the worker stops."""
        await self.replica.caught_up.wait()
        if self.settings.freeze_heap_at_ready:
            frozen, seconds = freeze_long_lived()
            log.info(
                "%d objects alive at ready kept out of garbage collections (%.2f s, "
                "streams/heap.py)",
                frozen,
                seconds,
            )
        self.collection_pauses.install()  # what clicks may wait for from now on
        await self.loop_stalls.watch()

    async def _push_new_items(self) -> None:
        await self.new_items.tick(self.replica.items_at_catch_up)

    async def _dead_letter_skipped_batches(self) -> None:
        """Batches the consumers skipped undecoded (``kafka_compat/undecodable_batches.py``):
        those of the input topics are dead-lettered; those of the worker's own topics,
        which every replica reads, and any whose letter cannot be sent, are logged."""
        s = self.settings
        for batch in SKIPPED.drain():
            if batch.topic in (s.topic_items, s.topic_interactions):
                try:
                    await self.outbox.dead_letter_skipped(batch)
                    continue
                except Exception as error:  # a timer must not raise: the log keeps it
                    log.warning("a skipped batch's dead letter was not sent: %s", clip(error))
            log.error(
                "offsets %d to %d of %s[%d] could not be decoded and were skipped: %s",
                batch.first,
                batch.end - 1,
                batch.topic,
                batch.partition,
                batch.error,
            )

    def _committed(self, topic: str) -> dict[int, int]:
        """The offsets this worker's group committed on ``topic``, by partition."""
        return {
            tp.partition: offset
            for tp, offset in self.app.monitor.tp_committed_offsets.items()
            if tp.topic == topic
        }

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

    # -- what the HTTP API reads (streams/web.py: WorkerBackend) ------------------------

    def stats(self) -> dict[str, Any]:
        hybrid, metrics, replica = self.hybrid, self.metrics, self.replica
        return {
            "items": self.store.count(),
            "items_outside_vector_index": self.store.unindexed,
            "catalog": len(hybrid),
            "item_updates_behind": replica.behind,
            "item_updates_read": {str(p): n for p, n in replica.positions.items()},
            "item_side_waiting_for_disk": replica.waiting_for_disk,
            "cf_vectors_published": metrics.cf_vectors_published,
            "candidate_stage": hybrid.candidates is not None
            and hybrid.candidates.applies(len(hybrid)),
            "processed": dict(metrics.processed),
            "click_to_recommendation": metrics.latency_percentiles(),
            "dead_letters": dict(metrics.dead_letters),
            "sends_refused": dict(metrics.sends_refused),
            "fusion": self.encoder.fusion.version,
            "lists_ranked_at_read": self.read_time_lists.rankings,
            "ease": self.ease_refit.stats() if self.ease_refit is not None else None,
            # Read from the log: steps of other sources than this worker's, unnamed.
            "blend_steps_unplaced": hybrid.learned.unplaced_steps if hybrid.learned else None,
            "garbage_collection": self.collection_pauses.stats(),
            "event_loop_stalls": self.loop_stalls.stats(),
        }

    def readiness(self) -> tuple[bool, str]:
        app = self.app
        try:
            assigned = app.consumer.assignment()
        except Exception:
            return False, "the consumer has not started"
        if app.rebalancing:
            return False, "the group is rebalancing"
        if not assigned:
            return False, "no partitions assigned to this worker"
        if not app.tables.recovery.completed.is_set():
            return False, "tables are being recovered"
        if not self.replica.caught_up.is_set():
            return False, "the item-side replica is reading item-updates"
        return True, f"{len(assigned)} partitions assigned"

    def list_for(self, user_id: str) -> dict[str, Any] | None:
        entry = self.users.get(user_id)
        if not entry or "latest" not in entry:
            return None
        return self.read_time_lists.serve(user_id, entry)

    def item(self, item_id: str) -> dict[str, Any] | None:
        stored = self.store.get([item_id], with_vectors=False).get(item_id)
        if stored is None:
            return None
        learned = self.hybrid.item_state(item_id) if item_id in self.hybrid else {}
        return {**stored.payload, **learned}

    def catalog_page(self, limit: int) -> list[dict[str, Any]]:
        listed = []
        for stored in self.store.scroll(batch_size=limit, with_vectors=False):
            payload = stored.payload
            listed.append(
                {
                    "item_id": stored.item_id,
                    "title": payload.get("title", ""),
                    "thumbnail": payload.get("thumbnail"),
                }
            )
            if len(listed) == limit:
                break
        return listed

    def knows_item(self, item_id: str) -> bool:
        return self.hybrid.knows(item_id)

    async def submit(self, interaction: Interaction) -> None:
        await self.interactions_topic.send(
            key=interaction.user_id.encode(), value=interaction.model_dump_json().encode()
        )

    def exposition(self) -> bytes:
        return self.metrics.exposition()


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
