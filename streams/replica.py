"""Every worker's replica of the item side, folded from the whole item-updates topic.

The item side (content vectors, co-occurrence counts, CF factors and biases, trending)
is what every ranking reads, whichever worker owns the user. Its only writers are the
ingest agents (an ``ItemRecord`` per encoded item) and the user side (an
``ItemChanges`` per interaction, additive). Each worker reads every partition of
item-updates from the beginning, outside the consumer group, and folds it into its own
ranker and vector store, so all replicas converge to the same state whatever the
number of workers: an item's factor is the same sum over the same log on every worker.

A worker applies its own interactions' changes at once (``apply_local``) and skips them
when they come back from the log; a change re-sent after a restart is recognised by its
source offset (a user's changes are keyed by user, so they reach the log in order). The
user steps logged with recent changes let a worker that redoes an event after a crash
end where the original step ended (``logged_steps``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from mode import Service
from pydantic import ValidationError

from models.hybrid import CONTENT, HybridRecommender
from models.vector_store import StoredItem, VectorStore
from streams.admin import partition_ids
from streams.events import ItemChanges, ItemRecord, ItemUpdate, unpack_vector
from streams.metrics import WorkerMetrics
from streams.settings import Settings

log = logging.getLogger(__name__)

#: Logged user steps kept: the events a crash can make a worker redo are the ones since
#: its last commit (seconds), far fewer than this.
MAX_LOGGED_STEPS = 100_000


class ItemSideReplica(Service):
    """Folds item-updates into ``hybrid`` and ``store``; ``caught_up`` once it has read
    what the topic held when the worker started (interactions wait for it)."""

    def __init__(
        self,
        settings: Settings,
        hybrid: HybridRecommender,
        store: VectorStore,
        metrics: WorkerMetrics,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.hybrid = hybrid
        self.store = store
        self.metrics = metrics
        self.caught_up = asyncio.Event()
        #: Per user: the highest source offset whose changes were read from the log.
        self.log_offsets: dict[str, int] = {}
        #: (source partition, offset) of changes applied locally, not yet read back.
        self.applied_locally: set[tuple[int, int]] = set()
        #: The user steps of the latest changes read from the log, by source (partition,
        #: offset): a worker redoing one of those events after a crash adopts its step.
        self.logged_steps: OrderedDict[tuple[int, int], dict[str, Any]] = OrderedDict()
        self.positions: dict[int, int] = {}
        self.end_offsets: dict[int, int] = {}
        #: Where the log ended when the worker started: caught up once read to there.
        self._target: dict[int, int] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    def apply_local(self, message: ItemChanges) -> None:
        """Apply this worker's own interaction at once (the next ranking must see it),
        unless the log already brought it (a change re-sent after a restart)."""
        key = (message.source_partition, message.source_offset)
        if key in self.applied_locally or message.source_offset <= self.log_offsets.get(
            message.user_id, -1
        ):
            return
        self.hybrid.apply(message.changes)
        self.applied_locally.add(key)

    @property
    def behind(self) -> int:
        """Records on item-updates this replica has not read yet (as of its last fetch)."""
        return sum(self.lag().values())

    def lag(self) -> dict[tuple[str, int], int]:
        topic = self.settings.topic_item_updates
        return {
            (topic, p): max(end - self.positions.get(p, 0), 0)
            for p, end in self.end_offsets.items()
        }

    async def on_start(self) -> None:
        s = self.settings
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=s.effective_bootstrap_servers.split(","),
            client_id=f"{s.consumer_group}-item-side-replica",
            group_id=None,  # every worker reads every partition
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=s.consumer_max_fetch_bytes,
            **s.aiokafka_options(),
        )
        await self._consumer.start()
        partitions: set[int] | None = None
        while not partitions:  # the topic is created before workers start; metadata may lag
            partitions = await partition_ids(s, s.topic_item_updates)
            if not partitions:
                await asyncio.sleep(0.5)
        tps = [TopicPartition(s.topic_item_updates, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        target = await self._consumer.end_offsets(tps)
        self.end_offsets = {tp.partition: offset for tp, offset in target.items()}
        self._target = dict(self.end_offsets)
        self._check_caught_up()
        log.info("item-side replica: reading %s, %d records to catch up", tps, sum(target.values()))

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        self.publish_cf()  # the store is stopped after the app: the last batch gets in

    @Service.task
    async def _fold_forever(self) -> None:
        while not self.should_stop:
            if self._consumer is None:
                await asyncio.sleep(0.1)
                continue
            batches = await self._consumer.getmany(timeout_ms=500, max_records=500)
            for tp, messages in batches.items():
                self.fold([message.value for message in messages])
                if messages:
                    self.positions[tp.partition] = messages[-1].offset + 1
            for tp in self._consumer.assignment():
                highwater = self._consumer.highwater(tp)
                if highwater is not None:
                    self.end_offsets[tp.partition] = highwater
            if batches:
                self._check_caught_up()

    @Service.task
    async def _publish_cf_forever(self) -> None:
        """Write changed CF item vectors to the store in micro-batches (what the candidate
        stage's ``cf`` queries read); the ranking itself reads the in-memory factors."""
        while not self.should_stop:
            await self.sleep(self.settings.cf_publish_interval_s)
            self.publish_cf()

    def publish_cf(self) -> None:
        published = self.hybrid.publish_cf()
        if published:
            self.metrics.cf_vectors_published += published

    def fold(self, values: list[bytes | None]) -> None:
        """Apply records of one partition, in order (items are stored in batches)."""
        records: list[ItemRecord] = []
        for value in values:
            update = self._parse(value)
            if isinstance(update, ItemRecord):
                records.append(update)
            elif update is not None:
                if records:  # keep the log's order: items before the changes after them
                    self._store_items(records)
                    records = []
                self._fold_changes(update)
        if records:
            self._store_items(records)

    def _parse(self, value: bytes | None) -> ItemRecord | ItemChanges | None:
        try:
            return ItemUpdate.validate_json(value or b"")
        except ValidationError as error:
            # Only workers write this topic: such a record comes from an older streamrec
            # (whose item signals the item side can no longer use) or from a bug.
            log.error("item-updates record skipped, not an ItemRecord or ItemChanges: %s", error)
            self.metrics.dead_letters["item-update"] += 1
            return None

    def _fold_changes(self, message: ItemChanges) -> None:
        key = (message.source_partition, message.source_offset)
        if message.source_offset <= self.log_offsets.get(message.user_id, -1):
            return  # re-sent after a restart: already folded
        self.log_offsets[message.user_id] = message.source_offset
        if key in self.applied_locally:
            self.applied_locally.discard(key)
            return
        self.logged_steps[key] = message.user_steps
        while len(self.logged_steps) > MAX_LOGGED_STEPS:
            self.logged_steps.popitem(last=False)
        self.hybrid.apply(message.changes)
        self.metrics.processed[self.settings.topic_item_updates] += 1

    def _store_items(self, records: list[ItemRecord]) -> None:
        latest = {record.item_id: record for record in records}  # a later upload wins
        items = [
            StoredItem(
                r.item_id,
                self.hybrid.with_cf_vector(
                    r.item_id, {name: unpack_vector(text) for name, text in r.vectors.items()}
                ),
                r.payload,
            )
            for r in latest.values()
        ]
        self.store.upsert(items)
        for item in items:
            title = str(item.payload.get("title", ""))
            self.hybrid.add_item(item.item_id, title, item.vectors.get(CONTENT))
        self.metrics.processed[self.settings.topic_item_updates] += len(records)

    def _check_caught_up(self) -> None:
        if self._target is None or self.caught_up.is_set():
            return
        if all(self.positions.get(p, 0) >= end for p, end in self._target.items()):
            log.info("item-side replica caught up: %d items", len(self.hybrid))
            self.caught_up.set()
