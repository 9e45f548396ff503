"""What the worker counts and times, for its stats view and for Prometheus.

Counters are plain ``collections.Counter``s (the stats view reads them) exposed to
Prometheus by a collector at scrape time, so nothing is counted twice; consumer lag is
computed at scrape time too, from the offsets Faust's monitor tracks. Each worker has
a registry of its own, so several apps in one process (tests) never share series.

>>> metrics = WorkerMetrics(lag=lambda: {("interactions", 0): 3})
>>> metrics.processed["interactions"] += 2
>>> metrics.encode_batch_size.observe(16)
>>> text = metrics.exposition().decode()
>>> 'streamrec_events_processed_total{topic="interactions"} 2.0' in text
True
>>> 'streamrec_consumer_lag{partition="0",topic="interactions"} 3.0' in text
True
>>> 'streamrec_kafka_compat_fired_total{defence="catch_up_read"}' in text
True
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.kafka_compat import counts as compat_counts

#: The content type of ``exposition()``: Prometheus reads plain text as its text format
#: (the web server refuses a charset parameter here; the body is ASCII anyway).
CONTENT_TYPE = "text/plain"

LagReader = Callable[[], Mapping[tuple[str, int], int]]

#: A click-to-list time is measured from the record's timestamp on the broker, which the
#: producer sets (CreateTime): one further back than a week (Kafka's default retention)
#: or further ahead than a minute of clock skew is a producer's clock or a crafted value,
#: not a latency, and is not measured.
MAX_MEASURED_LATENCY_S = 7 * 24 * 3600.0
MAX_CLOCK_AHEAD_S = 60.0


def click_latency(broker_timestamp: float | None, now: float) -> float | None:
    """Seconds from a record's broker timestamp to ``now``, or None where the timestamp
    says nothing about latency: none (Kafka's -1, or 0), more than a week old, or more
    than a minute ahead. A timestamp of 1 ms after the epoch had put 1.7e9 s into the
    histogram's sum and the stats' p99 (``tests/unit/test_hostile_records.py``).

    >>> click_latency(999.5, 1000.0), click_latency(1000.5, 1000.0)
    (0.5, 0.0)
    >>> [click_latency(t, 1e9) for t in (None, -0.001, 0.0, 0.001, 1e9 + 3600, 1e15)]
    [None, None, None, None, None, None]
    """
    if broker_timestamp is None or broker_timestamp <= 0:
        return None
    seconds = now - broker_timestamp
    if not -MAX_CLOCK_AHEAD_S <= seconds <= MAX_MEASURED_LATENCY_S:  # NaN fails too
        return None
    return max(seconds, 0.0)


class WorkerMetrics:
    def __init__(self, lag: LagReader) -> None:
        self.processed: Counter[str] = Counter()
        self.dead_letters: Counter[str] = Counter()
        #: Records lost to a topic's limits, per topic (streams/outbox.py).
        self.sends_refused: Counter[str] = Counter()
        #: CF item vectors written to the vector store (streams/replica.py).
        self.cf_vectors_published = 0
        self.registry = CollectorRegistry()
        self.encode_batch_size = Histogram(
            "streamrec_encode_batch_size",
            "Items per encoded upload batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.encode_seconds = Histogram(
            "streamrec_encode_seconds",
            "Time to fetch, decode and encode one upload batch",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.click_to_recommendation = Histogram(
            "streamrec_click_to_recommendation_seconds",
            "From an interaction's timestamp on the broker to its recommendations being sent",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.event_loop_stall = Histogram(
            "streamrec_event_loop_stall_seconds",
            "How late the event loop woke a task, after the worker was ready",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        #: The latest click-to-recommendation times, for percentiles in the stats view.
        self.recent_latencies: deque[float] = deque(maxlen=1000)
        self.registry.register(_CountsAndLag(self, lag))

    def observe_click_to_recommendation(self, seconds: float) -> None:
        self.click_to_recommendation.observe(seconds)
        self.recent_latencies.append(seconds)

    def latency_percentiles(self) -> dict[str, float | int | None]:
        """p50 and p99 in milliseconds over the latest (up to 1,000) lists sent.

        >>> metrics = WorkerMetrics(lag=dict)
        >>> for ms in range(1, 101):
        ...     metrics.observe_click_to_recommendation(ms / 1000)
        >>> metrics.latency_percentiles()
        {'count': 100, 'p50_ms': 50.5, 'p99_ms': 99.0}
        """
        if not self.recent_latencies:
            return {"count": 0, "p50_ms": None, "p99_ms": None}
        values = np.array(self.recent_latencies) * 1000
        return {
            "count": len(values),
            "p50_ms": round(float(np.percentile(values, 50)), 1),
            "p99_ms": round(float(np.percentile(values, 99)), 1),
        }

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _CountsAndLag(Collector):
    def __init__(self, metrics: WorkerMetrics, lag: LagReader) -> None:
        self.metrics = metrics
        self.lag = lag

    def collect(self) -> Iterator[Metric]:
        processed = CounterMetricFamily(
            "streamrec_events_processed", "Messages processed, per source topic", labels=["topic"]
        )
        for topic, count in sorted(self.metrics.processed.items()):
            processed.add_metric([topic], count)
        yield processed
        dead = CounterMetricFamily(
            "streamrec_dead_letters", "Messages dead-lettered, per reason", labels=["reason"]
        )
        for reason, count in sorted(self.metrics.dead_letters.items()):
            dead.add_metric([reason], count)
        yield dead
        refused = CounterMetricFamily(
            "streamrec_sends_refused",
            "Records lost to a topic's limits, per topic: refused by the broker after the "
            "worker sent them, or a dead letter too large to send even cut",
            labels=["topic"],
        )
        for topic, count in sorted(self.metrics.sends_refused.items()):
            refused.add_metric([topic], count)
        yield refused
        yield CounterMetricFamily(
            "streamrec_cf_vectors_published",
            "CF item vectors written to the vector store for candidate retrieval",
            value=self.metrics.cf_vectors_published,
        )
        # Every defence, fired or not, so an alert on its rate needs no absent() clause.
        compat = CounterMetricFamily(
            "streamrec_kafka_compat_fired",
            "Times a Kafka compatibility defence fired in this worker (streams/kafka_compat/)",
            labels=["defence"],
        )
        for defence in sorted(compat_counts.DEFENCES):
            compat.add_metric([defence], compat_counts.fired[defence])
        yield compat
        lag = GaugeMetricFamily(
            "streamrec_consumer_lag",
            "Messages in a partition not yet committed by this worker",
            labels=["topic", "partition"],
        )
        for (topic, partition), behind in sorted(self.lag().items()):
            lag.add_metric([topic, str(partition)], behind)
        yield lag
