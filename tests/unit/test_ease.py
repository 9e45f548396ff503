"""EASE fitted over the engaged items only equals EASE over the whole catalog."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from models.sources.base import UserHistory
from models.sources.ease import EASE


def whole_catalog_scores(pairs: set[tuple[str, int]], n_items: int, seen: list[int]) -> np.ndarray:
    """The closed form over every catalog index, engaged or not."""
    users = sorted({u for u, _ in pairs})
    matrix = np.zeros((len(users), n_items))
    for user, item in pairs:
        matrix[users.index(user), item] = 1.0
    inverse = np.linalg.inv(matrix.T @ matrix + 5.0 * np.eye(n_items))
    weights = -inverse / np.diag(inverse)
    np.fill_diagonal(weights, 0.0)
    return weights[seen].sum(axis=0) if seen else np.zeros(n_items)


@settings(max_examples=40, deadline=None)
@given(
    log=st.lists(st.tuples(st.sampled_from("abcde"), st.integers(0, 40)), min_size=1, max_size=60),
    seen=st.lists(st.integers(0, 45), max_size=6, unique=True),
)
def test_fitting_the_engaged_items_gives_the_whole_catalogs_scores(
    log: list[tuple[str, int]], seen: list[int]
) -> None:
    ease = EASE(l2=5.0, refit_every=len(log))
    for user, item in log:
        ease.learn_one(user, item, 1.0, 0.0, UserHistory())
    history = UserHistory()
    for item in seen:
        history.add(item, 1.0)
    n_items = 46  # items past the engaged ones are in the catalog too
    expected = whole_catalog_scores(set(log), n_items, seen)
    assert len(ease.fitted_items) == len({item for _, item in log})
    np.testing.assert_allclose(ease.score("x", history, n_items, 0.0), expected, atol=1e-9)
