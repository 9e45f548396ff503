"""What an operator looks at: topics with their lag, and the tail of a topic.

Plain kafka-python clients (like ``streams/admin.py``), used by ``streamrec status``,
``streamrec dead-letters`` and ``streamrec recommend --follow``.
"""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from streams.admin import topic_names
from streams.settings import Settings


@dataclass(frozen=True)
class PartitionStatus:
    topic: str
    partition: int
    end_offset: int
    committed: int | None  # the group's committed offset (0 if never); None: not consumed

    @property
    def lag(self) -> int | None:
        """Records the group has not committed yet (None where it does not read the topic)."""
        return None if self.committed is None else max(self.end_offset - self.committed, 0)


def consumed_topics(settings: Settings) -> set[str]:
    """Topics the worker group consumes and commits, so their lag means something. The
    others are outputs, or item-updates, which every worker's replica reads whole outside
    the group (its progress is the worker's ``item_updates_behind``)."""
    return {settings.topic_items, settings.topic_interactions}


def topic_status(settings: Settings, timeout_s: float = 10.0) -> list[PartitionStatus]:
    """End offsets of every configured topic and the group's committed offsets on them."""
    # A consumer in the worker's group that never subscribes reads the group's committed
    # offsets without joining it (no rebalance of the running workers).
    consumer = KafkaConsumer(
        bootstrap_servers=settings.effective_bootstrap_servers,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
        request_timeout_ms=int(timeout_s * 1000),
        **settings.kafka_client_options(),
    )
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in topic_names(settings)
            for p in sorted(consumer.partitions_for_topic(topic) or [])
        ]
        ends = consumer.end_offsets(partitions) if partitions else {}
        consumed = consumed_topics(settings)
        return [
            PartitionStatus(
                tp.topic,
                tp.partition,
                ends[tp],
                (consumer.committed(tp) or 0) if tp.topic in consumed else None,
            )
            for tp in partitions
        ]
    finally:
        consumer.close()


#: C0 and C1 controls; Unicode's bidirectional controls (Bidi_Control: they reorder the
#: rest of a terminal line, so a title could make a score or an id read as another,
#: the "Trojan Source" trick); line and paragraph separators; and the characters that
#: print as nothing, so two ids look alike (default ignorable: soft hyphen, zero width
#: space, word joiner, invisible operators, fillers, BOM, tags); emoji joiners and
#: variation selectors are left, as emoji need them.
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\xad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b"
    "\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\u3164\ufeff\uffa0"
    "\U000e0000-\U000e007f]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def printable(text: object, limit: int | None = None) -> str:
    """``text`` safe to print on an operator's terminal: C0/C1 control characters (ESC
    sequences, OSC 8 links, bells, newlines) shown as ``\\x1b``-style escapes, never
    interpreted, and bidirectional controls, line separators and invisible characters as
    ``\\u202e``-style ones; cut to ``limit`` characters (with "...") where given.

    >>> print(printable("evil\u202e1.0 \ufeffann\u2028"))
    evil\\u202e1.0 \\ufeffann\\u2028
    """
    shown = _CONTROL.sub(_escape, str(text))
    if limit is not None and len(shown) > limit:
        shown = shown[: max(limit - 3, 0)] + "..."
    return shown


def worker_readiness(settings: Settings, timeout_s: float = 2.0) -> tuple[bool | None, str]:
    """The local worker's ``/ready/`` answer: (ready, reason); (None, why) if unreachable
    or if whatever answers on the port is not a streamrec worker."""
    url = f"http://{settings.web_host}:{settings.web_port}/ready/"
    not_a_worker = f"port {settings.web_port} answers but not as a streamrec worker"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as error:  # 503 carries the reason
        try:
            answer = json.loads(error.read())
        except (ValueError, RecursionError, OSError, http.client.HTTPException):
            return False, f"HTTP {error.code}"
        if not isinstance(answer, dict):
            return False, f"HTTP {error.code}"
    except (ValueError, RecursionError, http.client.HTTPException) as error:
        # not JSON, not HTTP (another service on the port), a broken answer
        return None, f"{not_a_worker}: {printable(error, 120)}"
    except OSError as error:
        return None, f"no worker answers on {url} ({getattr(error, 'reason', error)})"
    if not isinstance(answer, dict):
        return None, f"{not_a_worker}: its /ready/ answer is a JSON {type(answer).__name__}"
    return bool(answer.get("ready")), printable(answer.get("reason", ""), 200)


def tail(
    settings: Settings,
    topic: str,
    last: int | None = None,
    follow: bool = False,
    idle_timeout_s: float = 2.0,
    on_caught_up: Callable[[], None] = lambda: None,
) -> Iterator[tuple[str | None, bytes]]:
    """(key, value) of a topic's records: the ``last`` N per partition (all if None),
    then, with ``follow``, each new one as it arrives (until interrupted). One consumer
    reads both, so no record produced in between is missed; ``on_caught_up`` is called
    once, when the records that were there at the start have been yielded."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.effective_bootstrap_servers,
        enable_auto_commit=False,
        **settings.kafka_client_options(),
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        if not partitions:
            raise LookupError(
                f"topic {topic!r} does not exist on {settings.effective_bootstrap_servers}"
            )
        consumer.assign(partitions)
        ends = consumer.end_offsets(partitions)
        starts = consumer.beginning_offsets(partitions)
        for tp in partitions:
            first = starts[tp] if last is None else max(starts[tp], ends[tp] - last)
            consumer.seek(tp, first)
        pending = {tp for tp in partitions if consumer.position(tp) < ends[tp]}
        if not pending:
            on_caught_up()
        quiet_since = time.monotonic()
        while follow or pending:
            batch = consumer.poll(timeout_ms=200)
            if batch:
                quiet_since = time.monotonic()
            elif not follow and time.monotonic() - quiet_since > idle_timeout_s:
                break  # records the end offsets promised did not come: stop, do not hang
            for tp, records in batch.items():
                for record in records:
                    key = record.key.decode(errors="replace") if record.key is not None else None
                    yield key, record.value
                if tp in pending and consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
                    if not pending:
                        on_caught_up()
    finally:
        consumer.close()


def describe_dead_letter(value: bytes | None) -> str:
    """One readable line for a dead letter: where it came from, why, and what it was.
    Whatever the record holds (a tombstone, JSON that is not an object, nesting too deep
    to parse, control characters), the answer is a printable line, never an exception."""
    if value is None:
        return "(empty record)"
    try:
        letter: dict[str, Any] = json.loads(value)
        if not isinstance(letter, dict):
            raise ValueError(f"a JSON {type(letter).__name__}, not an object")
    except (ValueError, TypeError, RecursionError):
        return f"(not a dead letter: {printable(repr(value[:200]))})"
    where = printable(
        f"{letter.get('source_topic')}[{letter.get('partition')}]@{letter.get('offset')}", 200
    )
    return (
        f"{printable(letter.get('failed_at', ''), 60)}  {where}  "
        f"key={printable(repr(letter.get('key')), 200)}  "
        f"{printable(letter.get('reason'), 80)}: {printable(letter.get('error'), 300)}\n"
        f"    raw: {printable(letter.get('raw', ''), 120)}"
    )


def dead_letter_json(value: bytes | None) -> str:
    """A dead letter as one line of JSON for ``dead-letters --json``: re-serialised (so
    control characters come out as ``\\u001b`` escapes), or escaped text where the record
    is not JSON; ``(empty record)`` for a tombstone."""
    if value is None:
        return "(empty record)"
    try:
        return json.dumps(json.loads(value))
    except (ValueError, TypeError, RecursionError):
        return f"(not a dead letter: {printable(repr(value[:200]))})"
