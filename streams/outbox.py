"""Everything the worker sends, and dead letters.

Each record is checked against the producer's size limit, and its topic's
``max.message.bytes`` when known (``streams/admin.py: message_limits``), before it is
sent: the producer's refusal would crash the agent and lose the records batched with it,
and the broker's came after the send, logged by Faust and nothing else, the record lost
while its source was committed. A dead letter is bounded whatever the record it reports
(``streams/bounds.py``), and cut further to fit its topic. A record the broker refuses
all the same (the topic's limit lowered under a running worker, a policy) is counted per
topic (``sends_refused``) and logged as an error naming the topic and the fix.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

from streams.bounds import (
    MAX_ERROR_CHARS,
    MAX_QUOTED_CHARS,
    OversizedOutput,
    check_size,
    clip,
    clip_key,
)
from streams.events import MAX_RAW_CHARS, DeadLetter
from streams.kafka_compat.undecodable_batches import SkippedBatch
from streams.metrics import WorkerMetrics
from streams.records import Record, Rejected, record_key

log = logging.getLogger(__name__)

#: The reason of a dead letter for a batch of records the consumer could not decode.
UNDECODABLE_BATCH = "undecodable-batch"


class Outbox:
    """Sends to the worker's output topics by name (``topics``: Faust topics, or anything
    with an awaitable ``send(key=, value=)``); ``topic_limits``: the ``max.message.bytes``
    of the topics it writes, as the broker states them."""

    def __init__(
        self,
        topics: Mapping[str, Any],
        dead_letters_topic: str,
        max_request_bytes: int,
        metrics: WorkerMetrics,
        topic_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.topics = topics
        self.dead_letters_topic = dead_letters_topic
        self.max_request_bytes = max_request_bytes
        self.metrics = metrics
        self.topic_limits = dict(topic_limits or {})
        self._refusals_logged: set[tuple[str, str]] = set()

    def check(self, topic: str, key: bytes | None, value: bytes | int, what: str) -> None:
        """Raise ``OversizedOutput`` if a record of ``value`` (its bytes, or how many there
        will be) under ``key`` would be refused on ``topic``, by the producer or the broker."""
        check_size(key, value, self.max_request_bytes, what, self.topic_limits.get(topic))

    async def send(self, topic: str, key: str | None, value: bytes) -> asyncio.Future:
        """Queue a message; the returned future completes when the broker acknowledges it.

        Raises ``OversizedOutput`` before sending a record the producer or the broker
        would refuse."""
        encoded_key = key.encode() if key is not None else None
        self.check(topic, encoded_key, value, "output record")
        sent = await self.topics[topic].send(key=encoded_key, value=value)
        sent.add_done_callback(partial(self._on_sent, topic))
        return sent

    def _on_sent(self, topic: str, sent: asyncio.Future) -> None:
        if sent.cancelled() or sent.exception() is None:
            return
        error = sent.exception()
        self.metrics.sends_refused[topic] += 1
        kind = type(error).__name__
        if (topic, kind) in self._refusals_logged:  # once per topic and error: not a flood
            return
        self._refusals_logged.add((topic, kind))
        log.error(
            "the broker refused a record for %s (%s; counted in sends_refused, further "
            "ones not logged): it is lost. Check the topic's configs (max.message.bytes, "
            "cleanup.policy) and the worker's ACLs",
            topic,
            clip(f"{kind}: {error}"),
        )

    async def dead_letter(self, record: Record, rejected: Rejected) -> None:
        """Send the record's dead letter, bounded whatever the record: the raw value cut to
        ``MAX_RAW_CHARS`` with its size stated, the key and the error text cut too."""
        message = record.message
        raw = record.value if isinstance(record.value, bytes) else b""
        key = clip_key(record_key(record))
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
        await self._send_letter(letter)
        self.metrics.dead_letters[rejected.reason] += 1

    async def _send_letter(self, letter: DeadLetter) -> None:
        """Send a dead letter; one too large for its topic's ``max.message.bytes`` goes
        without its raw value and with its error cut, and one that still does not fit is
        counted as refused and logged, never raised (a raise out of an agent would
        restart it on the same record, for good)."""
        key = letter.key
        encoded_key = key.encode() if key is not None else None
        value = letter.to_bytes()
        try:
            self.check(self.dead_letters_topic, encoded_key, value, "the dead letter")
        except OversizedOutput:  # a small max.message.bytes: the raw value and most error go
            short = clip(letter.error, MAX_QUOTED_CHARS)
            value = letter.model_copy(update={"raw": "", "error": short}).to_bytes()
        try:
            await self.send(self.dead_letters_topic, key, value)
        except OversizedOutput as error:
            self.metrics.sends_refused[self.dead_letters_topic] += 1
            log.error("dead letter not sent: %s", error)

    async def dead_letter_skipped(self, batch: SkippedBatch) -> None:
        """Dead-letter a batch the consumer could not decode (no record, no key to quote:
        its offsets say which records to look for)."""
        last = batch.end - 1
        error = clip(
            f"offsets {batch.first} to {last} could not be decoded and were skipped: "
            f"{batch.error}. Produce them again uncompressed or with gzip, lz4, snappy or zstd",
            MAX_ERROR_CHARS,
        )
        letter = DeadLetter(
            source_topic=batch.topic,
            partition=batch.partition,
            offset=batch.first,
            key=None,
            reason=UNDECODABLE_BATCH,
            error=error,
            raw="",
            failed_at=datetime.now(UTC),
        )
        log.error(
            "dead letter from %s[%s]@%s-%s (%s): %s",
            batch.topic,
            batch.partition,
            batch.first,
            last,
            UNDECODABLE_BATCH,
            clip(error),
        )
        await self._send_letter(letter)
        self.metrics.dead_letters[UNDECODABLE_BATCH] += 1
