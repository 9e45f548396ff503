"""How often each compatibility defence fired in this process (exposed by streams/metrics.py
as ``streamrec_kafka_compat_fired_total{defence=...}``, so operators can alert on them
and tests assert them rather than log lines).

Process-wide, as the class patches are: a worker is one process. No Faust import here,
so the metrics module reads it cheaply.
"""

from __future__ import annotations

from collections import Counter

#: What each defence counts, by its label.
DEFENCES = {
    "empty_fetch_pause": "pauses after an empty fetch (noida-db answers empty fetches at once)",
    "seek_to_beginning": "partitions sought to their beginning after a seek to committed "
    "offsets that aiokafka skipped (committed at 0 or never)",
    "static_leave": "LeaveGroup requests sent by a static member on a clean stop",
    "empty_assignment_rejoin": "group joins tried again after a SyncGroup answer with no "
    "assignment (noida-db)",
    "idle_poll": "rounds with no partition to fetch counted as polls (robinhood/faust#517)",
    "watchdog_reread": "source partitions read again from the committed offset after a stall",
    "recovery_reread": "changelog partitions read again during a stalled table recovery",
    "catch_up_read": "ranges of offsets skipped before the agent, read directly",
    "catch_up_record": "records read by those catch-up reads",
    "undecodable_batch": "record batches skipped because they could not be decoded "
    "(dead-lettered as undecodable-batch)",
}

fired: Counter[str] = Counter()


def fire(defence: str, times: int = 1) -> None:
    """Count ``times`` firings of ``defence`` (one of ``DEFENCES``)."""
    if defence not in DEFENCES:
        raise KeyError(f"unknown defence {defence!r}: add it to DEFENCES")
    fired[defence] += times
