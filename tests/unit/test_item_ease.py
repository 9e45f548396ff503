"""The worker's EASE, fitted from item-item's co-engagement counts: EASE's closed form
where those counts are ``X^T X``, bounded to the most engaged items, explained, checkpointed,
refitted in the background, and blended by the hybrid."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from models.hybrid import HybridRecommender
from models.sources.base import UserHistory
from models.sources.ease import EASE
from models.sources.item_ease import ItemSideEASE
from models.sources.item_item import ItemItemCosine
from models.user_state import UserState
from streams.ease_refit import EaseRefitter
from streams.settings import Settings


def _learn(log: list[tuple[str, int]], ease: ItemSideEASE, *others: EASE) -> dict[str, UserHistory]:
    histories: dict[str, UserHistory] = {}
    for user, item in log:
        history = histories.setdefault(user, UserHistory())
        for source in (ease.item_item, ease, *others):
            source.learn_one(user, item, 1.0, 0.0, history)
        history.add(item, 1.0)
    return histories


@settings(max_examples=40, deadline=None)
@given(
    histories=st.lists(
        st.lists(st.integers(0, 30), min_size=1, max_size=21, unique=True), min_size=1, max_size=6
    ),
    seen=st.lists(st.integers(0, 35), max_size=6, unique=True),
)
def test_where_the_counts_are_the_gram_matrix_the_scores_are_eases(
    histories: list[list[int]], seen: list[int]
) -> None:
    """Users of at most 21 distinct items: every pair of a history is within item-item's
    window of 20, so its counts are ``X^T X`` and the fit is EASE's on ``X``."""
    log = [(f"u{n}", item) for n, items in enumerate(histories) for item in items]
    ease = ItemSideEASE(ItemItemCosine(), l2=5.0, refit_every=len(log))
    reference = EASE(l2=5.0, refit_every=len(log))
    _learn(log, ease, reference)
    history = UserHistory()
    for item in seen:
        history.add(item, 1.0)
    n_items = 36
    np.testing.assert_allclose(
        ease.score("x", history, n_items, 0.0),
        reference.score("x", history, n_items, 0.0),
        atol=1e-5,  # B is kept in float32
    )


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
    ease = ItemSideEASE(ItemItemCosine(), l2=5.0, refit_every=refit_every)
    histories: dict[str, UserHistory] = {}
    for user, item in log:
        history = histories.setdefault(user, UserHistory(max_seen=max_seen))
        got = ease.score(user, history, 32, 0.0)
        fresh = ItemSideEASE(ItemItemCosine())
        fresh.install(ease.fit_, ease.fitted_engagements)
        np.testing.assert_allclose(got, fresh.score(user, history, 32, 0.0), atol=1e-5)
        for source in (ease.item_item, ease):
            source.learn_one(user, item, 1.0, 0.0, history)
        history.add(item, 1.0)


def test_only_the_most_engaged_items_are_fitted() -> None:
    ease = ItemSideEASE(ItemItemCosine(), l2=1.0, max_items=3, refit_every=10**9)
    # Items 0-2 engaged by three users each, 3-5 by one.
    log = [(f"u{u}", i) for u in range(3) for i in (0, 1, 2)] + [("v", 3), ("v", 4), ("v", 5)]
    _learn(log, ease)
    ease.refit()
    assert ease.fit_.items.tolist() == [0, 1, 2]
    assert ease.fit_.weights.shape == (3, 3)
    history = UserHistory()
    history.add(0, 1.0)
    history.add(3, 1.0)  # not fitted: adds nothing
    scores = ease.score("x", history, 6, 0.0)
    assert scores[1] > 0 and scores[2] > 0
    assert scores[3:].tolist() == [0.0, 0.0, 0.0]
    assert ease.because_of("x", history, 1) == 0
    assert ease.because_of("x", history, 4) is None  # not fitted: nothing to name


def test_nothing_is_fitted_before_the_first_refit_and_a_refit_follows_the_counts() -> None:
    ease = ItemSideEASE(ItemItemCosine(), l2=1.0, refit_every=4)
    history = UserHistory()
    history.add(0, 1.0)
    _learn([("a", 0), ("a", 1), ("b", 0)], ease)
    assert not ease.score("x", history, 3, 0.0).any()  # three events: no refit yet
    _learn([("b", 1)], ease)
    assert ease.fitted_engagements == 4.0
    assert ease.score("x", history, 3, 0.0)[1] > 0


def test_a_checkpoint_restores_the_fit_and_refuses_arrays_that_do_not_fit() -> None:
    ease = ItemSideEASE(ItemItemCosine(), l2=1.0)
    _learn([("a", 0), ("a", 1), ("b", 1), ("b", 2)], ease)
    ease.refit()
    restored = ItemSideEASE(ItemItemCosine())
    restored.load_item_arrays(ease.item_arrays())
    history = UserHistory()
    history.add(1, 1.0)
    np.testing.assert_array_equal(
        restored.score("x", history, 3, 0.0), ease.score("x", history, 3, 0.0)
    )
    assert restored.fitted_engagements == ease.fitted_engagements == 4.0
    arrays = ease.item_arrays()
    for broken in (
        {**arrays, "weights": np.full_like(arrays["weights"], np.nan)},
        {**arrays, "weights": arrays["weights"][:1]},
        {**arrays, "items": arrays["items"][::-1].copy()},
    ):
        with pytest.raises(ValueError):
            ItemSideEASE(ItemItemCosine()).load_item_arrays(broken)


def test_the_worker_refits_in_the_background_only_when_the_counts_moved() -> None:
    ease = ItemSideEASE(ItemItemCosine(), l2=1.0, refit_every=10**9)
    refitter = EaseRefitter(ease)

    async def scenario() -> list[bool]:
        done = [await refitter.maybe_refit()]  # nothing counted yet
        _learn([("a", 0), ("a", 1), ("b", 0), ("b", 1)], ease)
        done.append(await refitter.maybe_refit())
        done.append(await refitter.maybe_refit())  # nothing new since
        _learn([("c", 2)], ease)
        done.append(await refitter.maybe_refit())
        return done

    assert asyncio.run(scenario()) == [False, True, False, True]
    assert refitter.stats()["refits"] == 2
    assert refitter.stats()["items"] == 3


def test_the_hybrid_blends_ease_and_names_it_with_the_users_item() -> None:
    hybrid = HybridRecommender({"item-item": 1.0, "ease": 1.0}, content_dim=2, ease_l2=1.0)
    assert hybrid.ease is not None
    for item_id in "abcd":
        hybrid.add_item(item_id, item_id.upper(), None)
    users = {name: UserState() for name in ("ann", "bob", "cat")}
    for user, item in [("ann", "a"), ("ann", "b"), ("bob", "a"), ("bob", "b"), ("cat", "c")]:
        hybrid.apply(hybrid.learn_one(user, users[user], f"{user}-{item}", item, 1.0, 0.0))
    hybrid.ease.refit()
    new = UserState()
    hybrid.apply(hybrid.learn_one("dan", new, "dan-a", "a", 1.0, 0.0))
    top = hybrid.recommend("dan", new, k=1, now=0.0)[0]
    assert top.item_id == "b"
    assert ("ease", "a") in [(r.source, r.because_of) for r in top.reasons]


def test_ease_without_item_item_is_refused_naming_the_fix() -> None:
    with pytest.raises(ValueError, match="give \\['item-item'\\] a weight"):
        HybridRecommender({"ease": 1.0}, content_dim=2)
    with pytest.raises(ValidationError, match="give 'item-item' a weight above 0 too"):
        Settings(hybrid_weights={"ease": 1.0, "cf": 1.0})
    with pytest.raises(ValueError, match="l2 must be above 0"):
        ItemSideEASE(ItemItemCosine(), l2=0.0)


def test_the_inverse_is_exact_with_or_without_a_cholesky_factor() -> None:
    from models.sources.item_ease import _symmetric_inverse

    rng = np.random.default_rng(7)
    counts = rng.poisson(0.5, size=(600, 600)).astype(float)  # past a mirrored band of 256
    large = counts + counts.T + np.diag(counts.sum(axis=1) + 50.0)
    definite = np.array([[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]])
    indefinite = np.array([[1.0, 2.0], [2.0, 1.0]])  # counts within a window can be this
    for dtype, tolerance in ((np.float64, 1e-12), (np.float32, 1e-5)):
        for matrix in (definite, indefinite, large):
            given = matrix.astype(dtype)
            inverse = _symmetric_inverse(given)
            assert inverse.dtype == dtype
            np.testing.assert_allclose(inverse, inverse.T)
            np.testing.assert_allclose(inverse @ matrix, np.eye(len(matrix)), atol=tolerance)
