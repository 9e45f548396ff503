"""EASE fitted over the engaged items only, in the primal or the dual form, equals the
closed form over the whole catalog."""

from __future__ import annotations

import numpy as np
import pytest
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
    assert len(ease.fit.items) == len({item for _, item in log})
    np.testing.assert_allclose(ease.score("x", history, n_items, 0.0), expected, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(
    log=st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 30)), min_size=1, max_size=80),
    refit_every=st.integers(1, 12),
    max_seen=st.integers(2, 40),
)
def test_scores_kept_between_refits_equal_the_sum_of_the_users_rows(
    log: list[tuple[str, int]], refit_every: int, max_seen: int
) -> None:
    """A user's kept ``x_u B`` (one row added per newly engaged item) is what summing
    their rows gives, before and after refits, with repeats and bounded histories."""
    ease = EASE(l2=5.0, refit_every=refit_every)
    histories: dict[str, UserHistory] = {}
    for user, item in log:
        history = histories.setdefault(user, UserHistory(max_seen=max_seen))
        got = ease.score(user, history, 32, 0.0)
        fresh = EASE(l2=5.0)
        fresh.fit = ease.fit
        assert np.allclose(got, fresh.score(user, history, 32, 0.0), atol=1e-9)
        ease.learn_one(user, item, 1.0, 0.0, history)
        history.add(item, 1.0)


@pytest.mark.parametrize(("users", "items", "form"), [(4, 30, "dual"), (30, 4, "primal")])
def test_both_forms_give_the_closed_forms_scores(users: int, items: int, form: str) -> None:
    """Fewer users than items inverts users x users (Woodbury); the scores are the same."""
    rng = np.random.default_rng(7)
    log = [(f"u{u}", int(i)) for u in range(users) for i in rng.choice(items, 3, replace=False)]
    log += [(f"u{u}", u % items) for u in range(users)]
    ease = EASE(l2=5.0, refit_every=len(log))
    for user, item in log:
        ease.learn_one(user, item, 1.0, 0.0, UserHistory())
    assert (ease.fit.weights is None) == (form == "dual")
    for seen in ([0], [1, 2, 3], list(range(items))):
        history = UserHistory()
        for item in seen:
            history.add(item, 1.0)
        expected = whole_catalog_scores(set(log), items, seen)
        np.testing.assert_allclose(ease.score("x", history, items, 0.0), expected, atol=1e-9)
