"""An evaluation split over processes reports what the one-process replay reports."""

from __future__ import annotations

import numpy as np
import pytest

from models.evaluation import parallel
from models.evaluation.datasets import ReplayEvent, ReplayItem
from models.evaluation.parallel import prequential_in_processes, split
from models.evaluation.prequential import Evaluation, prequential
from models.evaluation.suite import standard_configurations, standard_sources
from models.evaluation.synthetic import Shape, generate
from models.sources import Catalog, Popularity, UserHistory


def _replay_data() -> tuple[list[ReplayItem], list[ReplayEvent]]:
    data = generate(Shape(events=1_500, items=300, users=40, seed=4))
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
