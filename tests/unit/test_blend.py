"""The evaluation's batched ranking (BlendSet) is the worker's (Blend.top), rank for rank."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from models.blend import Blend, BlendSet, normalise_all

SOURCES = ["a", "b", "c"]
BLENDS = {
    "a": Blend({"a": 1.0}),
    "c": Blend({"c": 1.0}),
    "mix": Blend({"a": 1.0, "b": 0.3, "c": 0.2}),
    "pair": Blend({"b": 0.5, "c": 0.5}),
}


@settings(max_examples=300, deadline=None)
@given(
    n_items=st.integers(1, 30),
    k=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
    # Few distinct values make ties common (cold users, counts): where ranks could differ.
    distinct=st.integers(1, 6),
)
def test_blend_set_ranks_and_tops_are_blend_top(n_items: int, k: int, seed: int, distinct: int):
    rng = np.random.default_rng(seed)
    scores = {name: rng.integers(0, distinct, n_items).astype(float) for name in SOURCES}
    candidates = rng.random(n_items) < 0.8
    blends = BlendSet(BLENDS, SOURCES)
    rows = blends.normalise(scores, candidates)
    normalised = normalise_all(scores, candidates)
    np.testing.assert_array_equal(rows, np.stack([normalised[name] for name in SOURCES]))
    totals = blends.totals(rows, candidates)
    recommended = np.zeros((len(BLENDS), n_items), dtype=bool)
    kth = blends.mark_tops(totals, k, recommended)
    for row, blend in enumerate(BLENDS.values()):
        top = blend.top(normalised, candidates, k)[0].tolist()
        assert sorted(top) == np.flatnonzero(recommended[row]).tolist()
        for item in range(n_items):
            expected = top.index(item) if item in top else None
            assert blends.ranks(totals, item, k)[row] == expected
            assert blends.ranks(totals, item, k, kth)[row] == expected
