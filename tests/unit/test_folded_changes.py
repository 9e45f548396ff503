"""The changes a replica remembers to recognise re-sent ones: bounded per source
partition and in partitions, and restored from a snapshot as they were."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.folded_changes import FoldedChanges

changes = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 50), st.sampled_from(["ann", "bob"])), max_size=80
)


@given(changes)
def test_the_latest_of_each_partition_are_held_and_no_more(folded_in: list) -> None:
    folded = FoldedChanges(per_partition=4, max_partitions=3)
    for partition, offset, user in folded_in:
        folded.add(partition, offset, user, f"e{offset}")
    assert len(folded) <= 4 * 3
    # The same bounds, kept in plain lists: partitions folded least lately first.
    model: list[tuple[int, list]] = []
    for partition, offset, user in folded_in:
        found = [keys for p, keys in model if p == partition]
        keys = found[0] if found else []
        model = [*[(p, k) for p, k in model if p != partition][-2:], (partition, keys)]
        if (offset, user) in keys:
            keys.remove((offset, user))
        keys.append((offset, user))
        del keys[:-4]
    assert len(folded) == sum(len(keys) for _, keys in model)
    for partition, keys in model:
        for offset, user in keys:
            assert folded.holds(partition, offset, user, f"e{offset}")
    restored = FoldedChanges.from_rows(folded.rows(), per_partition=4, max_partitions=3)
    assert restored.rows() == folded.rows()


def test_another_user_or_event_at_a_folded_position_is_not_held() -> None:
    folded = FoldedChanges()
    folded.add(0, 7, "ann", "e-1")
    assert not folded.holds(0, 7, "bob", "e-1") and not folded.holds(0, 7, "ann", "e-2")
    assert not folded.holds(1, 7, "ann", "e-1")


@pytest.mark.parametrize(
    "rows",
    [
        {"ann": 3},
        [["ann", 0, 3]],  # offsets by user, as an earlier version kept them
        [[0, -1, "ann", "e"]],
        [[0, True, "ann", "e"]],
        [[0, 1, "ann", 5]],
        [[0, 1, "ann", "e"]] * 7,  # more than per_partition * max_partitions
    ],
)
def test_rows_it_never_writes_are_refused(rows: object) -> None:
    with pytest.raises(ValueError):
        FoldedChanges.from_rows(rows, per_partition=2, max_partitions=3)


def test_a_position_is_passed_once_the_partition_s_kept_changes_are_all_after_it() -> None:
    folded = FoldedChanges(per_partition=2)
    folded.add(0, 40, "bob", "b-40")
    assert not folded.passed(0, 3), "fewer than kept: everything folded is held"
    folded.add(0, 41, "bob", "b-41")
    assert folded.passed(0, 3) and not folded.passed(0, 40) and not folded.passed(1, 3)
