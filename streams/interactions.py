"""One interaction in: the user's state learned and stored, the item changes and the
list sent, each event applied once however often it is delivered.

A plain class: the users table is any mutable mapping and the output goes through the
``Outbox``, so tests drive it without Faust or a broker (``tests/unit/test_redelivery.py``).

A user's entry (one table value) holds the user's state, the positions and event ids
already applied (``streams/delivery_book.py``), the item changes not yet known durable
(re-sent if the event is redelivered), and the latest list, which the HTTP API serves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, MutableMapping
from functools import partial
from typing import Any, Protocol

from models.hybrid import UNREADABLE_STATE, HybridRecommender, UnknownItemError
from models.packed import NonFiniteError
from models.signals import signal_weight
from models.sources.changes import InvalidChange
from streams.bounds import OversizedOutput, clip, require_finite
from streams.delivery_book import POSITION, DeliveryBook
from streams.events import Interaction, ItemChanges, Recommendations
from streams.metrics import WorkerMetrics, click_latency
from streams.outbox import Outbox
from streams.records import Record, Rejected, internal, parse, record_key
from streams.settings import Settings
from streams.user_entry import fitted

log = logging.getLogger(__name__)

#: Acknowledged item changes remembered before those already committed are forgotten.
MAX_ACKED_REMEMBERED = 100_000


class LocalItemSide(Protocol):
    """What the handler needs of the item-side replica (``streams/replica.py``)."""

    #: The user steps of changes read from the log, by source (partition, offset).
    logged_steps: MutableMapping[tuple[int, int], tuple[str, dict[str, Any]]]

    def apply_local(self, message: ItemChanges) -> None: ...


class AppliedHere(Exception):
    """An event refused after its item changes were applied to this worker's item side
    (its list or entry too large, a failure while ranking): the changes are sent all the
    same, so every replica folds what this one did."""

    def __init__(self, refusal: Exception, update: bytes) -> None:
        super().__init__(str(refusal))
        self.refusal, self.update = refusal, update


class InteractionHandler:
    """Applies interaction records to the users table and sends what follows from them."""

    def __init__(
        self,
        settings: Settings,
        hybrid: HybridRecommender,
        users: MutableMapping[str, Any],
        item_side: LocalItemSide,
        outbox: Outbox,
        committed: Callable[[str], Mapping[int, int]],
        metrics: WorkerMetrics,
        on_engaged: Callable[[str, str], None] = lambda previous, item: None,
    ) -> None:
        self.settings = settings
        self.hybrid = hybrid
        self.users = users
        self.item_side = item_side
        self.outbox = outbox
        #: The offsets the group committed on a topic, by partition.
        self.committed = committed
        self.metrics = metrics
        #: Told of each pair of items a user engaged with one after the other.
        self.on_engaged = on_engaged
        #: (source partition, offset) of interactions whose item changes the broker has
        #: acknowledged: durable in item-updates, so no longer kept to be re-sent.
        self.acked_changes: set[tuple[int, int]] = set()

    async def process(self, record: Record) -> None:
        """Handle the record, or dead-letter it: never raises (a raise would make Faust
        restart the agent on the same record, and the partition would stall for good)."""
        try:
            await self.handle(record)
        except Rejected as rejected:
            await self.outbox.dead_letter(record, rejected)
        except Exception as error:  # a bug or unreadable stored state: this record alone
            log.exception("interaction at %s failed", record.message.offset)
            await self.outbox.dead_letter(record, internal(error))

    async def handle(self, record: Record) -> None:
        """Apply a new interaction, or re-send what a repeat may have lost; raises
        ``Rejected`` for a record that cannot be applied."""
        interaction: Interaction = parse(Interaction, record.value, record_key(record))
        message = record.message
        user_id = interaction.user_id
        entry, book = self._entry(user_id)
        offset = message.offset
        # Repeats are recognised by event id, not by offset alone (streams/delivery_book.py).
        decision = book.decide(message.partition, offset, interaction.event_id)
        if decision.verdict == "refuse":
            raise Rejected(decision.reason, decision.error)
        if decision.verdict == "repeat":
            await self._resend(interaction, entry, decision.applied_at)
            return
        try:
            stored, update, recommendations = self._learn(interaction, record, entry, book)
        except Exception as error:
            # Refused or failed before its state was written: its position is remembered
            # all the same, so a redelivery is this event again, not a reused offset.
            self.users[user_id], _ = fitted(
                user_id, {**entry, **book.after(message.partition, offset, interaction.event_id)}
            )
            if not isinstance(error, AppliedHere):
                raise
            await self.outbox.send(self.settings.topic_item_updates, user_id, error.update)
            raise error.refusal from None
        self.users[user_id] = stored
        s = self.settings
        sent = await self.outbox.send(s.topic_item_updates, user_id, update)
        sent.add_done_callback(partial(self._on_changes_sent, (message.partition, offset)))
        await self.outbox.send(s.topic_recommendations, user_id, recommendations)
        self.metrics.processed[s.topic_interactions] += 1
        # From the broker's timestamp (seconds since the epoch), unless the producer's
        # timestamp cannot be a latency (-1, 1970, the year 2100).
        latency = click_latency(message.timestamp, time.time())
        if latency is not None:
            self.metrics.observe_click_to_recommendation(latency)

    def _entry(self, user_id: str) -> tuple[dict[str, Any], DeliveryBook]:
        """The user's stored entry and its delivery book; an entry that cannot be read
        (not written by this version: a crafted or corrupted changelog record) is
        replaced by none, so the user starts afresh instead of losing every event."""
        entry = self.users.get(user_id)
        if entry is None:
            return {}, DeliveryBook({})
        try:
            parts = [entry, entry.get("state", {}), entry.get("pending", {}), entry.get("latest")]
            if not all(isinstance(part, dict) for part in parts if part is not None):
                raise TypeError("not a user entry")
            if not all(
                isinstance(key, str) and POSITION.fullmatch(key) and isinstance(changes, str)
                for key, changes in entry.get("pending", {}).items()
            ):
                raise ValueError("pending: not item changes by 'partition:offset'")
            return entry, DeliveryBook(entry)
        except (TypeError, ValueError, AttributeError) as error:
            self._unreadable(user_id, "entry", error)
            return {}, DeliveryBook({})

    def _unreadable(self, user_id: str, what: str, error: Exception) -> None:
        log.error(
            "user %s: stored %s unreadable, starting afresh: %s", clip(user_id), what, clip(error)
        )

    async def _resend(
        self, interaction: Interaction, entry: dict[str, Any], applied_at: str | None
    ) -> None:
        """Redelivered after a restart and already in the state: re-send its item changes
        in case they were lost with the process (replicas skip repeats)."""
        user_id = interaction.user_id
        pending = entry.get("pending", {}).get(applied_at)
        changes = None if pending is None else self._readable_pending(user_id, applied_at, pending)
        if changes is not None:
            # Applied here at once unless the log already brought it, so the events after
            # it are ranked on the same item side as before the crash.
            self.item_side.apply_local(changes)
            await self.outbox.send(self.settings.topic_item_updates, user_id, pending.encode())
        latest = entry.get("latest")
        if latest is not None and latest.get("trigger_event_id") == interaction.event_id:
            # Its list may have been lost with the process too: the state reached the
            # changelog, the message did not. Sent again (consumers take the newest).
            resent = Recommendations.model_validate(latest).to_bytes()
            await self.outbox.send(self.settings.topic_recommendations, user_id, resent)

    def _readable_pending(self, user_id: str, at: str, pending: str) -> ItemChanges | None:
        """The stored changes of the event at ``at``, or None (said) where they are not
        what this worker wrote for it: the table's changelog can be written by anyone who
        can write the cluster, and these changes skip the checks of the log's records."""
        try:
            changes = ItemChanges.model_validate_json(pending)
            if (
                changes.user_id != user_id
                or f"{changes.source_partition}:{changes.source_offset}" != at
            ):
                raise ValueError(f"changes of another event ({changes.user_id!r})")
            self.hybrid.check_changes(changes.changes, changes.user_steps)
        except (ValueError, TypeError, LookupError, OverflowError) as error:
            log.error(
                "user %s: stored changes at %s unreadable, not applied or re-sent: %s",
                clip(user_id),
                at,
                clip(error),
            )
            return None
        return changes

    def _learn(
        self,
        interaction: Interaction,
        record: Record,
        entry: dict[str, Any],
        book: DeliveryBook,
    ) -> tuple[dict[str, Any], bytes, bytes]:
        """Learn a new interaction: the user's entry to store, and the item changes and the
        list to send, each within the producer's limit (checked before anything is stored:
        an oversized list sent after its state was written left the event both applied
        and dead-lettered). A refusal after the changes were applied here raises
        ``AppliedHere``."""
        message, user_id = record.message, interaction.user_id
        partition, offset = str(message.partition), message.offset
        try:
            state = self.hybrid.load_state(entry.get("state", {}))
        except UNREADABLE_STATE as error:
            self._unreadable(user_id, "state", error)
            state = self.hybrid.load_state({})
        previous = state.history.recent[-1][0] if state.history.recent else None
        weight = signal_weight(interaction.kind.value, interaction.value)
        ts = interaction.ts.timestamp()
        try:
            changes = self.hybrid.learn_one(
                user_id, state, interaction.event_id, interaction.item_id, weight, ts
            )
        except UnknownItemError as error:
            raise Rejected("unknown-item", str(error)) from None
        except NonFiniteError as error:  # a vector of the changes, refused as it was packed
            raise Rejected("non-finite", str(error)) from None
        if changes is None:
            raise Rejected(
                "duplicate", f"event_id {interaction.event_id!r} was already applied; ignored"
            )
        logged = self.item_side.logged_steps.pop((message.partition, offset), None)
        if logged is not None and logged[0] == user_id:
            # The event was processed before a crash that lost the user's new state but not
            # its item changes: those are applied; end where that step ended.
            self.hybrid.adopt_steps(state, logged[1])
        try:  # the invariant at every state write: no NaN or infinity is ever stored
            update = ItemChanges(
                event_id=interaction.event_id,
                user_id=user_id,
                source_partition=message.partition,
                source_offset=offset,
                changes=changes,
                user_steps=self.hybrid.item_dependent_steps(state),
            )
            stored_state = self.hybrid.dump_state(state)
            require_finite(changes, "the item changes")
            require_finite(stored_state, "the user state")
        except NonFiniteError as error:  # NonFiniteState, or a vector refused as it was packed
            raise Rejected("non-finite", str(error)) from None
        try:  # as every replica checks it: one that refuses what this one applies differs
            self.hybrid.check_changes(changes, update.user_steps)
        except InvalidChange as error:
            raise Rejected("invalid-changes", str(error)) from None
        key, s, check = user_id.encode(), self.settings, self.outbox.check
        update_json = update.model_dump_json()
        update_bytes = update_json.encode()
        try:
            check(s.topic_item_updates, key, update_bytes, "the item changes")
        except OversizedOutput as error:
            raise Rejected("output-oversized", str(error)) from None
        self.item_side.apply_local(update)
        try:
            if weight > 0 and previous is not None:
                self.on_engaged(self.hybrid.catalog.ids[previous], interaction.item_id)
            ranked = self.hybrid.recommend(user_id, state, s.top_k, ts)
            recommendations = Recommendations.of(
                user_id, ranked, interaction.event_id, state.events_applied, s.model_version
            )
            stored, size = fitted(
                user_id,
                {
                    "state": stored_state,
                    **book.after(message.partition, offset, interaction.event_id),
                    # Item changes not yet known durable, to re-send if this event is
                    # redelivered.
                    "pending": {
                        **self.not_durable(entry.get("pending", {}), message.topic),
                        f"{partition}:{offset}": update_json,
                    },
                    "latest": recommendations.model_dump(mode="json"),  # the HTTP API's
                    "latest_catalog": len(self.hybrid),  # still fresh? fresh_lists.py
                },
            )
            list_bytes = recommendations.to_bytes()
            try:
                check(s.topic_recommendations, key, list_bytes, "the list")
                # The entry as the table writes it (its remembered ids cut to their shares).
                check(s.users_changelog, None, size, "the user's table entry")
            except OversizedOutput as error:
                raise Rejected("output-oversized", str(error)) from None
        except Exception as refusal:
            raise AppliedHere(refusal, update_bytes) from refusal
        return stored, update_bytes, list_bytes

    def _on_changes_sent(self, source: tuple[int, int], sent: asyncio.Future) -> None:
        if not sent.cancelled() and sent.exception() is None:
            self.acked_changes.add(source)

    def not_durable(self, pending: dict[str, str], topic: str) -> dict[str, str]:
        """The pending changes neither acknowledged by the broker nor behind an offset the
        group committed. Without the first test a user's pending changes grew with the
        commit lag: under a backlog of MovieLens 100k one user's entry passed the
        producer's 1 MB limit and the worker's producer crashed."""
        committed = self.committed(topic)
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
