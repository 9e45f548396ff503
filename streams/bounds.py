"""Bounds on what the worker writes: message keys, message values, dead letters, log lines,
and the numbers that go into stored state.

An input under the broker's size limit can still make an output over the producer's: a
large key echoed in a dead letter, a value copied into an error text. Everything that
leaves the worker passes through these helpers, so no output depends on an input's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, TypeVar

import numpy as np

from models.packed import NonFiniteError

log = logging.getLogger(__name__)

#: A message key longer than this (UTF-8 bytes) is refused; ids are at most 256 characters.
MAX_KEY_BYTES = 1_024
#: At most this much of an input is quoted in a log line or an error text.
MAX_QUOTED_CHARS = 200
#: An error text on a dead letter keeps at most this many characters.
MAX_ERROR_CHARS = 2_000
#: Room left under the producer's request size for the record's own framing.
RECORD_OVERHEAD_BYTES = 4_096
#: Room left under a topic's ``max.message.bytes`` for the batch a record travels in.
BATCH_FRAMING_BYTES = 256
#: Faust's ``producer_max_request_size``, which the worker keeps: the most a users-table
#: entry may take, so the least its changelog's ``max.message.bytes`` may be (with the
#: framing above; the broker's default, 1,048,588, is more).
PRODUCER_MAX_REQUEST_BYTES = 1_000_000
CHANGELOG_MIN_MESSAGE_BYTES = (
    PRODUCER_MAX_REQUEST_BYTES - RECORD_OVERHEAD_BYTES + BATCH_FRAMING_BYTES
)


T = TypeVar("T")


async def in_daemon_thread(function: Callable[[], T], timeout_s: float) -> T:
    """``function()`` in a thread of its own, awaited at most ``timeout_s`` (TimeoutError).

    Python cannot stop a thread, so one that overruns is left behind; it is a daemon
    thread, so it never holds up the process's exit (``asyncio.to_thread``'s pool threads
    are joined at exit: one stuck read kept a worker alive after SIGTERM).
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not done.done():  # not after a timeout or a cancellation
            outcome()

    def deliver(outcome: Callable[[], None]) -> None:
        # The loop may have closed meanwhile: then nobody waits any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, outcome)

    def run() -> None:
        try:
            result = function()
        except BaseException as error:  # handed to the awaiting task, whatever it is
            deliver(partial(done.set_exception, error))
        else:
            deliver(partial(done.set_result, result))

    threading.Thread(target=run, name="encode", daemon=True).start()
    return await asyncio.wait_for(done, timeout_s)


#: How long a stopping worker waits for a batch still being encoded before it exits.
STOP_GRACE_S = 10.0
_exit_timer: threading.Timer | None = None


def exit_after_grace(items: int) -> None:
    """End the process ``STOP_GRACE_S`` from now if it has not ended by then (once).

    Called when the worker is asked to stop while a batch is still encoding. Faust waits
    for the batch before it commits and stops, and a batch stuck in native code may never
    end. Exiting at once, like a crash, commits nothing of the batch: its records are read
    again at the next start and, named by the poison guard's marker, encoded one at a
    time (one that hangs again ends as ``encode-timeout``)."""
    global _exit_timer
    if _exit_timer is not None:
        return
    log.warning(
        "stopping with %d items still encoding: exiting in %g s unless they finish, without "
        "committing them (they are retried one at a time at the next start)",
        items,
        STOP_GRACE_S,
    )

    def exit_now() -> None:
        log.error("items still encoding %g s after the stop: exiting now", STOP_GRACE_S)
        logging.shutdown()
        os._exit(EXIT_STUCK_AT_STOP)

    _exit_timer = threading.Timer(STOP_GRACE_S, exit_now)
    _exit_timer.daemon = True
    _exit_timer.start()


def cancel_exit() -> None:
    """The batch ended within the grace: the worker stops as usual, committing it."""
    global _exit_timer
    if _exit_timer is not None:
        _exit_timer.cancel()
        _exit_timer = None


#: The exit status of a worker that stopped with a batch still encoding.
EXIT_STUCK_AT_STOP = 75


class OversizedOutput(ValueError):
    """A message the worker was about to send is larger than the producer may send."""


class NonFiniteState(NonFiniteError):
    """A number about to be stored is NaN or infinite."""


def clip(text: object, limit: int = MAX_QUOTED_CHARS) -> str:
    """``text`` as a string of at most about ``limit`` characters, saying how long it was.

    >>> clip("abc")
    'abc'
    >>> clip("x" * 1000, 10)
    'xxxxxxxxxx... (1,000 chars)'
    """
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} chars)"


def clip_key(key: str | None) -> str | None:
    """A key as a dead letter may carry it: cut to ``MAX_KEY_BYTES`` bytes of UTF-8."""
    if key is None:
        return None
    encoded = key.encode("utf-8", errors="replace")
    if len(encoded) <= MAX_KEY_BYTES:
        return key
    return encoded[: MAX_KEY_BYTES - 32].decode("utf-8", errors="ignore") + "...(cut)"


def key_too_long(key: str | None) -> str | None:
    """Why a message key is refused, or None when it is within bounds.

    >>> key_too_long("u1") is None, key_too_long("k" * 2000)
    (True, 'message key of 2,000 bytes exceeds 1,024: keys are item or user ids')
    """
    if key is None:
        return None
    size = len(key.encode("utf-8", errors="replace"))
    if size <= MAX_KEY_BYTES:
        return None
    return f"message key of {size:,} bytes exceeds {MAX_KEY_BYTES:,}: keys are item or user ids"


def check_size(
    key: bytes | None,
    value: bytes | int,
    max_request_bytes: int,
    what: str = "output record",
    topic_max_message_bytes: int | None = None,
) -> None:
    """Raise ``OversizedOutput`` for a record the producer would refuse (``value``: its
    bytes, or how many there will be), or the broker would: over its topic's
    ``max.message.bytes`` (``topic_max_message_bytes``, when known), less a batch's framing.

    >>> check_size(b"ann", b"x" * 700, 1_048_576, topic_max_message_bytes=1_000)
    >>> try:
    ...     check_size(b"ann", b"x" * 900, 1_048_576, topic_max_message_bytes=1_000)
    ... except OversizedOutput as error:
    ...     print(str(error)[:60])
    output record of 903 bytes exceeds its topic's max.message.b
    """
    size = (value if isinstance(value, int) else len(value)) + (len(key) if key else 0)
    if size > max_request_bytes - RECORD_OVERHEAD_BYTES:
        raise OversizedOutput(
            f"{what} of {size:,} bytes exceeds the producer's limit "
            f"({max_request_bytes:,} bytes less {RECORD_OVERHEAD_BYTES:,} of framing)"
        )
    if topic_max_message_bytes is not None and size > topic_room(topic_max_message_bytes):
        raise OversizedOutput(
            f"{what} of {size:,} bytes exceeds its topic's max.message.bytes "
            f"({topic_max_message_bytes:,} bytes less {BATCH_FRAMING_BYTES:,} of batch "
            "framing): raise the topic's max.message.bytes"
        )


def topic_room(max_message_bytes: int) -> int:
    """The most key and value bytes one record may hold on a topic whose
    ``max.message.bytes`` is ``max_message_bytes``: the broker applies the limit to the
    whole batch a record travels in (a v2 batch's header is 61 bytes, a record's own
    framing at most about 40 more), and refuses the batch with every record in it."""
    return max_message_bytes - BATCH_FRAMING_BYTES


def require_finite(value: Any, what: str) -> None:
    """Raise ``NonFiniteState`` if ``value`` (numbers, arrays, nested dicts and lists)
    holds a NaN or an infinity: the check made at every write of user or item state.

    >>> require_finite({"a": [1.0, 2], "b": {"c": 3.5}}, "state")
    >>> require_finite({"a": [1.0, float("inf")]}, "state")
    Traceback (most recent call last):
    ...
    streams.bounds.NonFiniteState: state holds a non-finite number at a[1]
    """
    if _finite(value):  # the usual case, without building a path per value
        return
    where = _non_finite_at(value, "")
    if where is not None:
        raise NonFiniteState(f"{what} holds a non-finite number at {where or '(value)'}")


#: Types whose values are never NaN or infinite.
_ALWAYS_FINITE = frozenset({str, int, bool, type(None)})


def _finite(value: Any) -> bool:
    """Whether ``value`` holds no NaN or infinity, for the plain dicts, lists and floats
    most of a state is; anything else is left to ``_non_finite_at``."""
    kind = type(value)
    if kind is float:
        return math.isfinite(value)
    if kind in _ALWAYS_FINITE:
        return True
    if kind is dict:
        return all(_finite(item) for item in value.values())
    if kind is list and len(value) < 16:  # longer lists may be vectors: numpy checks them
        return all(_finite(item) for item in value)
    return _non_finite_at(value, "") is None


def _non_finite_at(value: Any, path: str) -> str | None:
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, np.ndarray | np.generic):
        array = np.asarray(value)
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            return path
        if array.dtype.kind == "O":
            return _non_finite_at(array.tolist(), path)
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if type(item) in _ALWAYS_FINITE:  # most of a state: ids, counts (no path built)
                continue
            found = _non_finite_at(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
        return None
    if isinstance(value, list | tuple) and value and type(value[0]) is float:
        # A vector stored as a list (a CF factor, a content profile): checked at once.
        try:
            numbers = np.asarray(value)
        except ValueError:  # ragged: looked at item by item below
            numbers = np.zeros(0, dtype=object)
        if numbers.dtype.kind == "f" and numbers.ndim == 1:
            bad = np.flatnonzero(~np.isfinite(numbers))
            return f"{path}[{bad[0]}]" if len(bad) else None
    if isinstance(value, list | tuple | set | frozenset):
        for n, item in enumerate(value):
            if type(item) in _ALWAYS_FINITE:
                continue
            found = _non_finite_at(item, f"{path}[{n}]")
            if found is not None:
                return found
        return None
    if hasattr(value, "__dict__"):  # a source's own state object
        return _non_finite_at(vars(value), path)
    return None
