"""How much an interaction says about a user's taste, by its kind.

>>> signal_weight("purchase")
3.0
>>> signal_weight("rating", 5.0), round(signal_weight("rating", 1.0), 2)
(2.0, -0.67)
>>> signal_weight("skip") < 0
True
"""

from __future__ import annotations

#: Implicit feedback: stronger actions say more; skip and dislike push away.
KIND_WEIGHTS: dict[str, float] = {
    "view": 0.5,
    "click": 1.0,
    "like": 2.0,
    "purchase": 3.0,
    "skip": -0.5,
    "dislike": -1.5,
}

#: A rating at this value is neutral; each point above or below moves the weight by 1/1.5.
NEUTRAL_RATING = 2.0


def signal_weight(kind: str, value: float | None = None) -> float:
    """The signed weight of one interaction (ratings map 1..5 to -0.67..+2)."""
    if kind == "rating":
        if value is None:
            raise ValueError("a rating needs its value")
        return (value - NEUTRAL_RATING) / 1.5
    try:
        return KIND_WEIGHTS[kind]
    except KeyError:
        raise ValueError(
            f"unknown interaction kind {kind!r}; known: {sorted(KIND_WEIGHTS)}"
        ) from None
