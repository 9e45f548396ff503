"""An evaluation split over processes reports what the one-process replay reports."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from models.blend import Blend
from models.evaluation import parallel
from models.evaluation.datasets import ReplayEvent, ReplayItem
from models.evaluation.parallel import prequential_in_processes, split
from models.evaluation.prequential import Evaluation, prequential, sources_read
from models.evaluation.report import write_report
from models.evaluation.suite import standard_configurations, standard_sources
from models.evaluation.synthetic import Shape, generate
from models.sources import Catalog, Popularity, UserHistory

SMALL = Shape(events=1_500, items=300, users=40, seed=4)


def _replay_data(shape: Shape = SMALL) -> tuple[list[ReplayItem], list[ReplayEvent]]:
    data = generate(shape)
    items = [ReplayItem(str(i), title) for i, title in enumerate(data.titles)]
    events = [
        ReplayEvent(f"u{user}", str(item), "rating", rating, float(ts))
        for user, item, rating, ts in data.ratings
    ]
    return items, events


def _evaluate(processes: int | None) -> Evaluation:
    items, events = _replay_data()
    catalog = Catalog()
    vectors = np.random.default_rng(0).normal(size=(len(items), 8))  # content, too
    sources = standard_sources(catalog, items, vectors, ease_refit_every=300)
    configurations = standard_configurations(list(sources))
    if processes is None:
        return prequential(events, catalog, sources, configurations, cold_threshold=3)
    assert len(split(configurations, sources, processes)) == processes  # not one group
    return prequential_in_processes(
        events, catalog, sources, configurations, processes, cold_threshold=3
    )


def test_configurations_replayed_in_processes_give_the_one_process_report() -> None:
    one, split_up = _evaluate(None), _evaluate(2)
    assert list(split_up.results) == list(one.results)
    assert (split_up.events, split_up.catalog_size) == (one.events, one.catalog_size)
    assert split_up.window_ends == one.window_ends
    assert split_up.table() == one.table()
    for name, result in one.results.items():
        other = split_up.results[name]
        assert other.recommended == result.recommended, name
        assert [w.hit_rate for w in other.windows] == [w.hit_rate for w in result.windows]
    assert one.table()[0]["HitRate@10"] > 0  # the comparison is not between empty reports


def test_a_group_learns_the_sources_its_sources_read() -> None:
    """EASE on the item side reads item-item's counts: a group that ranks by EASE alone
    learns item-item too, or its EASE would never see an engagement."""
    items, events = _replay_data()
    reports = []
    for processes in (1, 2):
        catalog = Catalog()
        sources = standard_sources(catalog, items, None, ease_refit_every=300)
        configurations = {"ease": Blend({"ease": 1.0}), "popularity": Blend({"popularity": 1.0})}
        assert sources_read({"ease": configurations["ease"]}, sources) == {"ease", "item-item"}
        assert len(split(configurations, sources, 2)) == 2
        reports.append(
            prequential_in_processes(events, catalog, sources, configurations, processes).table()
        )
    assert reports[0] == reports[1]
    assert reports[0][0]["HitRate@10"] > 0


def test_every_configuration_is_in_exactly_one_group_however_they_are_formed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sources = standard_sources(Catalog(), [], np.zeros((0, 4)))
    configurations = standard_configurations(list(sources))
    for exhaustive in (parallel.EXHAUSTIVE_SPLITS, 0):  # all tried, and filled greedily
        monkeypatch.setattr(parallel, "EXHAUSTIVE_SPLITS", exhaustive)
        for groups in range(1, 6):
            formed = split(configurations, sources, groups)
            assert 1 <= len(formed) <= groups and all(formed)
            assert sorted(n for g in formed for n in g) == sorted(configurations)
            if groups > 1:  # splitting pays: the slowest group has less than everything
                costliest = max(parallel._work(g, configurations, sources) for g in formed)
                assert costliest < parallel._work(list(configurations), configurations, sources)


def test_a_ctrl_c_stops_every_group_after_the_same_event_and_the_report_is_written(
    tmp_path: Path,
) -> None:
    """Groups replay at their own pace; interrupted, they all stop after the event the
    furthest one reached, so the partial report's configurations compare (and plot)."""
    items, events = _replay_data(Shape(events=30_000, items=2_000, users=300, seed=5))
    catalog = Catalog()
    sources = standard_sources(catalog, items, None)
    configurations = standard_configurations(list(sources))

    def ctrl_c(done: int, total: int | None) -> None:
        if done >= 200:
            raise KeyboardInterrupt

    evaluation = prequential_in_processes(events, catalog, sources, configurations, 2, ctrl_c)
    assert evaluation.interrupted and 200 <= evaluation.events < len(events)
    for result in evaluation.results.values():
        assert result.overall.events == evaluation.events
        assert len(result.windows) == len(evaluation.window_ends)
    assert write_report(evaluation, "interrupted", tmp_path)["plot"].stat().st_size > 0


def _spawned_by(pid: int) -> set[int]:
    """The live processes ``multiprocessing`` spawned from ``pid`` (Linux: /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
            spawned = b"spawn_main" in (stat.parent / "cmdline").read_bytes()
        except OSError:  # ended while listed
            continue
        if int(parent) == pid and spawned and state != "Z":
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_groups_end_when_the_evaluation_s_process_is_killed(tmp_path: Path) -> None:
    """A killed parent runs no clean-up: its replaying processes see it gone and end,
    rather than burning the CPUs for the rest of a replay nobody reads."""
    script = tmp_path / "replay.py"
    script.write_text(
        "from models.evaluation.parallel import prequential_in_processes\n"
        "from models.evaluation.suite import standard_configurations, standard_sources\n"
        "from models.sources import Catalog\n"
        "from tests.unit.test_parallel_evaluation import _replay_data, Shape\n"
        "if __name__ == '__main__':  # spawned processes import this module too\n"
        "    items, events = _replay_data(Shape(events=30_000, items=2_000, users=300, seed=5))\n"
        "    catalog = Catalog()\n"
        "    sources = standard_sources(catalog, items, None)\n"
        "    configurations = standard_configurations(list(sources))\n"
        "    prequential_in_processes(events, catalog, sources, configurations, 2)\n"
    )
    root = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen(
        [sys.executable, str(script)], cwd=root, env={**os.environ, "PYTHONPATH": str(root)}
    )
    try:
        deadline = time.monotonic() + 60
        while len(_spawned_by(parent.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        groups = _spawned_by(parent.pid)
        assert len(groups) == 2, "the replay never started its processes"
        time.sleep(2.0)  # replaying
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in groups) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in groups)
    finally:
        parent.kill()


class _FailingSource(Popularity):
    """Fails on its 20th event (module level: a spawned process unpickles it)."""

    def learn_one(
        self, user: str, item: int, weight: float, ts: float, history: UserHistory
    ) -> None:
        if self.counts.sum() >= 19:
            raise ArithmeticError("the 20th event")
        super().learn_one(user, item, weight, ts, history)


def test_a_failing_group_fails_the_evaluation_with_its_traceback() -> None:
    from models.blend import Blend
    from models.sources import RandomScores

    _, events = _replay_data()
    configurations = {"failing": Blend({"failing": 1.0}), "random": Blend({"random": 1.0})}
    sources = {"failing": _FailingSource(), "random": RandomScores()}
    with pytest.raises(RuntimeError, match="the 20th event"):
        prequential_in_processes(events[:100], Catalog(), sources, configurations, 2)
    with pytest.raises(ValueError, match="after_event"):
        prequential_in_processes(events, Catalog(), sources, configurations, 2, after_event=print)
