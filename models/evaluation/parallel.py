"""One prequential replay split over processes, with the same report.

A replay's configurations share their sources' state (``prequential.py``) and nothing
else, and every source is deterministic: the same events give the same scores whether
or not other configurations are ranked beside it. So the configurations can be split
into groups, each replayed in its own process on fresh copies of the sources it reads,
and the groups' results put together are exactly the one-process replay's
(``tests/unit/test_parallel_evaluation.py`` holds the reports equal). What it costs is
the sources learned once per group that reads them; ``split`` forms the groups so the
slowest one has as little work as it can.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from models.blend import Blend
from models.evaluation.datasets import ReplayEvent
from models.evaluation.prequential import Evaluation, prequential, sources_read
from models.learned_blend import LearnedBlend
from models.sources import Catalog, ItemItemCosine, OnlineBPR, Source
from models.sources.ease import EASE
from models.sources.item_ease import ItemSideEASE

#: Seconds per 1,000 events, rounded from replays of the first 6,000 events of the 10k-item
#: synthetic log with one part at a time: the replay itself (history, masks, metrics),
#: each source (scoring, normalising, learning), each configuration (a learned blend
#: ranks and learns; a fixed blend only sums and ranks what the sources scored).
REPLAY_COST = 0.42
LEARNED_BLEND_COST = 1.4
BLEND_COST = 0.07
SOURCE_COSTS: dict[type, float] = {
    ItemItemCosine: 0.6,
    OnlineBPR: 0.6,
    EASE: 0.22,
    ItemSideEASE: 0.6,  # its refits: estimated from a fit's time (3,000 items, one thread)
}
OTHER_SOURCE_COST = 0.25
#: Up to this many ways to form the groups are all tried; beyond, the groups are filled
#: most costly configuration first.
EXHAUSTIVE_SPLITS = 20_000


def _work(
    names: Sequence[str],
    configurations: Mapping[str, Blend | LearnedBlend],
    sources: Mapping[str, Source],
) -> float:
    """The cost of replaying ``names`` in one process (the constants above)."""
    read = sources_read({name: configurations[name] for name in names}, sources)
    return (
        REPLAY_COST
        + sum(SOURCE_COSTS.get(type(sources[source]), OTHER_SOURCE_COST) for source in read)
        + sum(
            LEARNED_BLEND_COST if isinstance(configurations[name], LearnedBlend) else BLEND_COST
            for name in names
        )
    )


def split(
    configurations: Mapping[str, Blend | LearnedBlend],
    sources: Mapping[str, Source],
    groups: int,
) -> list[list[str]]:
    """The configurations in at most ``groups`` groups such that the costliest group
    costs least, then the groups together: a source read by two groups is learned
    twice, so configurations that read the same sources go together when that pays.

    >>> from models.sources import Popularity, RandomScores
    >>> configurations = {
    ...     "learned": LearnedBlend({"popularity": 1.0}), "pop": Blend({"popularity": 1.0}),
    ...     "random": Blend({"random": 1.0}),
    ... }
    >>> split(configurations, {"popularity": Popularity(), "random": RandomScores()}, 2)
    [['learned'], ['pop', 'random']]
    """
    names = list(configurations)
    if not names:
        return []
    groups = max(1, min(groups, len(names)))

    def cost(assignment: Sequence[int]) -> tuple[float, float]:
        members = [
            [n for n, g in zip(names, assignment, strict=True) if g == group]
            for group in range(groups)
        ]
        works = [_work(m, configurations, sources) for m in members if m]
        return max(works), sum(works)

    if groups ** (len(names) - 1) <= EXHAUSTIVE_SPLITS:
        # The first configuration in group 0: the other orders of the groups are the same.
        choices = ((0, *rest) for rest in itertools.product(range(groups), repeat=len(names) - 1))
        best = min(choices, key=cost)
    else:
        assignment: dict[str, int] = {}
        by_cost = sorted(names, key=lambda n: -_work([n], configurations, sources))
        for name in by_cost:
            options = []
            for group in range(groups):
                trial = {**assignment, name: group}
                options.append((cost([trial.get(n, -1) for n in names]), group))
            assignment[name] = min(options)[1]
        best = tuple(assignment[n] for n in names)
    members = [
        [n for n, g in zip(names, best, strict=True) if g == group] for group in range(groups)
    ]
    return [m for m in members if m]


@dataclass
class _Progress:
    """Shared by the processes: each group's events replayed, and the event count at which
    every group stops (a Ctrl-C), read and written under one lock so that all stop at
    the same event."""

    lock: Any
    counts: Any  # a shared array, one count per group
    stop_at: Any  # a shared integer

    def replayed(self, group: int) -> None:
        """After each event of ``group``: counted, and stopped if a stop was asked."""
        with self.lock:
            self.counts[group] += 1
            stop = self.counts[group] >= self.stop_at.value
        if stop:
            raise KeyboardInterrupt  # prequential ends there and returns what it measured

    def stop(self) -> None:
        """Every group stops after the event the furthest one is replaying."""
        with self.lock:
            self.stop_at.value = min(self.stop_at.value, max(self.counts) + 1)

    def slowest(self) -> int:
        with self.lock:
            return min(self.counts)


def _replay_group(
    group: int,
    events: Sequence[ReplayEvent],
    catalog: Catalog,
    sources: Mapping[str, Source],
    configurations: Mapping[str, Blend | LearnedBlend],
    options: dict[str, Any],
    shared: _Progress,
    results: Any,
) -> None:
    """A process's part: replay one group, counting its events in ``shared``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when all stop
    parent = os.getppid()

    def after_event(_: ReplayEvent) -> None:
        if os.getppid() != parent:  # the parent was killed: nobody waits for this replay
            raise SystemExit(1)
        shared.replayed(group)

    try:
        evaluation = prequential(
            events, catalog, sources, configurations, after_event=after_event, **options
        )
        results.put(("done", group, evaluation))
    except BaseException:  # any failure goes to the parent, which raises it
        if os.getppid() == parent:
            results.put(("failed", group, traceback.format_exc()))


def prequential_in_processes(
    events: Sequence[ReplayEvent],
    catalog: Catalog,
    sources: Mapping[str, Source],
    configurations: Mapping[str, Blend | LearnedBlend],
    processes: int,
    progress: Callable[[int, int | None], None] | None = None,
    **options: Any,
) -> Evaluation:
    """``prequential`` with the configurations split over up to ``processes`` processes.

    ``sources`` and ``catalog`` must not have learned anything yet (each process gets a
    copy of what its group reads: memory grows with the groups); ``options`` are
    ``prequential``'s, except ``after_event``, which cannot cross into another process.
    ``progress`` sees the slowest group's count. A Ctrl-C (a KeyboardInterrupt here)
    stops every group after the same event, and the report holds what they measured,
    flagged ``interrupted``.
    """
    if "after_event" in options:
        raise ValueError("after_event runs in this process only: use prequential")
    events = events if isinstance(events, list) else list(events)
    groups = split(configurations, sources, processes)
    if len(groups) <= 1:
        return prequential(events, catalog, sources, configurations, progress=progress, **options)
    # spawn, not fork: a parent that loaded torch (the text encoder) is not safe to fork.
    context = multiprocessing.get_context("spawn")
    shared = _Progress(
        context.Lock(), context.RawArray("q", len(groups)), context.RawValue("q", len(events) + 1)
    )
    results_queue = context.Queue()
    workers = []
    for index, names in enumerate(groups):
        group = {name: configurations[name] for name in names}
        needed = sources_read(group, sources)
        read = {name: s for name, s in sources.items() if name in needed}
        workers.append(
            context.Process(
                target=_replay_group,
                args=(index, events, catalog, read, group, options, shared, results_queue),
                daemon=True,
            )
        )
    started = time.perf_counter()
    results = _gather(workers, shared, results_queue, progress, len(events))
    parts = [results[index] for index in range(len(groups))]
    by_name = {name: r for part in parts for name, r in part.results.items()}
    first = parts[0]
    return Evaluation(
        k=first.k,
        events=first.events,  # the same in every group, interrupted or not
        catalog_size=first.catalog_size,
        seconds=time.perf_counter() - started,
        results={name: by_name[name] for name in configurations},
        window_ends=first.window_ends,
        interrupted=any(part.interrupted for part in parts),
        cold_threshold=first.cold_threshold,
    )


def _gather(
    workers: list[Any],
    shared: _Progress,
    results_queue: Any,
    progress: Callable[[int, int | None], None] | None,
    total: int,
) -> dict[int, Evaluation]:
    """Start ``workers`` and wait for each one's evaluation, showing progress; a Ctrl-C
    asks them all to stop at the same event, and the wait goes on for their results."""
    stop_asked = False

    def ask_stop(signum: int, frame: Any) -> None:  # no raise: a read of the queue goes on
        nonlocal stop_asked
        stop_asked = True

    in_main = threading.current_thread() is threading.main_thread()
    # Started while SIGINT is ignored, a process ignores it from its first instruction
    # (Python installs its handler only where SIGINT is not ignored).
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
    results: dict[int, Evaluation] = {}
    silent_since: dict[int, float] = {}
    try:
        for worker in workers:
            worker.start()
        if in_main:
            signal.signal(signal.SIGINT, ask_stop)
        while len(results) < len(workers):
            try:
                kind, index, payload = results_queue.get(timeout=0.5)
            except queue.Empty:
                kind, index, payload = "", -1, None
            if kind == "failed":
                raise RuntimeError(f"evaluation process {index} failed:\n{payload}")
            if kind == "done":
                results[index] = payload
            if progress is not None:
                try:
                    progress(shared.slowest(), total)
                except KeyboardInterrupt:
                    stop_asked = True
            if stop_asked:
                shared.stop()
            # A process that ended without a result: given a moment for what it put in
            # the queue to arrive (its end can be seen before its message).
            now = time.monotonic()
            for index, worker in enumerate(workers):
                silent = index not in results and not worker.is_alive()
                if silent and now - silent_since.setdefault(index, now) > 5.0:
                    raise RuntimeError(
                        f"evaluation process {index} ended without a result "
                        f"(exit code {worker.exitcode})"
                    )
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        for worker in workers:
            if worker.pid is None:  # never started
                continue
            if worker.is_alive():
                worker.terminate()
            worker.join()
    return results
