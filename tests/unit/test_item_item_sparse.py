"""The sparse item-item co-engagement counts against the dense matrix they replace."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from models.sources import ItemItemCosine, UserHistory
from models.sources.base import grown
from models.sources.item_item import CoEngagements


class DenseItemItem:
    """The former implementation (4 * items**2 bytes), kept here as the reference."""

    def __init__(self, any_interaction: bool = True, recency: float = 0.9) -> None:
        self.co = np.zeros((0, 0), dtype=np.float32)
        self.counts = np.zeros(0, dtype=np.float32)
        self.inverse = np.zeros(0, dtype=np.float32)
        self.any_interaction, self.recency = any_interaction, recency

    def history(self, history: UserHistory) -> list[int]:
        return list(history.last) if self.any_interaction else history.recent_items

    def learn_one(self, item: int, history: UserHistory) -> None:
        others = sorted(set(self.history(history)) - {item})
        size = max([item, *others]) + 1
        self.co = grown(self.co, size, axes=(0, 1))
        self.counts = grown(self.counts, size)
        self.inverse = grown(self.inverse, size)
        self.counts[item] += 1.0
        self.inverse[item] = 1.0 / np.sqrt(self.counts[item])
        if others:
            self.co[item, others] += 1.0
            self.co[others, item] += 1.0

    def score(self, history: UserHistory, n_items: int) -> np.ndarray:
        items = [i for i in self.history(history) if i < n_items]
        if not items:
            return np.zeros(n_items)
        inverse = grown(self.inverse, n_items)[:n_items]
        weights = inverse[items] * self.recency ** np.arange(len(items) - 1, -1, -1)
        rows = grown(self.co, n_items, axes=(0, 1))[items, :n_items]
        return (weights @ rows) * inverse

    def because_of(self, history: UserHistory, item: int) -> int | None:
        items = [i for i in self.history(history) if i < len(self.counts)]
        if not items or item >= len(self.counts):
            return None
        similarity = self.co[items, item] * self.inverse[:][items]
        return items[int(np.argmax(similarity))] if similarity.max() > 0 else None


events = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 24), st.sampled_from([1.0, 2.0, -1.0])),
    min_size=1,
    max_size=150,
)


def learn_both(
    log, sparse: ItemItemCosine, dense: DenseItemItem, histories: dict[int, UserHistory]
) -> Iterator[None]:
    """Each event of ``log`` learned by both sources (and the user's history); yields after each."""
    for ts, (user, item, weight) in enumerate(log):
        history = histories.setdefault(user, UserHistory())
        sparse.learn_one(str(user), item, weight, float(ts), history)
        dense.learn_one(item, history)
        history.add(item, weight)
        yield


@settings(max_examples=60, deadline=None)
@given(events, st.booleans())
def test_sparse_counts_score_as_the_dense_matrix(log, any_interaction: bool) -> None:
    """Below the neighbour bound the sparse source is the dense one: same counts, same
    scores (to float rounding), same explanations."""
    sparse = ItemItemCosine(any_interaction=any_interaction, recency=0.9)
    dense = DenseItemItem(any_interaction=any_interaction, recency=0.9)
    histories: dict[int, UserHistory] = {}
    for _ in learn_both(log, sparse, dense, histories):
        pass
    n_items = max(len(dense.counts), 1)
    assert np.array_equal(
        sparse.co.to_dense(len(dense.counts)), dense.co[: len(dense.counts)][:, : len(dense.counts)]
    )
    assert np.array_equal(
        grown(sparse.counts, n_items)[:n_items], grown(dense.counts, n_items)[:n_items]
    )
    for user, history in histories.items():
        expected = dense.score(history, n_items)
        assert np.allclose(sparse.score(str(user), history, n_items, 0.0), expected, atol=1e-6)
        items = np.arange(0, n_items, 2)
        assert np.allclose(
            sparse.score_items(str(user), history, items, 0.0), expected[items], atol=1e-6
        )
        singly = [dense.because_of(history, item) for item in range(n_items)]
        for item in range(n_items):
            assert sparse.because_of(str(user), history, item) == singly[item]
        # A list's items explained at once (in any order, one repeated, one unknown).
        listed = [*range(n_items - 1, -1, -1), 0, n_items + 3]
        assert sparse.because_of_each(str(user), history, listed) == [
            *singly[::-1],
            singly[0],
            None,
        ]


@settings(max_examples=30, deadline=None)
@given(events)
def test_explanations_see_every_count_added_between_them(log) -> None:
    """``because_of`` reads the user's rows concatenated once per list (``column``) and
    kept between calls: explained after every event, the same histories against counts
    that changed in between, they stay the dense matrix's."""
    sparse, dense = ItemItemCosine(recency=0.9), DenseItemItem(recency=0.9)
    histories: dict[int, UserHistory] = {}
    for _ in learn_both(log, sparse, dense, histories):
        for other, known in histories.items():
            for explained in range(len(dense.counts)):
                expected = dense.because_of(known, explained)
                assert sparse.because_of(str(other), known, explained) == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=300), st.integers(1, 8))
def test_a_full_row_keeps_its_heavy_neighbours(stream: list[int], bound: int) -> None:
    """Space-Saving's guarantees: a row never holds more than its bound, counts are never
    under the truth, and every neighbour counted more than total / bound times is held."""
    co = CoEngagements(max_neighbours=bound)
    for neighbour in stream:
        co.add(0, [neighbour])
    truth = Counter(stream)
    neighbours, counts = co.row(0)
    assert len(neighbours) == min(bound, len(truth))
    assert len(set(neighbours.tolist())) == len(neighbours)
    held = dict(zip(neighbours.tolist(), counts.tolist(), strict=True))
    assert sum(held.values()) == len(stream)  # Space-Saving conserves the total
    for neighbour, count in held.items():
        assert count >= truth[neighbour]
    for neighbour, count in truth.items():
        if count > len(stream) / bound:
            assert neighbour in held


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 25), st.sets(st.integers(0, 25), max_size=12), st.integers(1, 3)),
        max_size=120,
    ),
    st.integers(1, 6),
)
def test_a_click_added_to_each_row_at_once_is_each_row_added_alone(
    log: list[tuple[int, set[int], int]], bound: int
) -> None:
    """``add_to_each`` (the replay's path) leaves every row as ``add`` row by row does:
    the same neighbours in the same slots, the same counts, full rows included."""
    one_by_one, at_once = CoEngagements(bound), CoEngagements(bound)
    for neighbour, rows, amount in log:
        items = sorted(rows - {neighbour})
        for item in items:
            one_by_one.add(item, (neighbour,), float(amount))
        at_once.add_to_each(items, neighbour, float(amount))
        expected, got = one_by_one.to_arrays(), at_once.to_arrays()
        assert all(np.array_equal(expected[key], got[key]) for key in expected)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 25), st.lists(st.integers(0, 25), max_size=8), st.booleans()),
        max_size=60,
    ),
    st.integers(1, 6),
)
def test_an_event_s_changes_applied_at_once_are_its_changes_applied_one_by_one(
    log: list[tuple[int, list[int], bool]], bound: int
) -> None:
    """``apply_each`` (a worker's fold of one event) leaves the item side as ``apply``
    change by change does: the event's own changes (``user_step``), and any others a
    record may carry (several neighbours, counts, a row's own item)."""
    one_by_one, at_once = ItemItemCosine(max_neighbours=bound), ItemItemCosine(max_neighbours=bound)
    for item, recent, crafted in log:
        history = UserHistory()
        for earlier in recent:
            history.add(earlier, 1.0)
        changes = ItemItemCosine().user_step("u", item, 1.0, 0.0, history)
        if crafted and changes:
            changes[-1] = (changes[-1][0], {"co": [changes[-1][0], item], "count": 2.0})
        for touched, change in changes:
            one_by_one.apply(touched, change)
        at_once.apply_each(changes)
        expected, got = one_by_one.item_arrays(), at_once.item_arrays()
        assert expected.keys() == got.keys()
        assert all(np.array_equal(expected[key], got[key]) for key in expected)


def test_rows_stay_bounded_and_memory_grows_with_items_times_neighbours() -> None:
    """Many users over a catalog: no row past its bound, bytes at most 8 per neighbour
    slot, far under the dense matrix's 4 * items**2."""
    rng = np.random.default_rng(0)
    n_items, bound = 2_000, 16
    source = ItemItemCosine(max_neighbours=bound)
    for user in range(300):
        history = UserHistory()
        for item in rng.integers(0, n_items, size=40):
            source.learn_one(str(user), int(item), 1.0, 0.0, history)
            history.add(int(item), 1.0)
    assert int(source.co.sizes.max()) == bound
    assert source.co.nbytes <= 8 * bound * len(source.co)
    assert source.co.nbytes < 4 * n_items**2 / 50


def test_the_arrays_a_checkpoint_stores_give_the_same_source() -> None:
    rng = np.random.default_rng(1)
    source, history = ItemItemCosine(max_neighbours=4), UserHistory()
    for item in rng.integers(0, 30, size=200):
        source.learn_one("u", int(item), 1.0, 0.0, history)
        history.add(int(item), 1.0)
    restored = ItemItemCosine(max_neighbours=4)
    restored.load_item_arrays(source.item_arrays())
    assert np.array_equal(restored.co.to_dense(30), source.co.to_dense(30))
    assert np.array_equal(
        restored.score("u", history, 30, 0.0), source.score("u", history, 30, 0.0)
    )
    for item in range(30):  # both go on learning alike (rows full: eviction included)
        source.co.add(item, [(item + 1) % 30]), restored.co.add(item, [(item + 1) % 30])
    assert np.array_equal(restored.co.to_dense(30), source.co.to_dense(30))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=80))
def test_the_stored_rows_are_each_row_whatever_rows_are_empty(pairs: list[tuple[int, int]]) -> None:
    # Most rows of a large catalog are empty: a checkpoint slices only those that hold
    # something, and the offsets must still place every row.
    co = CoEngagements(max_neighbours=3)
    for item, neighbour in pairs:
        if item != neighbour:
            co.add(item, [neighbour])
    co._ensure(70)  # empty rows at the end too
    arrays = co.to_arrays()
    restored = CoEngagements.from_arrays(arrays, max_neighbours=3)
    assert len(restored) == len(co) and arrays["offsets"][-1] == co.entries
    for item in range(len(co)):
        for got, expected in zip(restored.row(item), co.row(item), strict=True):
            assert got.tolist() == expected.tolist()


def test_an_item_s_engagements_go_on_counting_past_two_to_the_24() -> None:
    """Counted in float32, a hot item's engagements stopped at 16,777,216 (2**24, within
    hours at 1,000 clicks/s): adding 1 rounded back to the same number, and the item's
    normalisation, its reported engagements and EASE's diagonal froze with it."""
    source = ItemItemCosine()
    for user in ("a", "b"):
        source.learn_one(user, 0, 1.0, 0.0, UserHistory())
    source.counts[0] = 2**24
    for user in ("c", "d", "e"):
        source.learn_one(user, 0, 1.0, 0.0, UserHistory())
    assert source.counts[0] == 2**24 + 3
    restored = ItemItemCosine()
    restored.load_item_arrays(source.item_arrays())
    assert restored.counts[0] == 2**24 + 3
