"""How much an interaction says about a user's taste, by its kind.

>>> signal_weight("purchase")
3.0
>>> signal_weight("rating", 5.0), round(signal_weight("rating", 1.0), 2)
(2.0, -0.67)
>>> signal_weight("skip") < 0
True
"""

from __future__ import annotations

import math

#: Implicit feedback: stronger actions say more; skip and dislike push away.
KIND_WEIGHTS: dict[str, float] = {
    "view": 0.5,
    "click": 1.0,
    "like": 2.0,
    "purchase": 3.0,
    "skip": -0.5,
    "dislike": -1.5,
}

#: Every kind an interaction may have: the implicit ones and an explicit "rating".
KNOWN_KINDS: frozenset[str] = frozenset({*KIND_WEIGHTS, "rating"})

#: An interaction's ``value`` (a rating, a watch fraction) beyond this is a producer's
#: error, on the wire (``streams/events.py``) and in replayed files alike: its square must
#: stay finite in every learner.
MAX_INTERACTION_VALUE = 1e6

#: A rating at this value is neutral; each point above or below moves the weight by 1/1.5.
NEUTRAL_RATING = 2.0

#: The largest weight one interaction may carry, either way (a purchase is 3, a rating of 5
#: is 2): a rating of 1e6 would otherwise move a user's profile and the CF factors by a
#: million steps at once, finite but far enough to swamp everything after it.
MAX_SIGNAL_WEIGHT = 10.0


def signal_weight(kind: str, value: float | None = None) -> float:
    """The signed weight of one interaction (ratings map 1..5 to -0.67..+2), within
    +-``MAX_SIGNAL_WEIGHT`` (the worker, the in-process engine and replays alike).

    >>> signal_weight("rating", 1e6)
    10.0
    >>> signal_weight("rating", float("nan"))
    Traceback (most recent call last):
    ...
    ValueError: interaction value nan is not a finite number
    """
    # min/max pass NaN through, and one NaN weight spreads to every CF factor.
    if value is not None and not math.isfinite(value):
        raise ValueError(f"interaction value {value!r} is not a finite number")
    if kind == "rating":
        if value is None:
            raise ValueError("a rating needs its value")
        weight = (value - NEUTRAL_RATING) / 1.5
        return min(max(weight, -MAX_SIGNAL_WEIGHT), MAX_SIGNAL_WEIGHT)
    try:
        return KIND_WEIGHTS[kind]
    except KeyError:
        raise ValueError(
            f"unknown interaction kind {kind!r}; known: {sorted(KIND_WEIGHTS)}"
        ) from None
