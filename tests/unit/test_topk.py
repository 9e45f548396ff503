"""kth_largest against a sort, on rows full of ties and infinities."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from models.topk import kth_largest


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 6000),
    st.integers(1, 40),
    st.integers(0, 2**32 - 1),
    st.sampled_from([0.0, 0.02, 0.5, 1.0]),
)
def test_kth_largest_is_the_sorted_rows_kth(n: int, k: int, seed: int, dense: float) -> None:
    rng = np.random.default_rng(seed)
    rows = np.where(rng.random((3, n)) < dense, rng.integers(0, 5, (3, n)) / 4.0, 0.0)
    rows[rng.random((3, n)) < 0.1] = -np.inf  # seen items
    k = min(k, n)
    expected = -np.sort(-rows, axis=1)[:, k - 1]
    assert np.array_equal(kth_largest(rows, k), expected)
