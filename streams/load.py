"""Driving load through the broker: produce interactions at a rate, time each one's list.

Click-to-recommendation latency is the time from producing an interaction to consuming
the recommendations message it triggered (matched by ``trigger_event_id``). An
interaction the worker dead-letters (say, on an item it does not have) is answered by
its dead letter instead, counted apart, so nothing waits for a list that cannot come.
Used by ``streamrec load`` and by ``tests/bench/bench_latency.py``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.events import DeadLetter, Recommendations
from streams.settings import Settings


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def list_answering(value: bytes | None, user_of: Mapping[str, str]) -> Recommendations | None:
    """The list in ``value`` if it answers an event of ``user_of`` (event id -> user), else
    None: anyone can write the topic, and a record that is no list killed the reader, a
    list for another user carrying our event id was scored as served.

    >>> list_answering(b"[[[", {}) is None
    True
    """
    try:
        message = Recommendations.model_validate_json(value or b"")
    except ValueError:
        return None
    return message if user_of.get(message.trigger_event_id) == message.user_id else None


def letter_of(value: bytes | None, topic: str) -> tuple[str, str] | None:
    """(event id, reason) of a dead letter of an interaction on ``topic``, else None: a
    record that is no letter, or one whose raw value is cut short or any crafted text
    (JSON nested past the parser's depth killed the reader)."""
    try:
        letter = DeadLetter.model_validate_json(value or b"")
        event_id = json.loads(letter.raw).get("event_id")
    except Exception:
        return None
    if letter.source_topic != topic or not isinstance(event_id, str):
        return None
    return event_id, letter.reason


def drive(
    settings: Settings,
    events: Sequence[dict[str, Any]],
    rate: float | None,
    timeout_s: float = 120.0,
    progress: Any = None,
    lists: dict[str, list[str]] | None = None,
    answered: Any = None,
    pause_at: Mapping[int, Callable[[], None]] | None = None,
) -> dict[str, Any]:
    """Produce ``events`` (Interaction JSON objects) at ``rate`` per second (None: as fast
    as possible) and wait for their recommendations; returns the latency figures and, in
    ``lists`` when given, the recommended item ids by the event id that triggered them.
    ``progress`` and ``answered`` are called with how many were sent and answered so far.
    ``pause_at[n]`` is called before event ``n`` is sent, once every earlier event was
    answered (items uploaded between events: no event sent before them sees them).
    ``dead_lettered`` in the result counts the events answered by a dead letter, and
    ``dead_letter_reasons`` counts them by reason."""
    sent_at: dict[str, float] = {}
    user_of: dict[str, str] = {}  # event id -> its user: whose list answers it
    latencies: list[float] = []
    refused: dict[str, str] = {}  # event id -> the dead letter's reason

    def answered_so_far() -> int:
        return len(latencies) + len(refused)

    listening = threading.Event()
    done = threading.Event()

    def refuse(value: bytes | None) -> None:
        """Count a dead letter of one of our interactions as its answer."""
        letter = letter_of(value, settings.topic_interactions)
        if letter is not None and letter[0] in sent_at:
            del sent_at[letter[0]]
            refused[letter[0]] = letter[1]

    def consume() -> None:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.effective_bootstrap_servers,
            enable_auto_commit=False,
            **settings.kafka_client_options(),
        )
        partitions = [
            TopicPartition(topic, p)
            for topic in (settings.topic_recommendations, settings.topic_dead_letters)
            for p in consumer.partitions_for_topic(topic) or []
        ]
        consumer.assign(partitions)
        consumer.seek_to_end(*partitions)
        for tp in partitions:
            consumer.position(tp)  # resolve "end" now, before anything is produced
        listening.set()
        while not done.is_set() and answered_so_far() < len(events):
            for records in consumer.poll(timeout_ms=100).values():
                now = time.perf_counter()
                for record in records:
                    if record.topic == settings.topic_dead_letters:
                        refuse(record.value)
                        continue
                    message = list_answering(record.value, user_of)
                    if message is None or message.trigger_event_id not in sent_at:
                        continue
                    trigger = message.trigger_event_id
                    latencies.append((now - sent_at.pop(trigger)) * 1000)
                    if lists is not None:
                        lists[trigger] = [item.item_id for item in message.items]
                if answered is not None:
                    answered(answered_so_far())
        consumer.close()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    listening.wait(30)
    producer = KafkaProducer(
        bootstrap_servers=settings.effective_bootstrap_servers,
        acks="all",
        linger_ms=0,
        **settings.kafka_client_options(),
    )
    interval = 1.0 / rate if rate else 0.0
    started = time.perf_counter()
    for n, event in enumerate(events):
        if pause_at and n in pause_at:
            paused = time.perf_counter()
            while answered_so_far() < n and time.perf_counter() < paused + timeout_s:
                time.sleep(0.05)
            pause_at[n]()
            started += time.perf_counter() - paused  # the pause is not load: rate and timing
        delay = started + n * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        user_of[event["event_id"]] = event["user_id"]
        sent_at[event["event_id"]] = time.perf_counter()
        producer.send(
            settings.topic_interactions,
            key=event["user_id"].encode(),
            value=json.dumps(event).encode(),
        )
        if progress is not None:
            progress(n + 1)
    producer.flush()
    producer.close()
    reader.join(timeout=timeout_s)
    done.set()
    elapsed = time.perf_counter() - started
    return {
        "events_sent": len(events),
        "recommendations_received": len(latencies),
        "dead_lettered": len(refused),
        "dead_letter_reasons": dict(Counter(refused.values())),
        "target_rate_per_s": rate or 0,
        "sustained_rate_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(max(latencies), 1) if latencies else float("nan"),
    }
