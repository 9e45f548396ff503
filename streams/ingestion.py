"""Item uploads in, encoded items out to item-updates (every worker's replica stores them
from there: ``streams/replica.py``).

Every record ends published or dead-lettered, alone: an item whose media fails, or that
fails in any unforeseen way, is dead-lettered and the rest of its batch is published. A
batch ends as its records would one at a time: an upload is skipped only when a later
upload of its item in the batch is published, which would have overwritten it. A
batch runs under the poison guard (``streams/poison.py``) and a time bound; one that
overruns it is encoded again one item at a time. ``ingest_batch`` never raises: Faust's
``take_events`` acknowledges a batch's offsets even when the agent raises, which would
commit records neither published nor dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from functools import partial

from encoders.media import MediaError
from encoders.multimodal import EncodedItem, MultimodalEncoder, internal_error
from models.packed import FLOAT32, pack
from models.vector_store import StoredItem
from streams.bounds import OversizedOutput, cancel_exit, clip, exit_after_grace, in_daemon_thread
from streams.encoding import content_of, stored_item
from streams.events import ItemRecord, ItemUpload
from streams.metrics import WorkerMetrics
from streams.outbox import Outbox
from streams.poison import PoisonGuard
from streams.records import Record, Rejected, internal, parse, position, record_key
from streams.settings import Settings

log = logging.getLogger(__name__)


class ItemIngestion:
    """Validates, fetches and encodes uploads (in a thread: I/O and torch release the
    GIL) and publishes each encoded item (module docstring)."""

    def __init__(
        self,
        settings: Settings,
        encoder: MultimodalEncoder,
        poison: PoisonGuard,
        outbox: Outbox,
        metrics: WorkerMetrics,
        stopping: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.encoder = encoder
        self.poison = poison
        self.outbox = outbox
        self.metrics = metrics
        self.stopping = stopping

    async def ingest_batch(self, records: Sequence[Record]) -> None:
        """Publish or dead-letter every record of the batch (module docstring), with the
        outcome of the same records handled one at a time in order: each upload is
        encoded, each failure dead-lettered, and of one item's uploads the latest that
        encodes and publishes is stored (``_publish_results``)."""
        uploads: list[tuple[ItemUpload, Record]] = []
        for record in records:
            try:
                upload = parse(ItemUpload, record.value, record_key(record))
            except Rejected as rejected:
                await self.outbox.dead_letter(record, rejected)
                continue
            except Exception as error:  # a parser's own failure: this record alone
                await self.outbox.dead_letter(record, internal(error))
                continue
            uploads.append((upload, record))
        # Every upload is encoded, a superseded one too: only its encoding tells whether
        # the later upload of its id, failing, leaves it as the item's last good version.
        outcomes: list[EncodedItem | MediaError | Rejected | None] = [None] * len(uploads)
        batch: list[int] = []
        alone: list[int] = []
        for n, (_, record) in enumerate(uploads):
            at = position(record)
            if self.poison.is_poison(at):
                await self.outbox.dead_letter(
                    record,
                    Rejected(
                        "poison",
                        "the worker died while encoding this item alone, after dying on its "
                        "batch: it is not encoded again",
                    ),
                )
                self.poison.dismiss(at)
            elif self.poison.is_suspect(at):
                alone.append(n)
            else:
                batch.append(n)
        if not batch and not alone:
            return
        started = time.perf_counter()
        encoded = len(batch) + len(alone)
        if batch:
            try:
                with self.poison.batch(position(uploads[n][1]) for n in batch):
                    results = await self._encode([uploads[n][0] for n in batch])
                for n, result in zip(batch, results, strict=True):
                    outcomes[n] = result
            except TimeoutError:
                log.warning(
                    "a batch of %d items overran encode_timeout_s=%g: encoding them one at a time",
                    len(batch),
                    self.settings.encode_timeout_s,
                )
                alone += batch
        for n in alone:
            upload, record = uploads[n]
            with self.poison.alone(position(record)):
                try:
                    outcomes[n] = (await self._encode([upload]))[0]
                except TimeoutError:
                    outcomes[n] = Rejected(
                        "encode-timeout",
                        f"encoding this item alone took over encode_timeout_s="
                        f"{self.settings.encode_timeout_s:g}",
                    )
        stored = await self._publish_results(uploads, outcomes)
        encoded_s = time.perf_counter() - started
        self.metrics.processed[self.settings.topic_items] += stored
        self.metrics.encode_batch_size.observe(encoded)
        self.metrics.encode_seconds.observe(encoded_s)
        log.info(
            "items: %d of %d stored in %.3f s (fetch, decode, encode, publish)",
            stored,
            len(records),
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
                if self.stopping():
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
        uploads: list[tuple[ItemUpload, Record]],
        outcomes: list[EncodedItem | MediaError | Rejected | None],
    ) -> int:
        """Dead-letter each failed upload and publish, per item, the latest upload that
        encoded and publishes; returns how many items were stored. ``None`` is an upload
        already dead-lettered (poison)."""
        encoded: dict[str, list[tuple[ItemUpload, Record, EncodedItem]]] = {}
        for (upload, record), outcome in zip(uploads, outcomes, strict=True):
            if isinstance(outcome, MediaError):
                await self.outbox.dead_letter(record, Rejected(outcome.reason, outcome.message))
            elif isinstance(outcome, Rejected):
                await self.outbox.dead_letter(record, outcome)
            elif outcome is not None:
                encoded.setdefault(upload.item_id, []).append((upload, record, outcome))
        stored = 0
        for versions in encoded.values():
            # Latest first: an earlier version is published only if every later one fails
            # to publish; one at a time, a later stored version would overwrite it.
            for upload, record, result in reversed(versions):
                if await self._publish_one(upload, record, result):
                    stored += 1
                    break
        return stored

    async def _publish_one(self, upload: ItemUpload, record: Record, result: EncodedItem) -> bool:
        """Publish one encoded upload, or dead-letter it if that fails; True if published."""
        try:
            await self.publish_item(stored_item(upload, result, self.encoder.fusion.version))
        except OversizedOutput as error:
            await self.outbox.dead_letter(record, Rejected("output-oversized", str(error)))
            return False
        except Exception as error:
            log.exception("item %s could not be published", clip(upload.item_id))
            await self.outbox.dead_letter(record, internal(error))
            return False
        return True

    async def publish_item(self, item: StoredItem) -> None:
        """Send an encoded item to item-updates (keyed by its id)."""
        record = ItemRecord(
            item_id=item.item_id,
            vectors={
                name: pack(vector, f"the {name} vector", FLOAT32)
                for name, vector in item.vectors.items()
            },
            payload=item.payload,
        )
        await self.outbox.send(self.settings.topic_item_updates, item.item_id, record.to_bytes())
