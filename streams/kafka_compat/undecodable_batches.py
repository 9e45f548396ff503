"""A record batch the consumer cannot decode is skipped and reported, never raised.

aiokafka decodes a fetched batch while its records are handed on. A batch it cannot
decode raised out of the fetcher: compressed with a codec whose library is missing
(``UnsupportedCodecError``; one click sent by a producer with ``compression.type=lz4``
stopped the worker this way), a compressed payload that is no such data (zlib's or
cramjam's own errors), a CRC that does not match. Faust's consumer thread crashed on it,
the worker exited, and each restart fetched the same batch again: a crash loop from one
ordinary record.

The patch decodes each batch before any of its records is handed on. A batch that fails
is skipped, the partition's position moved past it, and reported once
(``SKIPPED.drain``): the worker dead-letters it (``undecodable-batch``, with its topic,
partition, offsets and the error; ``streams/app.py``) and the records around it go on.
A CRC mismatch is fetched once more before it is skipped: a transfer corrupted on the
way reads right the second time. The project installs every codec Kafka has
(``cramjam``, ``pyproject.toml``), so the codecs are not what this patch is for; it is
for what no library can decode.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.errors import CorruptRecordException

from streams.bounds import MAX_ERROR_CHARS, clip
from streams.kafka_compat.counts import fire
from streams.kafka_compat.patching import ClassPatch


@dataclass(frozen=True)
class SkippedBatch:
    """Offsets ``first`` to ``end - 1`` of a partition, not decoded."""

    topic: str
    partition: int
    first: int
    end: int
    error: str


class SkippedBatches:
    """What the consumers skipped (they run in Faust's consumer thread and the worker's
    loop): reported once each (a catch-up or a seek back reads a batch again), drained by
    the worker."""

    def __init__(self, remembered: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._remembered = remembered
        #: (topic, partition, first) of the batches skipped (bounded, oldest out).
        self._skipped: OrderedDict[tuple[str, int, int], None] = OrderedDict()
        self._crc_failed: OrderedDict[tuple[str, int, int], None] = OrderedDict()
        self._pending: deque[SkippedBatch] = deque(maxlen=remembered)

    def report(self, batch: SkippedBatch) -> None:
        with self._lock:
            # Read again (a catch-up, a seek back): already reported.
            if self._seen(self._skipped, (batch.topic, batch.partition, batch.first)):
                return
            self._pending.append(batch)
        fire("undecodable_batch")

    def crc_failed_before(self, topic: str, partition: int, first: int) -> bool:
        """Whether this batch's CRC failed once already (else remember that it did)."""
        with self._lock:
            return self._seen(self._crc_failed, (topic, partition, first))

    def _seen(
        self, keys: OrderedDict[tuple[str, int, int], None], key: tuple[str, int, int]
    ) -> bool:
        """Whether ``keys`` holds ``key``; else it is added, the oldest out past the bound."""
        if key in keys:
            return True
        keys[key] = None
        if len(keys) > self._remembered:
            keys.popitem(last=False)
        return False

    def drain(self) -> list[SkippedBatch]:
        with self._lock:
            batches = list(self._pending)
            self._pending.clear()
        return batches


SKIPPED = SkippedBatches()


class _DecodedBatch:
    """A batch whose records are already decoded: iterated as aiokafka's batch is, its
    other attributes read from it."""

    def __init__(self, batch: Any, records: list[Any]) -> None:
        self._batch = batch
        self._records: Iterator[Any] = iter(records)

    def __iter__(self) -> _DecodedBatch:
        return self

    def __next__(self) -> Any:
        return next(self._records)

    def validate_crc(self) -> bool:
        return True  # checked before decoding (a batch cannot be checked once iterated)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)


class _CheckedRecords:
    """A fetch's batches as aiokafka's ``PartitionRecords`` reads them (``has_next``,
    ``next_batch``), those that cannot be decoded left out and reported."""

    def __init__(self, owner: PartitionRecords, records: Any) -> None:
        self._owner = owner
        self._records = records
        self._ready: _DecodedBatch | None = None
        self._refetch = False

    def has_next(self) -> bool:
        owner = self._owner
        while self._ready is None and not self._refetch and self._records.has_next():
            topic, partition = owner._tp.topic, owner._tp.partition
            start = owner.next_fetch_offset
            try:
                batch = self._records.next_batch()
            except Exception as error:  # a header that cannot be read: no extent known
                self._skip(SkippedBatch(topic, partition, start, start + 1, _describe(error)))
                break
            try:
                if owner._check_crcs and not batch.validate_crc():
                    if not SKIPPED.crc_failed_before(topic, partition, batch.base_offset):
                        self._refetch = True  # stop here: the next fetch starts at it
                        break
                    raise CorruptRecordException("its CRC does not match, fetched twice")
                records = list(batch)
            except Exception as error:
                first = getattr(batch, "base_offset", start)  # a v0/v1 message has none
                end = batch.next_offset
                self._skip(SkippedBatch(topic, partition, first, end, _describe(error)))
                continue
            self._ready = _DecodedBatch(batch, records)
        return self._ready is not None

    def next_batch(self) -> _DecodedBatch | None:
        self.has_next()
        batch, self._ready = self._ready, None
        return batch

    def _skip(self, batch: SkippedBatch) -> None:
        SKIPPED.report(batch)
        self._owner.next_fetch_offset = max(self._owner.next_fetch_offset, batch.end)


def _describe(error: Exception) -> str:
    text, name = str(error), type(error).__name__
    return clip(text if text.startswith(name) else f"{name}: {text}", MAX_ERROR_CHARS)


_original_init = PartitionRecords.__init__


def _init_checked(self: PartitionRecords, *args: Any, **kwargs: Any) -> None:
    _original_init(self, *args, **kwargs)
    self._records = _CheckedRecords(self, self._records)


PATCH = ClassPatch(
    name="skip_undecodable_batches",
    owner=PartitionRecords,
    attribute="__init__",
    replacement=_init_checked,
    brokers=frozenset({"noida-db", "kafka"}),
    reason="a batch that cannot be decoded is skipped and dead-lettered, not raised",
)
