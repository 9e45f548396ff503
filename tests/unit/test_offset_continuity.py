"""The agents' offset continuity check against a consumer that loses records.

The simulated consumer reads a partition's log in order from the committed offset,
sometimes skips records it has fetched (as seen in a rebalance), the first ones
included, and sometimes goes back to the committed offset (a seek after a rebalance).
Catching up what the check reports missing, the records handled are the log's, in
order, none lost: real gaps in the log (transaction markers) included. The catch-up
reader itself runs against a real broker in ``tests/integration/test_lost_fetches.py``.
"""

from __future__ import annotations

from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.kafka_compat.offset_continuity import OffsetContinuity

TP0 = TP("interactions", 0)


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[int], set[int], set[int]]:
    size = draw(st.integers(1, 60))
    log = sorted(draw(st.sets(st.integers(0, size + 10), min_size=1, max_size=size)))
    # The last record is never skipped: with nothing after it, that is the delivery
    # watchdog's case (streams/kafka_compat/delivery_watchdog.py).
    skipped = draw(st.sets(st.sampled_from(log[:-1]), max_size=5)) if len(log) > 1 else set()
    seek_back_after = draw(st.sets(st.sampled_from(log), max_size=2))
    return log, skipped, seek_back_after


def consume(log: list[int], skipped: set[int], seek_back_after: set[int]) -> list[int]:
    check, handled, committed = OffsetContinuity(), [], 0
    check.start(TP0, committed)
    position = 0
    while position < len(log):
        offset = log[position]
        position += 1
        if offset in skipped:
            skipped.discard(offset)  # fetched, never delivered; once
            continue
        gap = check.missing(TP0, offset)
        if gap is not None:  # caught up from the broker, then this record
            handled += [o for o in log if gap[0] <= o < gap[1]]
        handled.append(offset)
        if offset in seek_back_after:
            seek_back_after.discard(offset)
            position = next((i for i, o in enumerate(log) if o >= committed), len(log))
        if len(handled) % 7 == 0:
            committed = offset + 1
    return handled


def first_handling(handled: list[int]) -> list[int]:
    """Each offset at its first handling: what the user state records (the rest are
    redeliveries, recognised by the offset the state holds)."""
    seen: set[int] = set()
    return [o for o in handled if not (o in seen or seen.add(o))]


@settings(max_examples=300, deadline=None)
@given(runs())
def test_every_record_is_handled_in_order_and_none_is_lost(
    run: tuple[list[int], set[int], set[int]],
) -> None:
    log, skipped, seek_back_after = run
    handled = consume(log, set(skipped), set(seek_back_after))
    assert first_handling(handled) == log


def test_a_partition_assigned_anew_goes_on_from_its_committed_offset() -> None:
    check = OffsetContinuity()
    check.start(TP0, 0)
    assert check.missing(TP0, 4) == (0, 4)
    check.forget([TP0])  # another worker handled 5 to 19 meanwhile
    assert not check.expects(TP0)
    check.start(TP0, 20)
    assert [check.missing(TP0, 22), check.missing(TP0, 23)] == [(20, 22), None]


def test_records_read_again_after_a_seek_to_committed_are_not_gaps() -> None:
    check = OffsetContinuity()
    check.start(TP0, 7)
    assert [check.missing(TP0, o) for o in (7, 8, 9, 5, 6, 7, 8)] == [None] * 7


def test_partitions_are_checked_apart() -> None:
    check, other = OffsetContinuity(), TP("interactions", 1)
    check.start(TP0, 0)
    check.start(other, 40)
    assert [check.missing(TP0, 0), check.missing(other, 40), check.missing(TP0, 1)] == [None] * 3
