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

Restarts read only the tail: every ``item_checkpoint_interval_s`` and at stop, the
replica writes a snapshot of the item side (``models/item_snapshot.py``) with the
item-updates offsets it reflects and the bookkeeping above (changes applied locally and
not yet read back, per-user source offsets, recent logged steps). A start loads it,
seeks each partition to its offset and reads from there. A snapshot that cannot be used
(unreadable, another format, other sources, a vector store that lost items, another
partition count) is ignored with a warning: the replica reads from the beginning.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from mode import Service
from pydantic import ValidationError

from models import item_snapshot
from models.hybrid import CONTENT, HybridRecommender
from models.packed import FLOAT32, unpack
from models.sources.changes import InvalidChange
from models.vector_store import StoredItem, StoreFullError, VectorStore
from streams.admin import partition_ids
from streams.bounds import clip
from streams.encoding import modality_embeddings
from streams.events import ItemChanges, ItemRecord, ItemUpdate
from streams.metrics import WorkerMetrics
from streams.settings import Settings

log = logging.getLogger(__name__)

#: Logged user steps kept: the events a crash can make a worker redo are the ones since
#: its last commit (seconds), far fewer than this.
MAX_LOGGED_STEPS = 100_000
#: Logged steps a snapshot keeps (the newest): a crash's redo window is seconds of events.
SNAPSHOT_LOGGED_STEPS = 1_000
#: How often the vector store's upkeep runs (a flush of the writes since, and a look at a
#: running index build, or whether one is due: a count of points).
STORE_UPKEEP_INTERVAL_S = 5.0
#: Between two steps of upkeep that has more to do (a built index catching up with the
#: writes made during its build): clicks are handled between the steps.
STORE_UPKEEP_STEP_S = 0.05


def snapshot_path(settings: Settings) -> Path:
    return settings.data_dir / "item-side" / "snapshot.npz"


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
        #: Per user and source partition: the highest source offset whose changes were
        #: read from the log. Per partition, as offsets are: a user's events can come from
        #: two (keyless records, partitions added), and a later event's lower offset on the
        #: other partition dropped its changes on every replica.
        self.log_offsets: dict[tuple[str, int], int] = {}
        #: (source partition, offset) of changes applied locally, not yet read back.
        #: With the user and event id they are of: another record at that position (a
        #: crafted one, or a recreated topic's) is not taken for this worker's own.
        self.applied_locally: dict[tuple[int, int], tuple[str, str]] = {}
        #: The user and their steps of the latest changes read from the log, by source
        #: (partition, offset): a worker redoing one of those events after a crash adopts
        #: the step if the event is that user's (another one's, at an offset reused by a
        #: recreated topic or named by a crafted record, must not take it).
        self.logged_steps: OrderedDict[tuple[int, int], tuple[str, dict[str, Any]]] = OrderedDict()
        self.positions: dict[int, int] = {}
        self.end_offsets: dict[int, int] = {}
        #: Where the log ended when the worker started: caught up once read to there.
        self._target: dict[int, int] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        #: Records read from item-updates before ``caught_up`` (what a start cost).
        self.read_at_start = 0
        #: Whether the store's disk is under its reserve (the fold waits).
        self.waiting_for_disk = False
        #: Items read while the store had no room for them, by id, written once it has.
        self._unstored: dict[str, StoredItem] = {}
        self._said_no_room = -math.inf
        #: Items the catalog held when the replica caught up (those after it are new).
        self.items_at_catch_up: int | None = None
        #: Keys applied locally before the snapshot this start loaded: their logged steps
        #: are kept when they are read back, for events redone after a crash.
        self._restored_locally: set[tuple[int, int]] = set()
        #: ``positions`` as of the latest snapshot written (none newer to take before that).
        self._snapshot_positions: dict[int, int] | None = None
        self._checkpoint_lock = asyncio.Lock()

    def apply_local(self, message: ItemChanges) -> None:
        """Apply this worker's own interaction at once (the next ranking must see it),
        unless the log already brought it (a change re-sent after a restart)."""
        key, mine = (message.source_partition, message.source_offset), _of(message)
        folded = self.log_offsets.get((message.user_id, message.source_partition), -1)
        if self.applied_locally.get(key) == mine or message.source_offset <= folded:
            return
        self.hybrid.apply(message.changes)
        self.applied_locally[key] = mine

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
        log.info("item-side replica: starting (snapshot: %s)", s.item_checkpoint_interval_s > 0)
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
        target = await self._consumer.end_offsets(tps)
        self.end_offsets = {tp.partition: offset for tp, offset in target.items()}
        start = self._load_snapshot(self.end_offsets) if s.item_checkpoint_interval_s > 0 else None
        if start is None:
            await self._consumer.seek_to_beginning(*tps)
            start = {tp.partition: 0 for tp in tps}
        else:
            for tp in tps:
                self._consumer.seek(tp, start[tp.partition])
        self.positions = dict(start)
        self._snapshot_positions = dict(start)
        self._target = dict(self.end_offsets)
        self._check_caught_up()
        log.info(
            "item-side replica: reading %s from %s, %d records to catch up",
            tps,
            start,
            sum(max(end - start[p], 0) for p, end in self.end_offsets.items()),
        )

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        self.publish_cf()  # the store is stopped after the app: the last batch gets in
        await self.checkpoint()

    @Service.task
    async def _fold_forever(self) -> None:
        while not self.should_stop:
            if self._consumer is None:
                await asyncio.sleep(0.1)
                continue
            if not self._store_has_room():
                await self.sleep(1.0)  # the records wait on the log; lists are still served
                continue
            self._store_unstored()
            batches = await self._consumer.getmany(timeout_ms=500, max_records=500)
            await self.fold_batches(batches)
            for tp in self._consumer.assignment():
                highwater = self._consumer.highwater(tp)
                if highwater is not None:
                    self.end_offsets[tp.partition] = highwater
            if batches:
                self._check_caught_up()

    async def fold_batches(self, batches: Mapping[TopicPartition, Sequence[Any]]) -> None:
        """Fold what one fetch read, partition by partition, and move ``positions`` past it;
        after the snapshot being written, if one is (it reads the items' vectors in place)."""
        async with self._checkpoint_lock:
            for tp, messages in batches.items():
                self.fold([message.value for message in messages])
                if messages:
                    self.positions[tp.partition] = messages[-1].offset + 1
                    if not self.caught_up.is_set() and self._target is not None:
                        end = self._target.get(tp.partition, 0)
                        self.read_at_start += sum(1 for m in messages if m.offset < end)

    @Service.task
    async def _publish_cf_forever(self) -> None:
        """Write changed CF item vectors to the store in micro-batches (what the candidate
        stage's ``cf`` queries read); the ranking itself reads the in-memory factors."""
        while not self.should_stop:
            await self.sleep(self.settings.cf_publish_interval_s)
            self.publish_cf()

    @Service.task
    async def _maintain_store_forever(self) -> None:
        """The store's upkeep: the embedded one swaps in or starts an index build."""
        more = False
        while not self.should_stop:
            await self.sleep(STORE_UPKEEP_STEP_S if more else STORE_UPKEEP_INTERVAL_S)
            try:
                more = self.store.maintain()
            except Exception:  # the shard keeps serving unindexed; tried again next time
                more = False
                log.exception("vector store upkeep failed")

    @Service.task
    async def _checkpoint_forever(self) -> None:
        interval = self.settings.item_checkpoint_interval_s
        if interval <= 0:
            return
        while not self.should_stop:
            await self.sleep(interval)
            if self.caught_up.is_set() and not self.should_stop:
                await self.checkpoint()

    async def checkpoint(self) -> int:
        """Write a snapshot of the item side and the offsets it reflects, unless nothing
        was read since the last one or checkpoints are off; the bytes written."""
        if (
            self.settings.item_checkpoint_interval_s <= 0
            or not self.caught_up.is_set()
            or self.positions == self._snapshot_positions
        ):
            return 0
        async with self._checkpoint_lock:
            positions = dict(self.positions)
            copying = time.perf_counter()
            try:
                # Taken in one go on the event loop, between two folds: the arrays, the
                # offsets and the bookkeeping describe the same moment. The fold, the only
                # writer of items, waits on the lock until the file is written, so the
                # items' vectors are written in place; what clicks change is copied.
                snapshot = item_snapshot.capture(
                    self.hybrid, self._bookkeeping(positions), uploads_held=True
                )
            except item_snapshot.SnapshotError as error:
                log.warning("item side not checkpointed: %s", error)
                return 0
            started = time.perf_counter()
            copied_s = started - copying  # the loop handles no click meanwhile
            path = snapshot_path(self.settings)
            try:
                size = await asyncio.get_running_loop().run_in_executor(
                    None, item_snapshot.write, snapshot, path
                )
            except OSError as error:
                log.warning("item-side snapshot not written to %s: %s", path, error)
                return 0
            self._snapshot_positions = positions
            log.info(
                "item-side snapshot: %d items at offsets %s, copied in %.2f s, %.1f MB written "
                "in %.2f s",
                len(snapshot.header["ids"]),
                positions,
                copied_s,
                size / 1e6,
                time.perf_counter() - started,
            )
            return size

    def _bookkeeping(self, positions: dict[int, int]) -> dict[str, Any]:
        steps = list(self.logged_steps.items())[-SNAPSHOT_LOGGED_STEPS:]
        return {
            "topic": self.settings.topic_item_updates,
            "positions": {str(p): offset for p, offset in positions.items()},
            "log_offsets": [[user, p, offset] for (user, p), offset in self.log_offsets.items()],
            "applied_locally": [[p, o, *of] for (p, o), of in sorted(self.applied_locally.items())],
            "logged_steps": [[p, o, user, step] for (p, o), (user, step) in steps],
        }

    def _load_snapshot(self, end_offsets: dict[int, int]) -> dict[int, int] | None:
        """Restore the latest snapshot; the offsets to read from, or None (read all)."""
        path = snapshot_path(self.settings)
        if not path.exists():
            return None
        started = time.perf_counter()
        try:
            snapshot = item_snapshot.read(path)
            extra = snapshot.header["extra"]
            positions = {int(p): int(o) for p, o in extra["positions"].items()}
            if any(offset < 0 for offset in positions.values()):
                raise item_snapshot.SnapshotError(f"snapshot offsets {positions} below 0")
            if extra["topic"] != self.settings.topic_item_updates:
                raise item_snapshot.SnapshotError(f"snapshot of topic {extra['topic']!r}")
            if set(positions) != set(end_offsets):
                raise item_snapshot.SnapshotError(
                    f"snapshot of partitions {sorted(positions)}, "
                    f"the topic has {sorted(end_offsets)}"
                )
            beyond = {p: o for p, o in positions.items() if o > end_offsets[p]}
            if beyond:
                # The log lost records the snapshot reflects (a broker that loses
                # acknowledged writes, or a recreated topic): only a rebuild is consistent.
                raise item_snapshot.SnapshotError(f"snapshot offsets {beyond} past the log's end")
            recorded = len(snapshot.arrays["recorded"])
            if self.store.count() < recorded:
                raise item_snapshot.SnapshotError(
                    f"the vector store holds {self.store.count()} items, the snapshot {recorded}"
                )
            # The bookkeeping is read before the restore: a bad key must not leave a
            # half-restored item side behind.
            if not isinstance(extra["log_offsets"], list):  # by user alone: an earlier version
                raise item_snapshot.SnapshotError("snapshot offsets not by source partition")
            log_offsets = {(str(u), int(p)): int(o) for u, p, o in extra["log_offsets"]}
            applied_locally = {
                (int(p), int(o)): (str(user), str(event))
                for p, o, user, event in extra["applied_locally"]
            }
            logged_steps = OrderedDict(
                ((int(p), int(o)), (str(u), step)) for p, o, u, step in extra["logged_steps"]
            )
            for _, step in logged_steps.values():  # adopted as they are by a redone event
                self.hybrid.check_changes({}, step)
            stored = self._stored_unrecorded(snapshot)
            item_snapshot.restore(self.hybrid, snapshot)
        except Exception as error:  # any file this start cannot use: a rebuild, not a crash
            log.warning(
                "item-side snapshot ignored, reading item-updates from the beginning: %s",
                clip(error),
            )
            return None
        for item_id in stored:
            self.hybrid.uploaded[self.hybrid.catalog.index(item_id)] = True
        self.log_offsets = log_offsets
        self.applied_locally = applied_locally
        self._restored_locally = set(applied_locally)
        self.logged_steps = logged_steps
        log.info(
            "item-side snapshot loaded: %d items at offsets %s in %.2f s",
            len(self.hybrid),
            positions,
            time.perf_counter() - started,
        )
        return positions

    def _stored_unrecorded(self, snapshot: item_snapshot.ItemSideSnapshot) -> list[str]:
        """The ids of the snapshot's catalog it does not mark uploaded that the store holds.
        The store holds an item only once its upload was folded (CF vectors are written to
        uploaded items only), so they were uploaded: a snapshot marking fewer (a crafted
        one) had every click on them refused ``unknown-item`` until each was uploaded
        again. A genuine snapshot leaves few unmarked: items known only from changes."""
        ids = snapshot.header["ids"]
        marked = {int(i) for i in snapshot.arrays["recorded"]}
        unmarked = [str(item_id) for n, item_id in enumerate(ids) if n not in marked]
        return list(self.store.get(unmarked, with_vectors=False)) if unmarked else []

    def publish_cf(self) -> None:
        if not self._store_has_room():
            return  # the changed vectors stay pending
        try:
            published = self.hybrid.publish_cf()
        except Exception as error:  # pending still: the next round tries them again
            log.warning("CF vectors not written to the vector store: %s", clip(error))
            return
        if published:
            self.metrics.cf_vectors_published += published

    def _store_unstored(self) -> None:
        """Write the items the store refused for want of room (they are in the catalog)."""
        if not self._unstored:
            return
        try:
            self.store.upsert(list(self._unstored.values()))
        except StoreFullError:
            return
        self._unstored.clear()

    def _store_has_room(self) -> bool:
        """Whether the store takes writes now; said at most once a minute while it does not
        (``min_free_disk_mb``: a full disk would kill the embedded engine)."""
        room = self.store.has_room()
        self.waiting_for_disk = not room
        now = time.monotonic()
        if not room and now - self._said_no_room > 60:
            self._said_no_room = now
            log.error(
                "item side paused, nothing is written to the vector store: the disk of "
                "data_dir (%s) has less free space than min_free_disk_mb (%d MB); free space "
                "there or give data_dir a larger disk. Lists are still served; uploads and "
                "CF vectors wait on the log",
                self.settings.data_dir,
                self.settings.min_free_disk_mb,
            )
        return room

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
                try:
                    self._fold_changes(update)
                except Exception:
                    # Checked, yet not applied whole (a bug): said, counted and passed, as
                    # raising would stop the worker on this record at every start.
                    log.exception("item-updates record of event %r failed", update.event_id)
                    self.metrics.dead_letters["item-update"] += 1
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
        last = (message.user_id, message.source_partition)
        if message.source_offset <= self.log_offsets.get(last, -1):
            return  # re-sent after a restart: already folded
        # This worker's own: checked as it was made.
        local = self.applied_locally.get(key) == _of(message)
        if (not local or key in self._restored_locally) and not self._acceptable(message):
            return
        self.log_offsets[last] = message.source_offset
        # Only the steps of sources this worker runs (the others are never checked, and
        # would go unchecked into its snapshots).
        steps = {n: step for n, step in message.user_steps.items() if n in self.hybrid.sources}
        if local:
            del self.applied_locally[key]
            if key in self._restored_locally:
                # Applied before the snapshot by the previous run of this worker: a crash
                # may make this one redo the event.
                self._restored_locally.discard(key)
                self.logged_steps[key] = (message.user_id, steps)
            return
        self.logged_steps[key] = (message.user_id, steps)
        while len(self.logged_steps) > MAX_LOGGED_STEPS:
            self.logged_steps.popitem(last=False)
        self.hybrid.apply(message.changes)
        self.metrics.processed[self.settings.topic_item_updates] += 1

    def _acceptable(self, message: ItemChanges) -> bool:
        """Whether a record's changes can be applied whole; if not, it is skipped, said
        and counted, before it touches anything (``models/sources/changes.py``)."""
        try:
            self.hybrid.check_changes(message.changes, message.user_steps)
        except InvalidChange as error:
            self._skip(f"the changes of event {message.event_id!r}: {error}")
            return False
        except Exception as error:  # a check that cannot even be made refuses the record
            self._skip(
                f"the changes of event {message.event_id!r}: {type(error).__name__}: {error}"
            )
            return False
        return True

    def _vectors(self, record: ItemRecord) -> dict[str, np.ndarray] | None:
        """The record's vectors, or None (said and counted) where one is not a finite
        vector of a size the store has."""
        sizes = self.store.vector_sizes
        try:
            vectors = {
                name: unpack(text, repr(name), FLOAT32) for name, text in record.vectors.items()
            }
            for name, vector in vectors.items():
                if sizes.get(name) != len(vector):
                    raise ValueError(f"{name!r} is not {sizes.get(name)} numbers")
        except ValueError as error:
            self._skip(f"item {record.item_id!r}: vector {error}")
            return None
        return vectors

    def _skip(self, what: str) -> None:
        # Workers write this topic; a record that fails here was crafted or corrupted.
        # Every replica reads it, so it is logged and counted here, not dead-lettered.
        log.error("item-updates record skipped: %s", clip(what))
        self.metrics.dead_letters["item-update"] += 1

    def _store_items(self, records: list[ItemRecord]) -> None:
        # The latest *usable* record of each id, as records applied one at a time would
        # leave it: a bad re-upload must not hide the good record before it in the batch.
        latest: dict[str, StoredItem] = {}
        for record in records:
            vectors = self._vectors(record)
            if vectors is not None:
                id_ = record.item_id
                latest[id_] = StoredItem(
                    id_, self.hybrid.with_cf_vector(id_, vectors), record.payload
                )
        items = list(latest.values())
        try:
            self.store.upsert(items)
            for item in items:  # newer than a copy still waiting for room
                self._unstored.pop(item.item_id, None)
        except StoreFullError:  # the disk filled since the fold looked: written once it can
            self._unstored.update((item.item_id, item) for item in items)
        except Exception:  # one point the store refuses must not take the batch with it
            items = [item for item in items if self._upserted(item)]
        for item in items:
            title = str(item.payload.get("title", ""))
            self.hybrid.add_item(
                item.item_id, title, item.vectors.get(CONTENT), modality_embeddings(item)
            )
        self.metrics.processed[self.settings.topic_item_updates] += len(records)

    def _upserted(self, item: StoredItem) -> bool:
        try:
            self.store.upsert([item])
        except StoreFullError:
            self._unstored[item.item_id] = item
        except Exception as error:
            self._skip(f"item {item.item_id!r}: the vector store refused it: {error}")
            return False
        else:
            self._unstored.pop(item.item_id, None)
        return True

    def _check_caught_up(self) -> None:
        if self._target is None or self.caught_up.is_set():
            return
        if all(self.positions.get(p, 0) >= end for p, end in self._target.items()):
            log.info(
                "item-side replica caught up: %d items, %d item-updates records read at start",
                len(self.hybrid),
                self.read_at_start,
            )
            self.items_at_catch_up = len(self.hybrid)
            self.caught_up.set()


def _of(message: ItemChanges) -> tuple[str, str]:
    """Whose changes a record holds: its user and event."""
    return message.user_id, message.event_id
