"""Scoring the lists a deployment served, as the user met them.

A streaming recommender answers every interaction with a new list, and that list is
what the user has in front of them at their next interaction. So each event is scored
against the list sent after the same user's previous event: a hit when its item is in
the top K. A user's first event has no list before it and is not scored; an event
whose previous list never came (the previous one was dead-lettered) counts as a miss.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from models.evaluation.metrics import RankingMetrics


def score_served(
    events: Iterable[tuple[str, str, str]],
    lists: Mapping[str, Sequence[str]],
    k: int,
    zero_click: bool = False,
) -> RankingMetrics:
    """Metrics of ``events`` ((event id, user, item), in the order sent) against ``lists``
    (recommended item ids by the event id that triggered them); with ``zero_click``, of
    the events whose item no earlier event engaged with.

    >>> events = [("e1", "ann", "a"), ("e2", "ann", "b"), ("e3", "bob", "a"), ("e4", "ann", "c")]
    >>> lists = {"e1": ["b", "c"], "e2": ["d", "e"], "e3": ["b"]}
    >>> metrics = score_served(events, lists, k=2)
    >>> metrics.events, metrics.hit_rate   # e2 is in e1's list; e4 is not in e2's
    (2, 0.5)
    >>> score_served(events, lists, k=2, zero_click=True).events  # e3's a was engaged by e1
    2
    """
    previous: dict[str, str] = {}
    engaged: set[str] = set()
    metrics = RankingMetrics(k)
    for event_id, user, item in events:
        before = previous.get(user)
        if before is not None and not (zero_click and item in engaged):
            served = list(lists.get(before, ()))[:k]
            metrics.add(served.index(item) if item in served else None)
        previous[user] = event_id
        engaged.add(item)
    return metrics
