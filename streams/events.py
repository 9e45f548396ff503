"""Event contracts on the wire: pydantic v2 models, JSON encoded.

Every model forbids unknown fields, so a producer's typo is a dead letter that names
the field instead of a silently ignored value.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from models.signals import MAX_INTERACTION_VALUE
from models.sources.changes import LATEST_MOMENT, MAX_ID_CHARS, MAX_TITLE_CHARS

if TYPE_CHECKING:
    from models.hybrid import Recommendation

Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]

#: An event more than this far in the future is a producer's clock or unit error.
MAX_CLOCK_SKEW = timedelta(days=1)
#: Item metadata: nested at most this deep, at most this large as JSON. Deeper values
#: could not be stored or read back by the vector store (recursion limits).
MAX_METADATA_DEPTH = 8
MAX_METADATA_BYTES = 16_384
#: A media URI longer than this is refused (browsers stop near 2,000).
MAX_URI_CHARS = 4_096
#: An item's stored payload as JSON (an upload's title, tags and metadata at their bounds
#: take about 60 kB of UTF-8, its thumbnail a few more); the named vectors of a record
#: (content and one per modality).
MAX_PAYLOAD_BYTES = 131_072
MAX_RECORD_VECTORS = 16
#: A stored item's thumbnail (``encoders/image.py: thumbnail_data_uri``).
THUMBNAIL = re.compile(r"data:image/jpeg;base64,[A-Za-z0-9+/]*={0,2}")
#: Kafka's partitions and offsets are signed 32- and 64-bit.
MAX_PARTITION = 2**31 - 1
MAX_OFFSET = 2**63 - 1


def json_depth(value: Any, limit: int) -> int:
    """How deep ``value`` nests (a scalar is 0), counted up to ``limit + 1`` and no further,
    iteratively: a value of any depth is measured without recursion.

    >>> json_depth({"a": [1, {"b": 2}]}, 10), json_depth([[[[]]]], 2)
    (3, 3)
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend(
                (child, depth) for child in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


def wide_integer(value: Any) -> int | None:
    """The first integer in ``value`` (parsed JSON) outside 64 bits, or None: the
    vector store keeps integers in 64 bits, so an upload with 10**400 in its metadata was
    published and then refused by every worker's store, with no dead letter.

    >>> wide_integer({"a": [1, 2**63]}), wide_integer({"a": -(2**63), "b": 1e300})
    (9223372036854775808, None)
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict | list):
            stack.extend(item.values() if isinstance(item, dict) else item)
        elif isinstance(item, int) and not -(2**63) <= item < 2**63:
            return item
    return None


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class MediaRef(Event):
    """A media file by reference (``uri``) or inline (base64 ``data`` with its ``mime``)."""

    uri: str | None = Field(default=None, max_length=MAX_URI_CHARS)
    data: str | None = None
    mime: str | None = Field(default=None, max_length=255)

    @model_validator(mode="after")
    def _one_source(self) -> MediaRef:
        if (self.uri is None) == (self.data is None):
            raise ValueError("give exactly one of 'uri' or 'data' (base64) for a media reference")
        if self.data is not None and not self.mime:
            raise ValueError("inline media 'data' needs its 'mime' type, e.g. 'image/png'")
        return self


class ItemUpload(Event):
    item_id: Identifier
    title: str = Field(default="", max_length=MAX_TITLE_CHARS)
    text: str = Field(default="", max_length=20_000)
    tags: list[Annotated[str, Field(max_length=100)]] = Field(default_factory=list, max_length=100)
    image: MediaRef | None = None
    audio: MediaRef | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None

    @field_validator("metadata")
    @classmethod
    def _bounded_metadata(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        depth = json_depth(metadata, MAX_METADATA_DEPTH)
        if depth > MAX_METADATA_DEPTH:
            raise ValueError(f"metadata nests deeper than {MAX_METADATA_DEPTH} levels: flatten it")
        size = len(json.dumps(metadata, ensure_ascii=False, allow_nan=False).encode())
        if size > MAX_METADATA_BYTES:
            raise ValueError(
                f"metadata of {size:,} bytes of JSON exceeds {MAX_METADATA_BYTES:,}: "
                "keep large data elsewhere and link to it"
            )
        wide = wide_integer(metadata)
        if wide is not None:
            raise ValueError(
                f"metadata holds the integer {str(wide)[:20]}... past 64 bits: send it as a string"
            )
        return metadata

    @field_validator("created_at")
    @classmethod
    def _utc_if_naive(cls, created_at: datetime | None) -> datetime | None:
        # Read as UTC, as an interaction's ts is: a naive time's epoch seconds depend on
        # the local zone, and in year 1 cannot be computed at all (``evaluate`` raised).
        if created_at is not None and created_at.tzinfo is None:
            return created_at.replace(tzinfo=UTC)
        return created_at

    @model_validator(mode="after")
    def _not_empty(self) -> ItemUpload:
        if not (self.title.strip() or self.text.strip() or self.tags or self.image or self.audio):
            raise ValueError(
                "empty item: give at least one of title, text, tags, image or audio to encode"
            )
        return self


class InteractionKind(StrEnum):
    VIEW = "view"
    CLICK = "click"
    LIKE = "like"
    PURCHASE = "purchase"
    RATING = "rating"
    SKIP = "skip"
    DISLIKE = "dislike"


class Interaction(Event):
    event_id: Identifier
    user_id: Identifier
    item_id: Identifier
    kind: InteractionKind
    value: float | None = None
    ts: datetime

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("value must be a finite number")
        if value is not None and abs(value) > MAX_INTERACTION_VALUE:
            raise ValueError(f"value must be within +-{MAX_INTERACTION_VALUE:g}")
        return value

    @field_validator("ts")
    @classmethod
    def _plausible_time(cls, ts: datetime) -> datetime:
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        if ts.timestamp() < 0:
            raise ValueError("ts is before 1970: send an ISO-8601 time or epoch seconds")
        if ts > datetime.now(UTC) + MAX_CLOCK_SKEW:
            raise ValueError("ts is more than a day in the future: check the producer's clock/unit")
        if ts.timestamp() > LATEST_MOMENT:  # what the item changes it makes may carry
            raise ValueError("ts is after 2100: send an ISO-8601 time or epoch seconds")
        return ts

    @model_validator(mode="after")
    def _rating_has_value(self) -> Interaction:
        if self.kind is InteractionKind.RATING and self.value is None:
            raise ValueError("a 'rating' interaction needs its 'value' (e.g. 1 to 5)")
        return self


class Reason(Event):
    """Why an item is in a list: the source that proposed it, and the user's item it resembles."""

    source: str
    because_of: str | None = None
    score: float


class RecommendedItem(Event):
    item_id: str
    score: float
    title: str = ""
    reasons: list[Reason]


class Recommendations(Event):
    user_id: str
    items: list[RecommendedItem]
    trigger_event_id: str
    based_on_events: int
    generated_at: datetime
    model_version: str

    @classmethod
    def of(
        cls,
        user_id: str,
        ranked: Sequence[Recommendation],
        trigger_event_id: str,
        based_on_events: int,
        model_version: str,
    ) -> Recommendations:
        """The message for a ranked list of the core's (``models.hybrid.Recommendation``)."""
        return cls(
            user_id=user_id,
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
            trigger_event_id=trigger_event_id,
            based_on_events=based_on_events,
            generated_at=datetime.now(UTC),
            model_version=model_version,
        )


class ItemRecord(Event):
    """An encoded item, as every worker's item-side replica stores it (item-updates topic,
    key item_id). Vectors travel as base64 of little-endian float32 (``models/packed.py``).

    Bounded as the upload it comes from (``streams/encoding.py: stored_item``): the
    topic is internal, but anything that can write the cluster can write it, and every
    replica stores what it reads. An unbounded payload was a store that could not read
    its points back (too deep), a NaN the store refused mid-batch, or a title that made
    every list too large to send."""

    type: Literal["item"] = "item"
    item_id: Identifier
    vectors: dict[str, str] = Field(max_length=MAX_RECORD_VECTORS)
    payload: dict[str, Any]

    @field_validator("payload")
    @classmethod
    def _bounded_payload(cls, payload: dict[str, Any]) -> dict[str, Any]:
        # The upload's metadata nests one level down in the payload.
        if json_depth(payload, MAX_METADATA_DEPTH + 1) > MAX_METADATA_DEPTH + 1:
            raise ValueError(f"payload nests deeper than {MAX_METADATA_DEPTH + 1} levels")
        size = len(json.dumps(payload, ensure_ascii=False, allow_nan=False).encode())
        if size > MAX_PAYLOAD_BYTES:
            raise ValueError(f"payload of {size:,} bytes of JSON exceeds {MAX_PAYLOAD_BYTES:,}")
        if wide_integer(payload) is not None:
            raise ValueError("payload holds an integer past 64 bits")
        title = payload.get("title", "")
        if not isinstance(title, str) or len(title) > MAX_TITLE_CHARS:
            raise ValueError(f"payload title: not a string of at most {MAX_TITLE_CHARS} characters")
        # Pages put it in an <img src>: only what encoders/image.py makes, a JPEG data URI.
        thumbnail = payload.get("thumbnail")
        if thumbnail is not None and not (
            isinstance(thumbnail, str) and THUMBNAIL.fullmatch(thumbnail)
        ):
            raise ValueError("payload thumbnail: not a data:image/jpeg;base64 URI")
        return payload


class ItemChanges(Event):
    """One interaction's changes to the item side (item-updates topic, key user_id, so a
    user's changes stay in order): per item id, per source, what to add."""

    type: Literal["changes"] = "changes"
    event_id: Identifier
    user_id: Identifier
    source_partition: int = Field(ge=0, le=MAX_PARTITION)
    source_offset: int = Field(ge=0, le=MAX_OFFSET)
    changes: dict[str, dict[str, dict[str, Any]]]
    #: The user's state after the event for the sources whose user step reads the item
    #: side (the CF factor): a worker that redoes the event after a crash adopts it.
    user_steps: dict[str, Any] = {}


#: What the item-updates topic carries.
ItemUpdate = TypeAdapter(Annotated[ItemRecord | ItemChanges, Field(discriminator="type")])


class DeadLetter(Event):
    source_topic: str
    partition: int | None
    offset: int | None
    key: str | None
    reason: str
    error: str
    #: The offending value, cut to ``MAX_RAW_CHARS``; ``raw_bytes`` is its original size.
    raw: str
    failed_at: datetime
    raw_bytes: int | None = None


#: Dead-letter payloads keep at most this much of the offending value.
MAX_RAW_CHARS = 4_096


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, naming the field, e.g. ``kind: Input should be 'view', ...``."""
    parts = []
    for problem in error.errors():
        field = ".".join(str(p) for p in problem["loc"]) or "(value)"
        parts.append(f"{field}: {problem['msg']}")
    return "; ".join(parts)
