"""A blend that learns online how much to trust each source, from what users click next.

``Blend`` weighs every source the same for every user and item. Which source to trust
depends on context: item-item cosine is noise for an item two people clicked and
sound for one clicked a thousand times; a zero-click item has no collaborative signal
at all, so only its content can speak for it; a user with two clicks is better served by
what is trending than by a profile of two items. ``LearnedBlend`` learns that, as
pairwise logistic learning-to-rank on the lists the blend itself would serve:

* an item's features are its per-source normalised scores ``x[s]`` crossed with
  context buckets: the user's history length, the item's engagement count and age
  (since its first engagement), and the catalog size; the effective weight of source
  ``s`` on item ``i`` is ``w[s, base] + w[s, user] + w[s, count(i)] + w[s, age(i)] +
  w[s, catalog]``, clipped at 0 (a source is trusted or not, never held against an
  item), and the score is ``sum_s max(weight, 0) * x[s]``;
* at each event, before anything learns it, the clicked item is paired with
  ``samples`` (30) candidates drawn at random, each in proportion to one plus its
  engagement-count bucket (1 for a zero-click item, 6 for one engaged 100 times or
  more: ``draw_by_count``), and, optionally, with up to ``hard``
  items the blend served above it (its top ``k``; default 0: on MovieLens 100k such
  pairs cost 1.4 points of HitRate, on the planted set they add 1.3, see
  docs/evaluation.md); one SGD step lowers ``log(1 + exp(-(score_clicked -
  score_other)))`` averaged over the pairs, plus L2 towards the prior. Pairs only with
  the items above the click would teach nothing but shrinking every weight (all those
  pairs are misordered);
* the prior is today's fixed weights on ``base``, every cross 0;
* the sources that learn from everyone's clicks (all but ``content``) are trusted in
  proportion to the evidence behind them, ``n / (n + 200)`` after ``n`` engagements
  in all (``trust``): ten clicks in a new deployment are no popularity to speak of,
  while content needs nobody's clicks. With that evidence in, before any step, the
  learned blend ranks as ``Blend``.

State is global (one weight vector, and per item its engagement count and first
engagement time), so it is owned like the rest of the item side: the user side computes
an event's step (``step``, reading the weights) and the item side adds it (``apply``).
Steps and counts are additive and the first engagement is a minimum, so every replica
that applies the same changes, in any order, holds the same blend. A step names the
sources of its rows, and is added source by source: a worker whose configuration adds or
drops a source still learns from the steps every other configuration wrote (a step that
could not be applied would lose its record's other changes with it).

>>> blend = LearnedBlend({"a": 1.0, "b": 0.1}, learning_rate=0.5, collaborative_half_events=0)
>>> rows = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]])  # item 1: only b vouches for it
>>> candidates = np.ones(3, dtype=bool)
>>> context = blend.context(np.arange(3), user_events=3, catalog_size=3, now=0.0)
>>> blend.top(blend.totals(rows, candidates, context), 2).tolist()
[0, 2]
>>> for _ in range(20):  # users keep clicking what b vouches for
...     blend.apply(blend.step(rows, candidates, context, clicked=1, k=2))
>>> blend.top(blend.totals(rows, candidates, context), 2).tolist()
[1, 0]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.packed import pack, unpack
from models.sources.base import grown, held_up_to
from models.sources.changes import (
    InvalidChange,
    clipped,
    learned_array,
    moment,
    moments_array,
    number,
    only,
    vector,
)
from models.topk import kth_largest

#: Bucket edges: a value v falls in bucket ``searchsorted(edges, v, side="right")``.
USER_EVENTS_EDGES = np.array([1, 3, 10, 30, 100])  # 0 | 1-2 | 3-9 | 10-29 | 30-99 | 100+
ITEM_COUNT_EDGES = np.array([1, 3, 10, 30, 100])  # bucket 0: never engaged (zero-click)
#: Age since first engagement, seconds: an hour, a day, a week, 30 days.
ITEM_AGE_EDGES = np.array([3_600.0, 86_400.0, 7 * 86_400.0, 30 * 86_400.0])
CATALOG_EDGES = np.array([100, 1_000, 10_000])

_BLOCKS = {
    "base": 1,
    "user": len(USER_EVENTS_EDGES) + 1,
    "count": len(ITEM_COUNT_EDGES) + 1,
    "age": len(ITEM_AGE_EDGES) + 2,  # + "never engaged"
    "catalog": len(CATALOG_EDGES) + 1,
}
_OFFSETS = dict(zip(_BLOCKS, np.cumsum([0, *_BLOCKS.values()])[:-1].tolist(), strict=True))
PER_SOURCE = sum(_BLOCKS.values())
EVIDENCE = 1e-6
#: The most sources a step may name (the hybrid has six).
MAX_STEP_SOURCES = 16
MAX_SOURCE_NAME_CHARS = 64
#: The count bucket of each count up to the last edge (``context``).
_COUNT_BUCKET = np.searchsorted(ITEM_COUNT_EDGES, np.arange(ITEM_COUNT_EDGES[-1] + 1), side="right")
#: Sources whose scores need no one's clicks (``trust``).
OWN_EVIDENCE = frozenset({"content", "modalities"})


@dataclass(frozen=True)
class BlendContext:
    """The context buckets of the items being ranked (one per item) and of the user."""

    user: int
    catalog: int
    count: np.ndarray
    age: np.ndarray

    def columns(self, positions: np.ndarray) -> np.ndarray:
        """Per item at ``positions``, the 5 weight columns (within a source's block) it reads."""
        n = len(positions)
        return np.stack(
            [
                np.full(n, _OFFSETS["base"]),
                np.full(n, _OFFSETS["user"] + self.user),
                _OFFSETS["count"] + self.count[positions],
                _OFFSETS["age"] + self.age[positions],
                np.full(n, _OFFSETS["catalog"] + self.catalog),
            ],
            axis=1,
        )


@dataclass
class _CatalogBuckets:
    """The buckets of every known item, and the times between which each holds."""

    count: np.ndarray
    age: np.ndarray
    fresh_from: np.ndarray
    fresh_until: np.ndarray

    @classmethod
    def empty(cls) -> _CatalogBuckets:
        none = np.zeros(0, dtype=np.int64)
        return cls(none, none.copy(), np.zeros(0), np.zeros(0))


_MASK = (1 << 64) - 1
_UNIT = float(1 << 53)  # a hash's top 53 bits over this: uniform in (0, 1]


def _mix_one(value: int) -> int:
    """splitmix64 of one integer."""
    z = (value + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64 of each uint64 (wrapping arithmetic)."""
    z = values + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50.0, 50.0)))


class LearnedBlend:
    """Per-source trust learned online from clicks, with context crosses (module docstring)."""

    #: The source name under which the blend's changes travel with an item's changes.
    name = "blend"

    def __init__(
        self,
        prior: Mapping[str, float],
        learning_rate: float = 0.02,
        l2: float = 0.001,
        samples: int = 30,
        hard: int = 0,
        collaborative_half_events: float = 200.0,
        draw_by_count: bool = True,
    ) -> None:
        if not prior or any(w < 0 for w in prior.values()):
            raise ValueError("blend weights must be non-negative, at least one source")
        self.sources = [name for name, w in prior.items() if w > 0]
        self.learning_rate = learning_rate
        self.l2 = l2
        #: Negatives drawn per click from the candidates.
        self.samples = samples
        #: Whether an item is drawn as a negative in proportion to 1 + its count bucket
        #: (else uniformly). Drawn uniformly, negatives are mostly long-tail items, and
        #: the blend learns little beyond "popular beats unpopular", which buries the
        #: items few have clicked: on MovieLens 100k, cold-item HitRate@10 0.0386 against
        #: 0.0442 by count, with the same overall; on the planted stream zero-click
        #: HitRate@10 0.15 against 0.27 (docs/evaluation.md, "The learned blend").
        self.draw_by_count = draw_by_count
        #: At most this many of the items served above the click are paired with it.
        self.hard = hard
        self.collaborative_half_events = collaborative_half_events
        self.prior = np.zeros((len(self.sources), PER_SOURCE))
        self.prior[:, _OFFSETS["base"]] = [prior[name] for name in self.sources]
        self.weights = self.prior.copy()
        self._rows_of = {name: row for row, name in enumerate(self.sources)}
        #: Steps that named no sources and do not fit these (written before steps named
        #: their sources, by a worker blending others): ignored, as they cannot be placed.
        self.unplaced_steps = 0
        self.counts = np.zeros(0, dtype=np.int64)
        self.first_ts = np.zeros(0, dtype=np.float64)  # valid where counts > 0
        self.total = 0  # engagements counted, all items
        #: ``catalog_context``'s buckets, and the items engaged since it last read them.
        self._catalog_buckets: _CatalogBuckets | None = None
        self._engaged_since: set[int] = set()

    # -- context -----------------------------------------------------------------------

    def context(
        self, items: np.ndarray, user_events: int, catalog_size: int, now: float
    ) -> BlendContext:
        """The buckets of ``items`` (indexes) for a user with ``user_events`` events."""
        count, age = self._buckets(items, now)
        return BlendContext(
            user=int(np.searchsorted(USER_EVENTS_EDGES, user_events, side="right")),
            catalog=int(np.searchsorted(CATALOG_EDGES, catalog_size, side="right")),
            count=count,
            age=age,
        )

    def catalog_context(self, user_events: int, catalog_size: int, now: float) -> BlendContext:
        """``context`` of every item of the catalog (indexes ``0 .. catalog_size - 1``).

        Per ranking only the items whose buckets may differ from the last call's are
        bucketed again: those engaged since, and those whose age is within a second of an
        edge between the two times (in either direction: a worker ranks at event times
        and at wall-clock times). Bucketing the whole catalog was 10% of a 10k-item
        replay. The same buckets as ``context`` (a property test holds them equal).
        """
        if not math.isfinite(now):
            return self.context(np.arange(catalog_size), user_events, catalog_size, now)
        cache = self._catalog_buckets
        if cache is None:
            cache = self._catalog_buckets = _CatalogBuckets.empty()
        known = len(self.counts)
        if len(cache.count) < known:  # new items, or a restored checkpoint: bucketed below
            extra = known - len(cache.count)
            cache.count = np.concatenate([cache.count, np.zeros(extra, dtype=np.int64)])
            cache.age = np.concatenate([cache.age, np.zeros(extra, dtype=np.int64)])
            cache.fresh_from = np.concatenate([cache.fresh_from, np.full(extra, np.inf)])
            cache.fresh_until = np.concatenate([cache.fresh_until, np.full(extra, -np.inf)])
        engaged = self._engaged_since
        stale = np.concatenate(
            [
                np.flatnonzero((cache.fresh_until <= now) | (cache.fresh_from > now)),
                np.fromiter(engaged, np.int64, len(engaged)),
            ]
        )
        engaged.clear()
        if len(stale):
            count, age = self._buckets(stale, now)
            cache.count[stale], cache.age[stale] = count, age
            cache.fresh_from[stale], cache.fresh_until[stale] = self._age_bounds(stale, age)
        size = min(catalog_size, known)
        count = np.zeros(catalog_size, dtype=np.int64)  # never engaged: bucket 0 of both
        age = np.zeros(catalog_size, dtype=np.int64)
        count[:size], age[:size] = cache.count[:size], cache.age[:size]
        return BlendContext(
            user=int(np.searchsorted(USER_EVENTS_EDGES, user_events, side="right")),
            catalog=int(np.searchsorted(CATALOG_EDGES, catalog_size, side="right")),
            count=count,
            age=age,
        )

    def _buckets(self, items: np.ndarray, now: float) -> tuple[np.ndarray, np.ndarray]:
        """The count and age buckets of ``items`` at ``now``."""
        known = items < len(self.counts)
        counts = np.zeros(len(items), dtype=np.int64)
        counts[known] = self.counts[items[known]]
        first = np.full(len(items), now)
        first[known] = self.first_ts[items[known]]
        # Per item of the catalog, per ranking: a table and a few comparisons rather than
        # binary searches (``searchsorted(edges, v, side="right")`` counts the edges <= v).
        age = np.ones(len(items), dtype=np.int64)
        waited = now - first
        for edge in ITEM_AGE_EDGES:
            age += waited >= edge
        age[counts == 0] = 0
        return _COUNT_BUCKET[np.minimum(counts, len(_COUNT_BUCKET) - 1)], age

    def _age_bounds(self, items: np.ndarray, age: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The times between which ``items`` (known ones, with age buckets ``age``) keep
        them: from a second after the edge their age passed last to a second before the
        next, margins far wider than the rounding of ``now - first >= edge`` (the exact
        test, made when bucketing)."""
        edges = np.concatenate([[-np.inf], ITEM_AGE_EDGES, [np.inf]])
        first = self.first_ts[items]
        bucket = np.maximum(age, 1)  # age 0: never engaged, kept until an engagement
        fresh_from = np.where(age > 0, first + edges[bucket - 1] + 1.0, -np.inf)
        fresh_until = np.where(age > 0, first + edges[bucket] - 1.0, np.inf)
        return fresh_from, fresh_until

    # -- ranking -----------------------------------------------------------------------

    def effective(self, context: BlendContext, positions: np.ndarray | None = None) -> np.ndarray:
        """Each source's weight on each item (sources x items), clipped at 0."""
        count, age = context.count, context.age
        if positions is not None:
            count, age = count[positions], age[positions]
        # An item's weights depend only on its (count, age) buckets: 36 pairs, computed
        # once and looked up, instead of summed and clipped per item of the catalog.
        return np.take(self._by_buckets(context), count * _BLOCKS["age"] + age, axis=1)

    def _by_buckets(self, context: BlendContext) -> np.ndarray:
        """Per source, the effective weight of each (count, age) bucket pair, flattened."""
        w = self.weights
        fixed = (
            w[:, _OFFSETS["base"]]
            + w[:, _OFFSETS["user"] + context.user]
            + w[:, _OFFSETS["catalog"] + context.catalog]
        )
        count = w[:, _OFFSETS["count"] : _OFFSETS["count"] + _BLOCKS["count"]]
        age = w[:, _OFFSETS["age"] : _OFFSETS["age"] + _BLOCKS["age"]]
        per_pair = count[:, :, None] + age[:, None, :]
        table = np.maximum(fixed[:, None, None] + per_pair, 0.0) * self.trust()[:, None, None]
        return table.reshape(len(self.sources), -1)

    def trust(self) -> np.ndarray:
        """Per source, the share of its weight the evidence behind it earns: sources that
        learn from everyone's clicks (all but ``content`` and ``modalities``) count
        ``n / (n + half)`` after ``n`` engagements in all, so ten clicks in a new
        deployment are not taken for popularity or co-engagement; content needs nobody's
        clicks and counts in full."""
        evidence = self.total + self.collaborative_half_events
        share = self.total / evidence if evidence > 0 else 1.0
        return np.array([1.0 if name in OWN_EVIDENCE else share for name in self.sources])

    def totals(self, rows: np.ndarray, candidates: np.ndarray, context: BlendContext) -> np.ndarray:
        """Every item's score from ``rows`` (sources x items, normalised, in ``sources``
        order); -inf off ``candidates``."""
        # A hair of every source's score: an item some source vouches for outranks one
        # none does even where the learned weights put that source at 0 (a list never
        # pads with zero-score items while a source has something to offer).
        total = (self.effective(context) * rows).sum(axis=0) + EVIDENCE * rows.sum(axis=0)
        total[~candidates] = -np.inf
        return total

    def contributions(
        self, rows: np.ndarray, context: BlendContext, items: np.ndarray
    ) -> list[dict[str, float]]:
        """How much each source added to the score of each of ``items``."""
        added = self.effective(context, items) * rows[:, items]
        names = list(self.sources)
        return [dict(zip(names, column.tolist(), strict=True)) for column in added.T]

    @staticmethod
    def top(total: np.ndarray, k: int) -> np.ndarray:
        """The ``k`` best items, best first; ties to the lower index (as ``Blend.top``)."""
        k = min(k, int(np.isfinite(total).sum()))
        if k <= 0:
            return np.zeros(0, dtype=int)
        kth = kth_largest(total[np.newaxis], k)[0]  # np.partition stalls on ties (topk.py)
        above = np.flatnonzero(total > kth)
        ties = np.flatnonzero(total == kth)[: k - len(above)]
        top = np.concatenate([above, ties])
        return top[np.lexsort((top, -total[top]))]

    # -- learning ----------------------------------------------------------------------

    def step(
        self,
        rows: np.ndarray,
        candidates: np.ndarray,
        context: BlendContext,
        clicked: int,
        k: int,
        seed: int = 0,
        keys: np.ndarray | None = None,
        total: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """The user side of one click: the weight change it asks for (reads the weights).

        Empty when the clicked item was not a candidate (seen before). ``seed`` (per
        event) and ``keys`` (per item, from its id; default: its index) draw the sampled
        negatives, so the same event draws the same items in every process that holds
        the same engagement counts, whatever order its catalog was built in. ``total``:
        what ``totals`` gives for these arguments, when the caller has just ranked with
        them (a replay).
        """
        if not candidates[clicked]:
            return {}
        # Hard negatives: what the served list put above the click. And negatives drawn
        # at random from the candidates: with only pairs the blend misorders, every
        # weight would shrink towards 0 and below (that alone lowers their loss).
        above = np.zeros(0, dtype=int)
        if self.hard > 0:
            if total is None:
                total = self.totals(rows, candidates, context)
            served = self.top(total, k)
            where = np.flatnonzero(served == clicked)
            above = (served[: where[0]] if len(where) else served)[: self.hard]
        sampled = self._draw(candidates, clicked, seed, keys, context.count)
        negatives = np.concatenate([above, sampled]).astype(int)
        if len(negatives) == 0:
            return {}
        positions = np.concatenate([[clicked], negatives])
        weights, picked = self.effective(context, positions), rows[:, positions]  # sources x items
        # The pairs' totals: without ``total`` (the worker's step) those of these items
        # alone, not the catalog's; ``totals`` at them to the bit (columns sum apart).
        at = (
            total[positions]
            if total is not None
            else (weights * picked).sum(axis=0) + EVIDENCE * picked.sum(axis=0)
        )
        # d score / d w[s, column] is x[s] of the item for the 5 columns the item reads,
        # where the source's weight on it is above the clip at 0.
        features = np.zeros((len(positions), len(self.sources), PER_SOURCE))
        values = (picked * (weights > 0) * self.trust()[:, None]).T  # items x sources
        item_axis = np.arange(len(positions))[:, None, None]
        source_axis = np.arange(len(self.sources))[None, :, None]
        # An item's 5 columns lie in 5 different blocks: one write sets them all.
        columns = context.columns(positions)[:, None, :]
        features[item_axis, source_axis, columns] = values[:, :, None]
        # Mean over pairs of the logistic loss's gradient: pull * (clicked - negative).
        pull = _sigmoid(at[1:] - at[0])
        direction = (pull[:, None, None] * (features[0] - features[1:])).mean(axis=0)
        delta = self.learning_rate * (direction - self.l2 * (self.weights - self.prior))
        return {
            "step": pack(delta.ravel(), "the learned blend's step"),
            "sources": list(self.sources),
        }

    def _draw(
        self,
        candidates: np.ndarray,
        clicked: int,
        seed: int,
        keys: np.ndarray | None,
        count: np.ndarray,
    ) -> np.ndarray:
        """``samples`` candidates other than ``clicked``, drawn without replacement, each
        with weight ``1 + count`` (its count bucket; 1 for all unless ``draw_by_count``):
        those whose ``-log(u) / weight`` is smallest (Efraimidis and Spirakis, 2006), ``u``
        uniform in (0, 1] from a hash of (item key, seed)."""
        if keys is None:
            keys = np.arange(len(candidates), dtype=np.uint64)
        eligible = int(np.count_nonzero(candidates)) - int(candidates[clicked])
        if eligible <= self.samples:
            indexes = np.flatnonzero(candidates)
            return indexes[indexes != clicked]
        bits = _mix(keys[: len(candidates)] ^ np.uint64(_mix_one(seed))) >> np.uint64(11)
        most = float(_BLOCKS["count"]) if self.draw_by_count else 1.0  # the largest weight
        # The drawn have a key under ``cut`` (about 4x as many are, at weight 1), so only
        # hashes over ``-log(u) < cut * most`` can be among them: a short array to key and
        # partition instead of the catalog. An item past it keys at least ``cut``.
        cut = 4.0 * self.samples / eligible
        lowest = max(0, int(math.exp(-cut * most) * _UNIT) - 1024)  # a margin for rounding
        few = np.flatnonzero((bits >= np.uint64(lowest)) & candidates)
        few = few[few != clicked]
        drawn = self._keyed(few, bits, count)
        inside = drawn < cut
        if np.count_nonzero(inside) < self.samples:
            few = np.flatnonzero(candidates)
            few = few[few != clicked]
            drawn = self._keyed(few, bits, count)
        else:
            few, drawn = few[inside], drawn[inside]
        return np.sort(few[np.argpartition(drawn, self.samples - 1)[: self.samples]])

    def _keyed(self, items: np.ndarray, bits: np.ndarray, count: np.ndarray) -> np.ndarray:
        """``-log(u) / weight`` of ``items`` (positions), ``u = (bits + 1) / 2**53``."""
        u = (bits[items].astype(np.float64) + 1.0) / _UNIT
        weight = 1.0 + count[items] if self.draw_by_count else 1.0
        return -np.log(u) / weight

    def check_change(self, change: Mapping[str, Any]) -> None:
        """Raise ``InvalidChange`` unless ``apply`` and ``apply_item`` can take ``change``
        (read from the log: ``models/sources/changes.py``)."""
        only(change, {"step", "sources", "count", "at"})
        if "sources" in change:
            names = change["sources"]
            if (
                not isinstance(names, list)
                or not 0 < len(names) <= MAX_STEP_SOURCES
                or not all(
                    isinstance(n, str) and 0 < len(n) <= MAX_SOURCE_NAME_CHARS for n in names
                )
                or len(set(names)) != len(names)
                or "step" not in change
            ):
                raise InvalidChange(
                    f"'sources' is not a step's list of at most {MAX_STEP_SOURCES} distinct "
                    "source names"
                )
            vector(change, "step", len(names) * PER_SOURCE)
        elif "step" in change:
            # Written before steps named their sources: this configuration's size, or
            # another's (ignored by ``apply``); any other size is not a step.
            try:
                size = len(unpack(change["step"], "'step'"))
            except (TypeError, ValueError) as error:
                raise InvalidChange(str(error)) from None
            if size % PER_SOURCE or not 0 < size <= MAX_STEP_SOURCES * PER_SOURCE:
                raise InvalidChange(f"'step' holds {size} numbers, not whole sources' rows")
            vector(change, "step", size)
        if "count" in change:
            if not number(change, "count", 0, 1).is_integer():  # one engagement a change
                raise InvalidChange("'count' is not a whole number")
            moment(change, "at")

    def apply(self, change: Mapping[str, Any]) -> None:
        """The item side: add a ``step`` to the weights, each named source's row to that
        source's (rows of sources not blended here are dropped)."""
        if "step" not in change:
            return
        step = unpack(change["step"], "the learned blend's step").reshape(-1, PER_SOURCE)
        names = change.get("sources")
        if names == self.sources:
            self.weights += step
        elif names is not None:
            for row, name in zip(step, names, strict=True):
                if name in self._rows_of:
                    self.weights[self._rows_of[name]] += row
        elif step.shape == self.weights.shape:
            self.weights += step
        else:
            self.unplaced_steps += 1
        clipped(self.weights)

    def engaged(self, ts: float) -> dict[str, Any]:
        """The change an engagement makes to its item's count and first engagement."""
        return {"count": 1, "at": ts}

    def item_arrays(self) -> dict[str, np.ndarray]:
        """The item-side state, for a checkpoint (``models/item_snapshot.py``)."""
        return {
            "weights": self.weights.copy(),
            "counts": self.counts.copy(),
            "first_ts": self.first_ts.copy(),
            "total": np.array([self.total], dtype=np.int64),
        }

    def load_item_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        weights = learned_array(np.asarray(arrays["weights"], dtype=np.float64), "blend weights")
        if weights.shape != self.weights.shape:
            raise ValueError(f"blend weights of shape {weights.shape}, not {self.weights.shape}")
        counts = np.asarray(arrays["counts"], dtype=np.int64)
        first_ts = moments_array(
            np.asarray(arrays["first_ts"], dtype=np.float64), "the learned blend's first times"
        )
        total = int(np.asarray(arrays["total"])[0])
        # What engagements make: one count and first time per item (an item past the
        # counts failed every ranking bucketing it).
        if counts.shape != first_ts.shape or counts.ndim != 1 or (counts < 0).any() or total < 0:
            raise ValueError("the learned blend's item counts and first times: not engagements")
        self.weights = weights.copy()
        self.counts, self.first_ts, self.total = counts.copy(), first_ts.copy(), total
        self._catalog_buckets = None
        self._engaged_since.clear()

    def items_held(self) -> int:
        """One past the largest item index the blend's item side holds (0: none)."""
        return held_up_to(self.counts)

    def apply_item(self, item: int, change: Mapping[str, Any]) -> None:
        if "count" not in change:
            return
        self.counts = grown(self.counts, item + 1)
        self.first_ts = grown(self.first_ts, item + 1)
        at = float(change["at"])
        self.first_ts[item] = at if self.counts[item] == 0 else min(self.first_ts[item], at)
        self.counts[item] += int(change["count"])
        self.total += int(change["count"])
        self._engaged_since.add(item)

    def learn_one(
        self,
        rows: np.ndarray,
        candidates: np.ndarray,
        context: BlendContext,
        clicked: int,
        ts: float,
        k: int,
        seed: int = 0,
        keys: np.ndarray | None = None,
        total: np.ndarray | None = None,
    ) -> None:
        """``step`` and ``apply`` in one (replay), then count the engagement."""
        self.apply(self.step(rows, candidates, context, clicked, k, seed, keys, total))
        self.apply_item(clicked, self.engaged(ts))

    def weights_by_source(self) -> dict[str, dict[str, list[float]]]:
        """The learned weights, readable: per source, per context block."""
        return {
            name: {
                block: self.weights[s, _OFFSETS[block] : _OFFSETS[block] + size].round(4).tolist()
                for block, size in _BLOCKS.items()
            }
            for s, name in enumerate(self.sources)
        }


def rows_in_order(rows: np.ndarray, row_names: Sequence[str], sources: Sequence[str]) -> np.ndarray:
    """``rows`` (one per name of ``row_names``) reordered to ``sources``."""
    return rows[[list(row_names).index(name) for name in sources]]
