"""Reading a topic back for replay: a range per partition, by offset or by time, in time order.

Kafka orders events within a partition only, and producers' clocks disagree across
partitions, so the selected records of every partition are gathered and sorted by the
event's own ``ts`` (ties keep partition and offset order) before evaluation.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
from kafka import KafkaConsumer, TopicPartition
from pydantic import ValidationError

from encoders.multimodal import EncodedItem
from models.atomic_file import read_failure, write_atomically
from models.evaluation.datasets import (
    MAX_TIMESTAMP,
    Dataset,
    ReplayEvent,
    ReplayItem,
    text_lines,
)
from streams.events import Interaction, ItemUpload, describe_validation_error
from streams.inspection import printable
from streams.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayRange:
    """Where to start and stop in each partition; the default is the whole topic as it is now.

    ``start_offsets`` (partition -> first offset) or ``start_time`` (epoch seconds: the
    first record at or after it, by broker timestamp) choose the start; ``end_time``
    stops before the first record at or after it. The end is never later than the
    partition's end when the replay starts, so a replay always finishes.
    """

    start_offsets: Mapping[int, int] = field(default_factory=dict)
    start_time: float | None = None
    end_time: float | None = None


@dataclass
class ReplayRead:
    events: list[ReplayEvent]
    skipped: int  # records that are not valid interactions (they would be dead letters)


def parse_offsets(text: str) -> dict[int, int]:
    """``"0:120,1:98"`` to ``{0: 120, 1: 98}``.

    >>> parse_offsets("0:120, 1:98")
    {0: 120, 1: 98}
    """
    offsets: dict[int, int] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        partition, _, offset = part.partition(":")
        try:  # Kafka's partitions are 32-bit and its offsets 64-bit, from 0
            numbers = int(partition), int(offset)
        except ValueError:
            numbers = (-1, -1)
        if not (0 <= numbers[0] < 2**31 and 0 <= numbers[1] < 2**63):
            raise ValueError(
                f"{part.strip()[:40]!r} should be PARTITION:OFFSET, two whole numbers from 0, "
                "e.g. 0:120"
            )
        if numbers[0] in offsets:
            raise ValueError(f"partition {numbers[0]} is given twice: give each once")
        offsets[numbers[0]] = numbers[1]
    return offsets


def parse_time(text: str, option: str = "time") -> float:
    """ISO-8601 (``2026-11-25T10:00:00+00:00``) or epoch seconds, to epoch seconds; a time
    that is not one, or outside 1970 to the year 3000, is a ``ValueError`` naming ``option``.

    >>> parse_time("2026-11-25T10:00:00Z"), parse_time("1.5")
    (1795600800.0, 1.5)
    >>> parse_time("inf", "--to-time")
    Traceback (most recent call last):
    ...
    ValueError: --to-time: 'inf' is out of range: give a time from 1970 to before the year 3000
    """
    fix = "give ISO-8601 (e.g. 2026-11-25T10:00:00+00:00) or epoch seconds"
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except (ValueError, OverflowError, OSError):
            raise ValueError(f"{option}: {text!r} is not a time: {fix}") from None
    # Kafka looks times up as 64-bit milliseconds: inf or nan would not convert at all.
    if not 0 <= seconds < MAX_TIMESTAMP:  # also false for nan
        raise ValueError(
            f"{option}: {text!r} is out of range: give a time from 1970 to before the year 3000"
        )
    return seconds


def _consumer(settings: Settings) -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=settings.effective_bootstrap_servers,
        enable_auto_commit=False,
        # What the worker reads (streams/kafka_compat/read_committed.py): a replay of the
        # log must not learn from events whose producer aborted them either.
        isolation_level="read_committed",
        **settings.kafka_client_options(),
    )


def _read_range(
    settings: Settings, topic: str, selection: ReplayRange
) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) of the selected records."""
    consumer = _consumer(settings)
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])
        ]
        if not partitions:
            raise ValueError(f"topic {topic!r} does not exist or has no partitions")
        consumer.assign(partitions)
        ends = consumer.end_offsets(partitions)
        if selection.end_time is not None:
            found = consumer.offsets_for_times(
                {tp: int(selection.end_time * 1000) for tp in partitions}
            )
            ends = {
                tp: min(ends[tp], found[tp].offset) if found[tp] else ends[tp] for tp in partitions
            }
        starts = consumer.beginning_offsets(partitions)
        if selection.start_time is not None:
            found = consumer.offsets_for_times(
                {tp: int(selection.start_time * 1000) for tp in partitions}
            )
            starts = {tp: found[tp].offset if found[tp] else ends[tp] for tp in partitions}
        for tp in partitions:
            starts[tp] = max(starts[tp], selection.start_offsets.get(tp.partition, 0))
        records = []
        # One partition at a time, so a batch that cannot be decoded is named by its place.
        for tp in (tp for tp in partitions if starts[tp] < ends[tp]):
            consumer.assign([tp])
            consumer.seek(tp, starts[tp])
            while consumer.position(tp) < ends[tp]:
                try:
                    fetched = consumer.poll(timeout_ms=1000).get(tp, [])
                except Exception as error:  # a codec or a payload kafka-python cannot read
                    at = consumer.position(tp)
                    raise ValueError(
                        f"{topic}[{tp.partition}]: the records from offset {at} cannot be "
                        f"read ({type(error).__name__}: {error}); produce them again, or "
                        f"replay past them with --from-offsets {tp.partition}:{at + 1} (or later)"
                    ) from None
                records += [
                    (tp.partition, r.offset, r.value) for r in fetched if r.offset < ends[tp]
                ]
        return records
    finally:
        consumer.close()


def read_interactions(settings: Settings, selection: ReplayRange | None = None) -> ReplayRead:
    """The interactions topic's selected records as replay events, in time order."""
    records = _read_range(settings, settings.topic_interactions, selection or ReplayRange())
    events, skipped = [], 0
    for _partition, _offset, value in sorted(records, key=lambda r: (r[0], r[1])):
        try:
            interaction = Interaction.model_validate_json(value)
        except ValidationError:
            skipped += 1
            continue
        events.append(
            ReplayEvent(
                interaction.user_id,
                interaction.item_id,
                interaction.kind.value,
                interaction.value,
                interaction.ts.timestamp(),
                interaction.event_id,
            )
        )
    events.sort(key=lambda e: e.ts)  # stable: ties keep partition and offset order
    return ReplayRead(events, skipped)


def read_uploads(settings: Settings) -> list[ItemUpload]:
    """Every item on the items topic (its latest valid upload), in first-upload order."""
    latest: dict[str, ItemUpload] = {}
    for _partition, _offset, value in _read_range(settings, settings.topic_items, ReplayRange()):
        try:
            upload = ItemUpload.model_validate_json(value)
        except ValidationError:
            continue
        latest[upload.item_id] = upload
    return list(latest.values())


def topic_dataset(
    settings: Settings, selection: ReplayRange | None = None
) -> tuple[Dataset, int, list[ItemUpload]]:
    """The items and the selected interactions of the configured topics, how many
    interaction records were skipped as invalid, and the items' uploads (with media)."""
    read = read_interactions(settings, selection)
    uploads = read_uploads(settings)
    items = [ReplayItem(u.item_id, u.title, u.text, tuple(u.tags)) for u in uploads]
    return (
        Dataset(f"topic {settings.topic_interactions}", items, read.events),
        read.skipped,
        uploads,
    )


@dataclass(frozen=True)
class EncodedCatalog:
    """Items in the ``ItemUpload`` schema, encoded as the worker encodes them."""

    items: list[ReplayItem]
    vectors: np.ndarray  # one fused content vector per item
    uploaded_at: dict[str, float]  # item id -> created_at (epoch s), where given
    modalities: dict[str, tuple[str, ...]]
    rejected: dict[str, str]  # item id -> why it could not be encoded
    cached: bool = False  # read from the cache, not encoded now
    #: Per item (in ``items`` order), each of its modalities' embedding: what a learned
    #: fusion fuses and refits on.
    embeddings: list[dict[str, np.ndarray]] = field(default_factory=list)
    #: Every modality's embedding size, as the worker's encoders give it.
    dims: dict[str, int] = field(default_factory=dict)

    def modality_groups(self) -> dict[str, str]:
        """Item id -> the modalities it has, e.g. ``"text+image"`` (report groups)."""
        return {item_id: "+".join(found) for item_id, found in self.modalities.items()}


def read_items_file(path: Path) -> list[ItemUpload]:
    """One ``ItemUpload`` per line; a later line for the same item wins. A line that is
    not one is a one-line ``ValueError`` naming the file, the line and each field's
    problem (pydantic's own text spans lines and links); the file is UTF-8, a byte order
    mark allowed, as every other file the commands read."""
    uploads: dict[str, ItemUpload] = {}
    for number, line in enumerate(text_lines(path), start=1):  # DatasetError: not UTF-8
        if not line.strip():
            continue
        try:
            upload = ItemUpload.model_validate_json(line)
        except ValidationError as error:
            problems = describe_validation_error(error).replace("(value): ", "")
            raise ValueError(
                f"{path}:{number}: not an ItemUpload ({printable(problems, 300)}): "
                "write one ItemUpload JSON object per line, e.g. "
                '{"item_id": "42", "title": "..."}'
            ) from None
        uploads[upload.item_id] = upload
    return list(uploads.values())


#: The modalities in the order their groups are named ("text+image+audio").
MODALITIES = ("text", "image", "audio")

#: The settings that decide what an item's encoding is (the cache key includes them).
ENCODING_SETTINGS = frozenset(
    {
        "encoders",
        "fusion",
        "fusion_weights",
        *(n for n in Settings.model_fields if n.startswith("media_")),
    }
)


def encode_uploads(
    settings: Settings,
    uploads: Sequence[ItemUpload],
    on_encode: Callable[[int], None] = lambda count: None,
) -> EncodedCatalog:
    """Encode every upload (text, tags, images and audio inline or by ``file://`` under
    ``media_allowed_dirs``) with the worker's encoders, fusion and media policy
    (``build_item_encoder``).

    The result is cached under ``data_dir/cache``, keyed by the encoding settings and
    every upload (a ``file://`` medium by its size and modification time): a second
    evaluation of the same items skips loading the encoders and encoding. ``on_encode``
    is told how many items are about to be encoded when the cache does not have them."""
    cache = settings.data_dir / "cache" / f"items-{_uploads_digest(settings, uploads)}.npz"
    if cache.exists():
        arrays = _cached_encodings(cache, len(uploads))
        if arrays is not None:
            return _catalog(uploads, arrays, cached=True)
    from streams.encoding import build_item_encoder, content_of

    on_encode(len(uploads))
    encoder = build_item_encoder(settings)
    results = encoder.encode([content_of(u) for u in uploads])
    n = len(uploads)
    present = {m for r in results if isinstance(r, EncodedItem) for m in r.embeddings}
    arrays = {
        "vectors": np.zeros((n, encoder.fusion.dim), dtype=np.float32),
        "ok": np.zeros(n, dtype=bool),
        "dims": np.array([encoder.dims.get(m, 0) for m in MODALITIES]),
        # A modality no item has is kept as no columns (a text-only catalog of 100k
        # items would otherwise store half a gigabyte of zero image embeddings).
        **{
            f"embedding_{m}": np.zeros((n, encoder.dims[m] if m in present else 0), np.float32)
            for m in MODALITIES
        },
    }
    found, why = [""] * n, [""] * n
    for row, result in enumerate(results):
        if isinstance(result, EncodedItem):
            arrays["vectors"][row], arrays["ok"][row] = result.vector, True
            found[row] = "+".join(sorted(result.modalities, key=MODALITIES.index))
            for modality, embedding in result.embeddings.items():
                arrays[f"embedding_{modality}"][row] = embedding
        else:
            why[row] = str(result)
    arrays["modalities"] = np.array(found, dtype=str)
    arrays["rejected"] = np.array(why, dtype=str)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(cache, lambda file: np.savez(file, **arrays))
    except OSError as error:  # a cache that cannot be written is only slower
        log.warning("encodings not cached at %s: %s", cache, error)
    return _catalog(uploads, arrays, cached=False)


def _cached_encodings(cache: Path, n: int) -> dict[str, np.ndarray] | None:
    """The arrays ``encode_uploads`` cached for ``n`` uploads, or None (logged, except
    for a cache written before the embeddings were kept) if they cannot be used: a file
    cut short or damaged, arrays of other shapes or kinds, NaN, an unknown modality."""
    try:
        with np.load(cache, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except Exception as error:  # whatever a damaged file raises: it is only a cache
        problem = read_failure(error)
    else:
        if "dims" not in arrays and "vectors" in arrays:
            return None  # written before the embeddings were kept: encoded again, silently
        problem = _encodings_problem(arrays, n)
        if problem is None:
            return arrays
    log.warning("unusable cached encodings %s (%s): encoding again", cache, problem)
    return None


def _encodings_problem(arrays: Mapping[str, np.ndarray], n: int) -> str | None:
    """What makes ``arrays`` no encodings of ``n`` uploads, or None."""
    names = {"vectors", "ok", "dims", "modalities", "rejected"}
    names |= {f"embedding_{m}" for m in MODALITIES}
    if set(arrays) != names:
        return f"arrays {sorted(arrays)[:12]}, not {sorted(names)}"
    dims, vectors, ok = arrays["dims"], arrays["vectors"], arrays["ok"]
    if dims.dtype.kind not in "iu" or dims.shape != (len(MODALITIES),) or (dims < 0).any():
        return f"dims {dims.dtype} {dims.shape}"
    if vectors.dtype.kind != "f" or vectors.shape != (n, dims[0]) or dims[0] == 0:
        return f"vectors {vectors.dtype} {vectors.shape}, not {n} rows of {dims[0]}"
    if ok.dtype != bool or ok.shape != (n,):
        return f"ok {ok.dtype} {ok.shape}"
    for name in ("modalities", "rejected"):
        if arrays[name].dtype.kind != "U" or arrays[name].shape != (n,):
            return f"{name} {arrays[name].dtype} {arrays[name].shape}"
    for index, modality in enumerate(MODALITIES):
        embedding = arrays[f"embedding_{modality}"]
        if embedding.dtype.kind != "f" or embedding.ndim != 2 or embedding.shape[0] != n:
            return f"embedding_{modality} {embedding.dtype} {embedding.shape}"
        if embedding.shape[1] not in (0, dims[index]):
            return f"embedding_{modality} of {embedding.shape[1]} columns, not {dims[index]}"
        if not np.isfinite(embedding).all():
            return f"embedding_{modality} holds a number that is not finite"
    if not np.isfinite(vectors[ok]).all():
        return "vectors hold a number that is not finite"
    for row, found in enumerate(arrays["modalities"].tolist()):
        names_found = found.split("+") if found else []
        known = all(m in MODALITIES and arrays[f"embedding_{m}"].shape[1] > 0 for m in names_found)
        if not known or bool(ok[row]) != bool(names_found):
            return f"row {row} has modalities {printable(found, 50)!r}"
    return None


def _catalog(
    uploads: Sequence[ItemUpload], arrays: Mapping[str, np.ndarray], cached: bool
) -> EncodedCatalog:
    ok, found, why = arrays["ok"], arrays["modalities"].tolist(), arrays["rejected"].tolist()
    items, uploaded_at, modalities, rejected, embeddings = [], {}, {}, {}, []
    for n, upload in enumerate(uploads):
        if not ok[n]:
            rejected[upload.item_id] = why[n]
            continue
        items.append(ReplayItem(upload.item_id, upload.title, upload.text, tuple(upload.tags)))
        modalities[upload.item_id] = tuple(found[n].split("+")) if found[n] else ()
        embeddings.append({m: arrays[f"embedding_{m}"][n] for m in modalities[upload.item_id]})
        if upload.created_at is not None:
            uploaded_at[upload.item_id] = upload.created_at.timestamp()
    return EncodedCatalog(
        items,
        arrays["vectors"][ok].astype(np.float32),
        uploaded_at,
        modalities,
        rejected,
        cached,
        embeddings,
        dict(zip(MODALITIES, arrays["dims"].tolist(), strict=True)),
    )


def _uploads_digest(settings: Settings, uploads: Sequence[ItemUpload]) -> str:
    digest = hashlib.sha256(settings.model_dump_json(include=set(ENCODING_SETTINGS)).encode())
    for upload in uploads:
        digest.update(b"\0" + upload.model_dump_json().encode())
        for medium in (upload.image, upload.audio):
            if medium is not None and medium.uri and medium.uri.startswith("file://"):
                try:
                    stat = Path(unquote(urlsplit(medium.uri).path)).stat()
                    digest.update(f"|{stat.st_size}|{stat.st_mtime_ns}".encode())
                except (OSError, ValueError):
                    digest.update(b"|missing")
    return digest.hexdigest()[:20]
