"""One record as the handlers read it, and why one is refused.

Handlers read a Faust event or a record the continuity check read directly from the
broker (``kafka_compat/offset_continuity.py``) the same way: key, value, and where it
came from. ``parse`` turns a record into an event of ``streams/events.py`` or raises
``Rejected``, whose reason names the dead letter.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import ValidationError

from streams.bounds import MAX_ERROR_CHARS, clip, key_too_long
from streams.events import Interaction, ItemUpload, describe_validation_error
from streams.poison import Position


class RecordSource(Protocol):
    """Where a record was read: the fields of Faust's message the handlers use."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> float | None: ...


class Record(Protocol):
    """A record as the handlers read it: a Faust event or a caught-up record."""

    @property
    def key(self) -> Any: ...
    @property
    def value(self) -> Any: ...
    @property
    def message(self) -> RecordSource: ...


class Rejected(Exception):
    """A message that cannot be processed; ``reason`` is a short code for counting."""

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error


def internal(error: BaseException) -> Rejected:
    """An unforeseen failure while handling one record: that record's dead letter."""
    return Rejected("internal-error", clip(f"{type(error).__name__}: {error}", MAX_ERROR_CHARS))


def record_key(record: Record) -> str | None:
    key = record.key
    if key is None:
        return None
    return key.decode("utf-8", errors="replace") if isinstance(key, bytes) else str(key)


def position(record: Record) -> Position:
    message = record.message
    return message.topic, message.partition, message.offset


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
