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
import queue
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from models.blend import Blend
from models.evaluation.datasets import ReplayEvent
from models.evaluation.prequential import Evaluation, prequential
from models.learned_blend import LearnedBlend
from models.sources import Catalog, ItemItemCosine, OnlineBPR, Source
from models.sources.ease import EASE

#: Seconds per 1,000 events of a 10k-item replay (one run of each part alone): the
#: replay itself (history, masks, metrics), each source (scoring, normalising and
#: learning), each configuration (a learned blend ranks and learns; a fixed blend only
#: sums and ranks what the sources scored).
REPLAY_COST = 0.42
LEARNED_BLEND_COST = 1.4
BLEND_COST = 0.07
SOURCE_COSTS: dict[type, float] = {ItemItemCosine: 0.6, OnlineBPR: 0.6, EASE: 0.22}
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
    read = {source for name in names for source in configurations[name].sources}
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


def _replay_group(
    group: int,
    events: Sequence[ReplayEvent],
    catalog: Catalog,
    sources: Mapping[str, Source],
    configurations: Mapping[str, Blend | LearnedBlend],
    options: dict[str, Any],
    messages: Any,
) -> None:
    """A process's part: replay one group, reporting progress and then the result."""
    try:
        evaluation = prequential(
            events,
            catalog,
            sources,
            configurations,
            progress=lambda done, _: messages.put(("progress", group, done)),
            **options,
        )
        messages.put(("done", group, evaluation))
    except BaseException:  # anything (a Ctrl-C is handled inside): the parent raises it
        messages.put(("failed", group, traceback.format_exc()))


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
    copy); ``options`` are ``prequential``'s, except ``after_event``, which cannot cross
    into another process. ``progress`` sees the slowest group's count. A Ctrl-C stops
    every group, and the report holds what each measured (flagged ``interrupted``).
    """
    if "after_event" in options:
        raise ValueError("after_event runs in this process only: use prequential")
    events = list(events)
    groups = split(configurations, sources, max(1, processes))
    if len(groups) == 1:
        return prequential(events, catalog, sources, configurations, progress=progress, **options)
    # spawn, not fork: a parent that loaded torch (the text encoder) is not safe to fork.
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    workers = []
    for index, names in enumerate(groups):
        group = {name: configurations[name] for name in names}
        needed = {source for blend in group.values() for source in blend.sources}
        workers.append(
            context.Process(
                target=_replay_group,
                args=(
                    index,
                    events,
                    catalog,
                    {name: s for name, s in sources.items() if name in needed},
                    group,
                    options,
                    messages,
                ),
                daemon=True,
            )
        )
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    done = [0] * len(groups)
    results: dict[int, Evaluation] = {}
    interrupted = False
    try:
        while len(results) < len(groups):
            try:
                kind, index, payload = messages.get(timeout=1.0)
                if kind == "failed":
                    raise RuntimeError(f"evaluation process {index} failed:\n{payload}")
                if kind == "done":
                    results[index] = payload
                else:
                    done[index] = payload
                    if progress is not None:
                        progress(min(done), len(events))
            except queue.Empty:
                ended = [w for i, w in enumerate(workers) if i not in results and not w.is_alive()]
                if ended:
                    raise RuntimeError(
                        f"an evaluation process ended without a result (exit {ended[0].exitcode})"
                    ) from None
            except KeyboardInterrupt:  # the groups were interrupted too: wait for their results
                interrupted = True
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
            worker.join()
    parts = [results[index] for index in range(len(groups))]
    by_name = {name: r for part in parts for name, r in part.results.items()}
    first = parts[0]
    return Evaluation(
        k=first.k,
        events=min(part.events for part in parts),
        catalog_size=max(part.catalog_size for part in parts),
        seconds=time.perf_counter() - started,
        results={name: by_name[name] for name in configurations},
        window_ends=first.window_ends,
        interrupted=interrupted or any(part.interrupted for part in parts),
        cold_threshold=first.cold_threshold,
    )
