"""Checks of item changes read from the log, before any of them is applied.

Item changes reach a worker's item side from the ``item-updates`` topic, which anything
with write access to the cluster can write to. A change ``apply`` cannot take (a
string where a number goes, a vector of the wrong length, a NaN, a time in the year
5000) raised in the middle of the replica's fold, or went silently into the item state:
a crafted record crash-looped every worker reading it, or left NaN in every replica.
Each source says what its changes may hold (``Source.check_change``, built from these
checks) and the hybrid checks a whole record before applying any of it.

The bounds are far past anything a worker writes (a step of SGD, a count of 1, an
event's time), and close enough that no number of changes can overflow a float64.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from typing import Any

import numpy as np

from models.packed import unpack

#: The largest magnitude of a number added to item state by one change.
MAX_DELTA = 1e6
#: The largest number a user's profile keeps (``bounded_profile``): a tenth of what a
#: stored vector may hold when read back, which rounding never reaches.
MAX_PROFILE = MAX_DELTA / 10
#: The largest magnitude a learned number may reach where changes add up (CF factors
#: and biases, a user's CF factor, the learned blend's weights); genuine ones stay within
#: about 10. Each change is bounded, but their sums were not: 40 crafted records, each
#: within bounds, took an item's CF factor to 4e7, and every click whose step read it
#: made changes past ``MAX_DELTA``, so was refused. Sums are clipped where they are
#: added, the same way on every replica and in the replay.
MAX_LEARNED = 1e3
#: The latest time a change may carry (2100-01-01). A bound relative to the reader's clock
#: (a day ahead) made a record's fate depend on when it was read: refused by every replica
#: of the day, applied by one that read the log days later, which then differed for good.
#: An interaction's own time is held to a day ahead where it enters (``Interaction``).
LATEST_MOMENT = 4_102_444_800.0
#: The longest item id, and the most ids one change may name (a worker names at most
#: the user's recent window).
MAX_ID_CHARS = 256
MAX_IDS = 1_000
#: An item's title.
MAX_TITLE_CHARS = 1_000


class InvalidChange(ValueError):
    """An item change that ``apply`` cannot take whole; names the key and why."""


def only(change: Mapping[str, Any], keys: AbstractSet[str]) -> None:
    if keys.issuperset(change):
        return
    unknown = set(change) - keys
    if unknown:
        raise InvalidChange(f"unknown keys {sorted(unknown)[:5]}")


def number(
    change: Mapping[str, Any], key: str, low: float = -MAX_DELTA, high: float = MAX_DELTA
) -> float:
    """``change[key]`` as a float, refused unless a finite number in [low, high]."""
    if key not in change:
        raise InvalidChange(f"{key!r} is missing")
    value = change[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidChange(f"{key!r} is not a number")
    # Compared as written: a JSON integer of 400 digits has no float to convert to.
    if not (low <= value <= high and math.isfinite(value)):
        raise InvalidChange(f"{key!r} is {clip_number(value)}, outside [{low:g}, {high:g}]")
    return float(value)


def clip_number(value: float) -> str:
    """A number as an error may quote it (an integer of any length, cut)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} digits)"


def moment(change: Mapping[str, Any], key: str) -> float:
    """A time in seconds since the epoch, at most ``LATEST_MOMENT``."""
    return number(change, key, 0.0, LATEST_MOMENT)


def vector(change: Mapping[str, Any], key: str, size: int) -> np.ndarray:
    """Packed (or listed) floats: ``size`` finite numbers, each at most ``MAX_DELTA``."""
    try:
        values = unpack(change[key], repr(key))
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidChange(str(error)) from None
    if values.shape != (size,):
        raise InvalidChange(f"{key!r} holds {values.size} numbers, not {size}")
    if np.abs(values).max(initial=0.0) > MAX_DELTA:
        raise InvalidChange(f"{key!r} holds a number past {MAX_DELTA:g}")
    return values


def clipped(values: np.ndarray) -> np.ndarray:
    """``values`` clipped in place to ``MAX_LEARNED`` in magnitude.

    >>> clipped(np.array([2e3, -5.0, -1e9]))
    array([ 1000.,    -5., -1000.])
    """
    return np.clip(values, -MAX_LEARNED, MAX_LEARNED, out=values)


def bounded_profile(values: np.ndarray) -> bool:
    """Scale ``values`` (a user's profile, a sum that grows with their events) down in
    place, direction kept, where a number passes ``MAX_PROFILE``; whether it did. One
    user's 100,001 ratings of one item summed past what ``user_vector`` reads back, and
    their next event found their state unreadable and started them afresh.

    >>> profile = np.array([3e5, -1e5]); bounded_profile(profile), profile.round().tolist()
    (True, [100000.0, -33333.0])
    """
    largest = float(np.abs(values).max(initial=0.0))
    if largest <= MAX_PROFILE:
        return False
    values *= MAX_PROFILE / largest
    return True


def learned_array(values: np.ndarray, what: str) -> np.ndarray:
    """``values`` read from a snapshot, if each is within ``MAX_LEARNED`` (as every sum is
    kept); else a ValueError naming ``what``."""
    if not np.all(np.abs(values) <= MAX_LEARNED):
        raise ValueError(f"{what} holds a number past {MAX_LEARNED:g} or not finite")
    return values


def moments_array(values: np.ndarray, what: str) -> np.ndarray:
    """``values`` read from a snapshot, if each is a time a change may carry (``moment``);
    else a ValueError naming ``what``."""
    if not np.all((values >= 0) & (values <= LATEST_MOMENT)):
        raise ValueError(f"{what} holds a time before 1970 or after 2100, or not finite")
    return values


def user_vector(data: Any, what: str, size: int) -> np.ndarray:
    """A user's stored vector (their state, or a step read from the log): ``size``
    finite numbers, each at most ``MAX_DELTA``, as a change's; else a ValueError naming
    ``what``. A finite 1e300 in a crafted step was adopted, its changes overflowed the
    item side, and the lists ranked from it were empty.

    >>> user_vector([1.0, -2.0], "a factor", 2)
    array([ 1., -2.])
    >>> user_vector([1e300, 0.0], "a factor", 2)
    Traceback (most recent call last):
    ValueError: a factor holds a number past 1e+06
    """
    values = unpack(data, what)
    if values.shape != (size,):
        raise ValueError(f"{what} has {values.size} numbers, not {size}")
    if np.abs(values).max(initial=0.0) > MAX_DELTA:
        raise ValueError(f"{what} holds a number past {MAX_DELTA:g}")
    return values


def ids(change: Mapping[str, Any], key: str) -> list[str]:
    value = change.get(key)
    one = type(value) is list and len(value) == 1 and type(value[0]) is str
    if one and 0 < len(value[0]) <= MAX_ID_CHARS:  # most changes
        return value
    if not isinstance(value, list) or len(value) > MAX_IDS:
        raise InvalidChange(f"{key!r} is not a list of at most {MAX_IDS} item ids")
    if not all(isinstance(i, str) and 0 < len(i) <= MAX_ID_CHARS for i in value):
        raise InvalidChange(f"{key!r} holds something other than item ids")
    if len(set(value)) != len(value):
        raise InvalidChange(f"{key!r} names an item twice")
    return value
