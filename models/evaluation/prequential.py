"""Prequential (test-then-train) evaluation of several recommenders over one event log.

For every event, in time order: each configuration ranks the user's unseen items
*before* anything learns from the event; the event's item is scored against that list
(a hit if it is in the top K); only then do the sources learn the event. Sources are
shared by the configurations (each blends the same source scores with its own weights),
so one pass evaluates them all on exactly the same state.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from models.blend import Blend, BlendSet, unseen
from models.evaluation.datasets import ReplayEvent
from models.evaluation.metrics import RankingMetrics
from models.learned_blend import LearnedBlend, rows_in_order
from models.signals import signal_weight
from models.sources.base import Catalog, Source, UserHistory, grown

#: An item (or user) is cold while it has had fewer interactions than this.
COLD_THRESHOLD = 5


class SeenIndexes:
    """Each user's seen item indexes in a growing array, beside their ``UserHistory``.

    The candidate mask is then one numpy write per event, not a walk over the history's
    items (8% of a 10k-item replay by event 85,000, histories of thousands of items).
    A history at its bound forgets its oldest items: the walk then (it stays exact).

    >>> history, seen = UserHistory(), SeenIndexes()
    >>> for item in [2, 0, 2]:
    ...     seen.add("u", item, history); history.add(item, 1.0)
    >>> seen.unseen("u", history, 4).tolist()
    [False, True, False, True]
    """

    def __init__(self) -> None:
        #: user -> (a buffer of item indexes, how many of them are in use).
        self._seen: dict[str, tuple[np.ndarray, int]] = {}

    def add(self, user: str, item: int, history: UserHistory) -> None:
        """Before ``history.add(item, ...)``."""
        if item in history.seen:
            return
        items, count = self._seen.get(user) or (np.zeros(8, dtype=np.int64), 0)
        if count == len(items):
            items = np.concatenate([items, np.zeros_like(items)])
        items[count] = item
        self._seen[user] = (items, count + 1)

    def unseen(self, user: str, history: UserHistory, n_items: int) -> np.ndarray:
        items, count = self._seen.get(user) or (np.zeros(0, dtype=np.int64), 0)
        if len(history.seen) >= history.max_seen or count != len(history.seen):
            return unseen(n_items, history.seen)
        candidates = np.ones(n_items, dtype=bool)
        items = items[:count]
        candidates[items[items < n_items]] = False
        return candidates


class OutOfOrderError(ValueError):
    """An event older than the one before it: the replay would let the past see the future."""


@dataclass
class ConfigResult:
    overall: RankingMetrics
    cold_items: RankingMetrics
    cold_users: RankingMetrics
    windows: list[RankingMetrics]
    recommended: set[int] = field(default_factory=set)
    #: Events whose item nobody had engaged with before (in this replay).
    zero_click: RankingMetrics | None = None
    #: Events whose item was uploaded during the replay (``uploaded_at`` given).
    uploaded_during: RankingMetrics | None = None
    #: Per item group (``item_groups`` given, e.g. the modalities an item has).
    by_group: dict[str, RankingMetrics] = field(default_factory=dict)

    def coverage(self, catalog_size: int) -> float:
        return len(self.recommended) / catalog_size if catalog_size else float("nan")


@dataclass
class Evaluation:
    k: int
    events: int
    catalog_size: int
    seconds: float
    results: dict[str, ConfigResult]
    window_ends: list[float]
    interrupted: bool = False
    cold_threshold: int = COLD_THRESHOLD

    def table(self) -> list[dict[str, float | str]]:
        rows = []
        for name, r in self.results.items():
            rows.append(
                {
                    "configuration": name,
                    f"HitRate@{self.k}": r.overall.hit_rate,
                    f"NDCG@{self.k}": r.overall.ndcg,
                    f"MRR@{self.k}": r.overall.mrr,
                    "coverage": r.coverage(self.catalog_size),
                    f"cold items HitRate@{self.k}": r.cold_items.hit_rate,
                    f"cold users HitRate@{self.k}": r.cold_users.hit_rate,
                    f"zero-click HitRate@{self.k}": (
                        r.zero_click.hit_rate if r.zero_click else float("nan")
                    ),
                    # Only where items have upload times: a replay without them has none.
                    **(
                        {f"uploaded-during HitRate@{self.k}": r.uploaded_during.hit_rate}
                        if r.uploaded_during is not None
                        else {}
                    ),
                }
            )
        return rows


def prequential(
    events: Iterable[ReplayEvent],
    catalog: Catalog,
    sources: Mapping[str, Source],
    configurations: Mapping[str, Blend | LearnedBlend],
    k: int = 10,
    windows: int = 10,
    total: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    cold_threshold: int = COLD_THRESHOLD,
    uploaded_at: Mapping[str, float] | None = None,
    item_groups: Mapping[str, str] | None = None,
    after_event: Callable[[ReplayEvent], None] | None = None,
) -> Evaluation:
    """Replay ``events`` test-then-train; returns metrics per configuration.

    ``catalog`` holds the items known up front (an event's unknown item is added when it
    first appears). A KeyboardInterrupt stops the replay and returns what was measured
    so far, flagged ``interrupted``. Items and users are cold while they have had fewer
    than ``cold_threshold`` interactions. With ``uploaded_at`` (item id -> upload time),
    an item is a candidate only from its upload on, and events on items uploaded after
    the first event are also measured apart. With ``item_groups`` (item id -> a label,
    such as the modalities the item has), events are also measured per item group.
    ``after_event`` is called with each event once everything learned it (a learned
    fusion refits there: ``models/evaluation/fusion_refits.py``).
    """
    needed = {name for blend in configurations.values() for name in blend.sources}
    unknown = needed - set(sources)
    if unknown:
        raise ValueError(f"configurations use unknown sources {sorted(unknown)}")
    events = list(events) if total is None else events
    total = len(events) if total is None else total  # type: ignore[arg-type]
    window_size = max(1, math.ceil(total / windows)) if total else 1
    results = {
        name: ConfigResult(
            RankingMetrics(k),
            RankingMetrics(k),
            RankingMetrics(k),
            [],
            zero_click=RankingMetrics(k),
            uploaded_during=RankingMetrics(k) if uploaded_at is not None else None,
        )
        for name in configurations
    }
    # All fixed configurations are ranked at once: the same ranks as each Blend.top, for
    # a fraction of the calls (the replay's largest cost with eight configurations).
    # Learned blends rank on the same normalised scores, each on its own weights, and
    # learn from the event after it is scored.
    fixed = {n: b for n, b in configurations.items() if isinstance(b, Blend)}
    learned = {n: b for n, b in configurations.items() if isinstance(b, LearnedBlend)}
    order = [*fixed, *learned]
    blends = BlendSet(fixed, sorted(needed))
    recommended = np.zeros((len(configurations), len(catalog)), dtype=bool)
    histories: dict[str, UserHistory] = defaultdict(UserHistory)
    seen = SeenIndexes()
    item_events: dict[int, int] = defaultdict(int)
    window_ends: list[float] = []
    last_ts = -math.inf
    first_ts: float | None = None
    upload_ts = np.zeros(0)
    started = time.perf_counter()
    count = 0
    interrupted = False
    # Per event, BLAS works on vectors of a few thousand numbers: a second thread only
    # adds synchronisation (ML-100k: 1,883 events/s on one thread, 1,491 on two).
    blas_threads = threadpool_limits(1)
    try:
        for event in events:
            if event.ts < last_ts:
                raise OutOfOrderError(
                    f"event {event.event_id or count} at ts={event.ts} comes after ts={last_ts}: "
                    "replay events in time order"
                )
            last_ts = event.ts
            item = catalog.add(event.item)
            history = histories[event.user]
            n_items = len(catalog)
            scores = {
                name: sources[name].score(event.user, history, n_items, event.ts) for name in needed
            }
            window = count // window_size
            if window == len(window_ends):
                window_ends.append(event.ts)
                for result in results.values():
                    result.windows.append(RankingMetrics(k))
            window_ends[window] = event.ts
            cold_item = item_events[item] < cold_threshold
            cold_user = history.events < cold_threshold
            zero_click = item_events[item] == 0
            group = item_groups.get(event.item) if item_groups is not None else None
            candidates = seen.unseen(event.user, history, n_items)
            first_ts = event.ts if first_ts is None else first_ts
            new_item = False
            if uploaded_at is not None:
                if len(upload_ts) < n_items:
                    upload_ts = np.array(
                        [uploaded_at.get(i, -math.inf) for i in catalog.ids], dtype=np.float64
                    )
                candidates &= upload_ts[:n_items] <= event.ts
                new_item = bool(upload_ts[item] > first_ts)
            rows = blends.normalise(scores, candidates)
            totals = blends.totals(rows, candidates)
            if recommended.shape[1] < n_items:
                recommended = grown(recommended, n_items, axes=(1,))
            ranks: list[int | None] = []
            if fixed:
                kth = blends.mark_tops(totals, k, recommended[: len(fixed)])
                ranks = blends.ranks(totals, item, k, kth)
            steps = []
            for row, blend in enumerate(learned.values(), start=len(fixed)):
                ordered = rows_in_order(rows, blends.sources, blend.sources)
                context = blend.catalog_context(history.events, n_items, event.ts)
                total = blend.totals(ordered, candidates, context)
                top = blend.top(total, k)
                recommended[row, top] = True
                hit = np.flatnonzero(top == item)
                ranks.append(int(hit[0]) if len(hit) else None)
                steps.append((blend, ordered, context, total))
            for name, rank in zip(order, ranks, strict=True):
                result = results[name]
                result.overall.add(rank)
                result.windows[window].add(rank)
                if cold_item:
                    result.cold_items.add(rank)
                if cold_user:
                    result.cold_users.add(rank)
                if zero_click and result.zero_click is not None:
                    result.zero_click.add(rank)
                if new_item and result.uploaded_during is not None:
                    result.uploaded_during.add(rank)
                if group is not None:
                    result.by_group.setdefault(group, RankingMetrics(k)).add(rank)
            for blend, ordered, context, total in steps:
                blend.learn_one(ordered, candidates, context, item, event.ts, k, count, total=total)
            weight = signal_weight(event.kind, event.value)
            for source in sources.values():
                source.learn_one(event.user, item, weight, event.ts, history)
            seen.add(event.user, item, history)
            history.add(item, weight)
            item_events[item] += 1
            count += 1
            if after_event is not None:
                after_event(event)
            if progress is not None and count % 1000 == 0:
                progress(count, total)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        blas_threads.restore_original_limits()
    for name, row in zip(order, recommended, strict=True):
        results[name].recommended = {int(i) for i in np.flatnonzero(row)}
    return Evaluation(
        k=k,
        events=count,
        catalog_size=len(catalog),
        seconds=time.perf_counter() - started,
        results=results,
        window_ends=window_ends,
        interrupted=interrupted,
        cold_threshold=cold_threshold,
    )


def sources_read(
    configurations: Mapping[str, Blend | LearnedBlend], sources: Mapping[str, Source]
) -> set[str]:
    """The sources ``configurations`` blend, and those whose item side they read
    (``Source.reads``): what a replay of them must learn."""
    read = {name for blend in configurations.values() for name in blend.sources}
    return read | {other for name in read if name in sources for other in sources[name].reads}


def single_source_configurations(names: Sequence[str]) -> dict[str, Blend]:
    return {name: Blend({name: 1.0}) for name in names}
