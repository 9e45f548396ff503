"""The hybrid recommender the worker runs: the evaluated sources, blended, split by owner.

Item-item cosine, trending, online BPR and content similarity (``models/sources/``) are
blended by ``models/blend.py`` with the weights measured on MovieLens 100k. Learning is
split the way a deployment owns state: ``learn_one`` is the user's side (it updates the
user's state and returns the changes each touched item must receive), ``apply`` is the
item side (it folds those changes into the item state every ranking reads). Changes are
additive, so they can travel through Kafka and be applied by every replica in any order.

Every recommended item carries its reasons: the sources that put it there, and for
item-item and content similarity, which of the user's own items it is similar to.

With a vector store attached (``use_store``), the CF item vectors are published to it
(``publish_cf``), and a catalog too large to rank whole is first narrowed by the
candidate stage (``models/candidates.py``).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from models.blend import Blend, Ranked, normalise_all, unseen
from models.candidates import CandidateStage
from models.learned_blend import LearnedBlend
from models.packed import pack
from models.sources import (
    Catalog,
    ContentSimilarity,
    DecayedPopularity,
    ItemItemCosine,
    OnlineBPR,
    Source,
)
from models.sources.base import ItemDelta, grown
from models.sources.changes import MAX_ID_CHARS, InvalidChange
from models.sources.item_ease import ItemSideEASE
from models.sources.modality_profiles import ModalityProfiles, Projection
from models.user_state import UserState

if TYPE_CHECKING:
    from models.vector_store import VectorStore

#: The hybrid's weights, chosen on MovieLens 100k (README, "Evaluation").
HYBRID_WEIGHTS = {"item-item": 1.0, "trending": 0.3, "cf": 0.2, "content": 0.1}
CONTENT = "content"
CF = "cf"
MODALITIES = "modalities"
#: The reason of an item no source vouches for (it only fills the list).
CATALOG = "catalog"

#: item id -> source name -> that source's change to the item, JSON-ready.
ItemChanges = dict[str, dict[str, dict[str, Any]]]
#: What ``load_state`` raises for a stored state it cannot read.
UNREADABLE_STATE = (TypeError, ValueError, LookupError, AttributeError)


class UnknownItemError(LookupError):
    """An interaction names an item the catalog does not have (yet)."""

    def __init__(self, item_id: str) -> None:
        super().__init__(
            f"unknown item_id {item_id!r}: "
            "upload the item to the items topic before its interactions"
        )
        self.item_id = item_id


@dataclass(frozen=True)
class Reason:
    source: str
    score: float
    because_of: str | None = None


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    score: float
    title: str
    reasons: list[Reason]


def _json_ready(value: Any, what: str) -> Any:
    return pack(value, what) if isinstance(value, np.ndarray) else value


def hybrid_sources(
    content_dim: int,
    ease_l2: float = 500.0,
    ease_max_items: int = 3_000,
    modality_projection: Projection | None = None,
) -> dict[str, Source]:
    """The sources the hybrid can blend, by name (the last two are not in the default
    weights)."""
    item_item = ItemItemCosine()
    return {
        "item-item": item_item,
        "trending": DecayedPopularity(),
        CF: OnlineBPR(),
        CONTENT: ContentSimilarity(dim=content_dim),
        # Fitted from item-item's counts, in the background (``refit``).
        "ease": ItemSideEASE(item_item, ease_l2, ease_max_items),
        MODALITIES: ModalityProfiles(dim=content_dim, project=modality_projection),
    }


class HybridRecommender:
    """Ranks a user's unseen items by the weighted, normalised scores of its sources.

    >>> import numpy as np
    >>> hybrid = HybridRecommender(content_dim=2)
    >>> for item_id, vector in [("a", [1.0, 0.0]), ("b", [0.9, 0.1]), ("c", [0.0, 1.0])]:
    ...     hybrid.add_item(item_id, item_id.upper(), np.array(vector))
    >>> ann, bob = UserState(), UserState()
    >>> for user, state, item in [("ann", ann, "a"), ("ann", ann, "c"), ("bob", bob, "a")]:
    ...     hybrid.apply(hybrid.learn_one(user, state, f"{user}-{item}", item, 1.0, 0.0))
    >>> top = hybrid.recommend("bob", bob, k=1, now=0.0)[0]   # ann went from a to c
    >>> top.item_id, [(r.source, r.because_of) for r in top.reasons]
    ('c', [('item-item', 'a'), ('trending', None)])
    >>> hybrid.learn_one("bob", bob, "bob-a", "a", 1.0, 0.0) is None   # a duplicate
    True
    """

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        content_dim: int = 384,
        explain_share: float = 0.25,
        learned: bool = False,
        served_k: int = 10,
        ease_l2: float = 500.0,
        ease_max_items: int = 3_000,
        modality_projection: Projection | None = None,
    ) -> None:
        # A source weighted 0 would only cost time: it is left out.
        self.blend = Blend({n: w for n, w in (weights or HYBRID_WEIGHTS).items() if w > 0})
        #: With ``learned``, the blend's weights are the prior of a blend learned from the
        #: clicks (``models/learned_blend.py``): item-side state, changed through
        #: ``learn_one``'s changes like the sources' item state.
        self.learned = LearnedBlend(self.blend.weights) if learned else None
        #: The list length the learned blend learns for (the worker's ``top_k``).
        self.served_k = served_k
        available = hybrid_sources(content_dim, ease_l2, ease_max_items, modality_projection)
        unknown = set(self.blend.sources) - set(available)
        if unknown:
            raise ValueError(
                f"unknown hybrid sources {sorted(unknown)}: choose from {sorted(available)}"
            )
        for name in self.blend.sources:
            missing = set(available[name].reads) - set(self.blend.sources)
            if missing:
                raise ValueError(
                    f"the {name!r} source reads the item side of {sorted(missing)}: "
                    f"give {sorted(missing)} a weight above 0 too"
                )
        self.sources = {name: available[name] for name in self.blend.sources}
        self.content = available[CONTENT]
        assert isinstance(self.content, ContentSimilarity)
        self.cf = available[CF]
        assert isinstance(self.cf, OnlineBPR)
        ease = self.sources.get("ease")
        #: The EASE source when blended: refitted in the background (``streams/ease_refit.py``).
        self.ease = ease if isinstance(ease, ItemSideEASE) else None
        modalities = self.sources.get(MODALITIES)
        #: The per-modality content source when blended: it keeps each item's modality vectors.
        self.modalities = modalities if isinstance(modalities, ModalityProfiles) else None
        self.catalog = Catalog()
        self.titles: list[str] = []
        #: A source is named as a reason when it gives at least this share of the
        #: largest contribution to the item's score (the others barely moved it).
        self.explain_share = explain_share
        self.candidates: CandidateStage | None = None
        #: Items whose CF vector changed since the last ``publish_cf``.
        self._cf_changed: set[int] = set()
        #: By index, whether the item was given to ``add_item`` (uploaded, so held by the
        #: store). The others are known only from item changes, whose record is still on
        #: its way or never comes (a crafted record named 95,000 such ids): they are
        #: neither ranked nor clicked until uploaded.
        self.uploaded = np.zeros(0, dtype=bool)
        self._item_keys = np.zeros(0, dtype=np.uint64)

    def use_store(
        self, store: VectorStore, dense_max_items: int = 20_000, per_source: int = 200
    ) -> None:
        """Publish CF vectors to ``store`` and retrieve candidates from it at scale.

        The store must have the named vectors ``content`` (cosine) and ``cf`` (dot
        product, ``cf_vector_size``) and hold every item given to ``add_item``: the
        caller upserts an item's record before or right after adding it here.
        """
        self.candidates = CandidateStage(store, per_source, dense_max_items)

    @property
    def cf_vector_size(self) -> int:
        return self.cf.vector_size

    def with_cf_vector(
        self, item_id: str, vectors: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """``vectors`` and the item's CF vector, if it has one: what to upsert for the item
        (an upsert replaces every vector, and the CF one is only re-sent when it changes)."""
        if item_id not in self.catalog or self.catalog.index(item_id) >= len(self.cf.bias):
            return dict(vectors)
        return {**vectors, CF: self.cf.item_vector(self.catalog.index(item_id))}

    def publish_cf(self) -> int:
        """Write the CF vectors changed since the last call to the store; how many.

        Items the store does not hold yet (their record is still on its way) stay
        pending for the next call.
        """
        if self.candidates is None or not self._cf_changed:
            return 0
        ids = self.catalog.ids
        stored = {i for i in self._cf_changed if self.uploaded[i]}
        self.candidates.store.set_vectors({ids[i]: {CF: self.cf.item_vector(i)} for i in stored})
        self._cf_changed -= stored
        return len(stored)

    # -- items -------------------------------------------------------------------------

    def _index(self, item_id: str) -> int:
        """The item's index, adding it (untitled, no content yet) when new."""
        index = self.catalog.add(item_id)
        if index == len(self.titles):
            self.titles.append("")
            # The learned blend draws negatives by item id, not by local index.
            self._item_keys = grown(self._item_keys, index + 1)
            self._item_keys[index] = zlib.crc32(item_id.encode())
            self.uploaded = grown(self.uploaded, index + 1)
        return index

    def add_item(
        self,
        item_id: str,
        title: str,
        vector: np.ndarray | None,
        modalities: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Add an item, or replace its title, content vector and modality vectors (each
        modality's own embedding, as the encoders gave it)."""
        index = self._index(item_id)
        self.uploaded[index] = True
        self.titles[index] = title
        if vector is not None:
            self.content.set_vector(index, vector)
        if self.modalities is not None:
            self.modalities.set_vectors(index, modalities or {})

    def users_for_item(self, item_id: str, limit: int) -> list[str]:
        """The recently active users whose content profile fits the item best (at most
        ``limit``): whom to send a refreshed list when the item is new."""
        index = self.catalog.index(item_id)
        # An item known only from item changes has no content to match.
        if CONTENT not in self.sources or not self.uploaded[index]:
            return []
        if index >= self.content.n_vectors:
            return []
        vector = self.content.vectors[index]
        return [user for user, _ in self.content.closest_users(vector, limit)]

    def usable_ts(self, ts: float) -> float:
        """``ts``, or the earliest time the trending source can score without overflow when
        ``ts`` is older (an event from 1970 beside today's): the same clamp wherever the
        core runs, the worker, the in-process engine or a replay."""
        for source in self.sources.values():
            if isinstance(source, DecayedPopularity):
                floor = source.earliest_usable_ts()
                if floor is not None and ts < floor:
                    return floor
        return ts

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.catalog

    def knows(self, item_id: str) -> bool:
        """Whether the item was uploaded: what may be clicked and ranked."""
        return item_id in self.catalog and bool(self.uploaded[self.catalog.index(item_id)])

    def __len__(self) -> int:
        return len(self.catalog)

    def item_state(self, item_id: str) -> dict[str, Any]:
        """What the item side knows of an item: engagements, trending, CF factor and bias."""
        index = self.catalog.index(item_id)
        state: dict[str, Any] = {}
        for name, source in self.sources.items():
            if isinstance(source, ItemItemCosine):
                known = index < len(source.counts)
                state["engagements"] = int(source.counts[index]) if known else 0
            elif isinstance(source, DecayedPopularity):
                mass = source.log_mass[index] if index < len(source.log_mass) else -np.inf
                state["trending_log_mass"] = float(mass) if np.isfinite(mass) else None
            elif isinstance(source, OnlineBPR):
                known = index < len(source.bias)
                state[name] = {
                    "factor": source.items[index].tolist() if known else [0.0] * source.factors,
                    "bias": float(source.bias[index]) if known else 0.0,
                }
        return state

    # -- learning ----------------------------------------------------------------------

    def learn_one(
        self, user_id: str, state: UserState, event_id: str, item_id: str, weight: float, ts: float
    ) -> ItemChanges | None:
        """The user's side of one interaction: None (and no change) for a duplicate event id.

        Raises UnknownItemError, leaving the state unchanged, when the item is unknown.
        """
        if not self.knows(item_id):
            raise UnknownItemError(item_id)
        if not state.remember_event(event_id):
            return None
        ts = self.usable_ts(ts)
        item = self.catalog.index(item_id)
        ids = self.catalog.ids
        changes: ItemChanges = {}
        if self.learned is not None:
            # Ranked on the state before the event, as the list the user had was.
            step = self._blend_step(user_id, state, item, event_id, ts)
            changes[item_id] = {LearnedBlend.name: {**step, **self.learned.engaged(ts)}}
        for name, source in self.sources.items():
            for touched, change in source.user_step(user_id, item, weight, ts, state.history):
                changes.setdefault(ids[touched], {})[name] = {
                    # Item indexes are local to this process: ids go on the wire.
                    key: [ids[i] for i in value]
                    if key == "co"
                    else _json_ready(value, f"{name}'s {key!r} for {ids[touched]!r}")
                    for key, value in change.items()
                }
        state.history.add(item, weight)
        return changes

    def _blend_step(
        self, user_id: str, state: UserState, item: int, event_id: str, ts: float
    ) -> dict[str, Any]:
        assert self.learned is not None
        history, n_items = state.history, len(self.catalog)
        if self.candidates is not None and self.candidates.applies(n_items):
            # At scale, the candidates of the list the user had, and the clicked item.
            served = self.candidates.last_served(self.sources, self.catalog, user_id, history, ts)
            items = np.union1d(served[self.uploaded[served]], [item]).astype(np.int64)
            sources = self.sources.items()
            scores = {n: s.score_items(user_id, history, items, ts) for n, s in sources}
            candidates = np.ones(len(items), dtype=bool)
            clicked = int(np.searchsorted(items, item))
            candidates[clicked] = item not in history.seen
            context = self.learned.context(items, history.events, n_items, ts)
        else:
            items = np.arange(n_items)
            scores = {n: s.score(user_id, history, n_items, ts) for n, s in self.sources.items()}
            candidates = unseen(n_items, history.seen) & self.uploaded[:n_items]
            clicked = item
            context = self.learned.catalog_context(history.events, n_items, ts)
        rows = self._rows(normalise_all(scores, candidates))
        seed = zlib.crc32(event_id.encode())
        keys = self._item_keys[items]
        return self.learned.step(rows, candidates, context, clicked, self.served_k, seed, keys)

    def _rows(self, normalised_scores: Mapping[str, np.ndarray]) -> np.ndarray:
        assert self.learned is not None
        return np.stack([normalised_scores[name] for name in self.learned.sources])

    def check_changes(self, changes: ItemChanges, user_steps: Mapping[str, Any]) -> None:
        """Raise ``InvalidChange`` unless ``apply`` can take all of ``changes`` and
        ``adopt_steps`` all of ``user_steps``: what a record read from the log must pass
        before any of it is applied (``models/sources/changes.py``). Sources this
        recommender does not run are ignored, as ``apply`` ignores them."""
        for item_id, by_source in changes.items():
            if not 0 < len(item_id) <= MAX_ID_CHARS:
                raise InvalidChange(f"an item id of {len(item_id)} characters")
            for name, change in by_source.items():
                checked = self.learned if name == LearnedBlend.name else self.sources.get(name)
                try:
                    if checked is not None:
                        checked.check_change(change)
                except InvalidChange as error:
                    raise InvalidChange(f"item {item_id[:80]!r}, {name!r}: {error}") from None
        for name, value in user_steps.items():
            if name in self.sources:
                try:
                    self.sources[name].load_user(value)
                except (TypeError, ValueError, LookupError, OverflowError) as error:
                    raise InvalidChange(f"user step {name!r}: {error}") from None

    def apply(self, changes: ItemChanges) -> None:
        """The item side: fold one event's changes into the item state."""
        by_name: dict[str, list[ItemDelta]] = {}
        for item_id, by_source in changes.items():
            index = self._index(item_id)
            for name, change in by_source.items():
                if name == LearnedBlend.name:
                    if self.learned is not None:
                        self.learned.apply(change)
                        self.learned.apply_item(index, change)
                    continue
                if name not in self.sources:
                    continue
                if "co" in change:
                    change = {**change, "co": [self._index(i) for i in change["co"]]}
                by_name.setdefault(name, []).append((index, change))
        for name, deltas in by_name.items():
            self.sources[name].apply_each(deltas)
            if self.sources[name] is self.cf:
                self._cf_changed.update(index for index, _ in deltas)

    # -- ranking -----------------------------------------------------------------------

    def recommend(self, user_id: str, state: UserState, k: int, now: float) -> list[Recommendation]:
        """The user's top ``k`` unseen items at time ``now``, explained."""
        now = self.usable_ts(now)
        history, n_items = state.history, len(self.catalog)
        if self.candidates is not None and self.candidates.applies(n_items):
            return self._recommend_candidates(user_id, state, k, now)
        scores = {name: s.score(user_id, history, n_items, now) for name, s in self.sources.items()}
        candidates = unseen(n_items, history.seen) & self.uploaded[:n_items]
        normalised_scores = normalise_all(scores, candidates)
        if self.learned is not None:
            ranked = self._rank_learned(normalised_scores, candidates, None, history.events, now, k)
        else:
            ranked = self.blend.rank_normalised(normalised_scores, candidates, k)
        return self._explain(user_id, state, ranked)

    def _rank_learned(
        self,
        normalised_scores: Mapping[str, np.ndarray],
        candidates: np.ndarray,
        items: np.ndarray | None,
        user_events: int,
        now: float,
        k: int,
    ) -> list[Ranked]:
        """The learned blend's top ``k`` of ``items`` (positions into it, as ``Blend``'s;
        None: the whole catalog)."""
        assert self.learned is not None
        rows = self._rows(normalised_scores)
        n_items = len(self.catalog)
        context = (
            self.learned.catalog_context(user_events, n_items, now)
            if items is None
            else self.learned.context(items, user_events, n_items, now)
        )
        total = self.learned.totals(rows, candidates, context)
        top = self.learned.top(total, k)
        added = self.learned.contributions(rows, context, top)
        return [Ranked(int(i), float(total[i]), a) for i, a in zip(top, added, strict=True)]

    def _recommend_candidates(
        self, user_id: str, state: UserState, k: int, now: float
    ) -> list[Recommendation]:
        assert self.candidates is not None
        history = state.history
        items = self.candidates.retrieve(self.sources, self.catalog, user_id, history, now)
        items = items[self.uploaded[items]]
        scores = {n: s.score_items(user_id, history, items, now) for n, s in self.sources.items()}
        everyone = np.ones(len(items), dtype=bool)
        normalised_scores = normalise_all(scores, everyone)
        if self.learned is not None:
            ranked = self._rank_learned(normalised_scores, everyone, items, history.events, now, k)
        else:
            ranked = self.blend.rank_normalised(normalised_scores, everyone, k)
        # Ranked positions are into ``items``, which is sorted: ties still go to the lower index.
        return self._explain(user_id, state, [replace(r, item=int(items[r.item])) for r in ranked])

    def _explain(
        self, user_id: str, state: UserState, ranked: list[Ranked]
    ) -> list[Recommendation]:
        """The list with its reasons: the sources that added at least ``explain_share`` of
        the largest contribution to an item, each asked once for all its items."""
        explaining: list[list[tuple[str, float]]] = []
        for r in ranked:
            largest = max(r.contributions.values(), default=0.0)
            explaining.append(
                [
                    (name, contribution)
                    for name, contribution in sorted(r.contributions.items(), key=lambda c: -c[1])
                    if contribution > 0 and contribution >= self.explain_share * largest
                ]
            )
        because: dict[tuple[str, int], int | None] = {}
        for name in {name for reasons in explaining for name, _ in reasons}:
            items = [
                r.item
                for r, reasons in zip(ranked, explaining, strict=True)
                if any(n == name for n, _ in reasons)
            ]
            found = self.sources[name].because_of_each(user_id, state.history, items)
            because.update(((name, item), b) for item, b in zip(items, found, strict=True))
        ids = self.catalog.ids
        listed = []
        for r, reasons in zip(ranked, explaining, strict=True):
            named = [(n, c, because[n, r.item]) for n, c in reasons]
            listed.append(
                Recommendation(
                    ids[r.item],
                    r.score,
                    self.titles[r.item],
                    [Reason(n, c, None if b is None else ids[b]) for n, c, b in named]
                    or [Reason(CATALOG, 0.0)],
                )
            )
        return listed

    def item_dependent_steps(self, state: UserState) -> dict[str, Any]:
        """The user's state in the sources whose user step reads the item side."""
        return {
            name: source.dump_user(state.history.own[name])
            for name, source in self.sources.items()
            if source.user_step_reads_items and name in state.history.own
        }

    def adopt_steps(self, state: UserState, steps: dict[str, Any]) -> None:
        """Set what ``item_dependent_steps`` gave for the same event, computed earlier."""
        for name, value in steps.items():
            if name in self.sources:
                state.history.own[name] = self.sources[name].load_user(value)

    # -- user state as stored data -----------------------------------------------------

    def dump_state(self, state: UserState) -> dict[str, Any]:
        return {
            "history": state.history.to_dict(self.catalog.ids, self.sources),
            "event_ids": list(state.recent_event_ids),
        }

    def load_state(self, data: dict[str, Any]) -> UserState:
        """A user's state as ``dump_state`` stored it, or as the former content-and-trending
        ranker did (a worker upgraded in place keeps its users' histories); one of
        ``UNREADABLE_STATE`` for a state it cannot read (a crafted changelog record)."""
        state = UserState()
        if not data:
            return state
        history = data.get("history")
        if not isinstance(history, dict):
            data = _from_first_format(data)
            history = data["history"]
        state.history = type(state.history).from_dict(history, self._index, self.sources)
        state.recent_event_ids.extend(data.get("event_ids", []))
        return state


def _from_first_format(data: dict[str, Any]) -> dict[str, Any]:
    """The first stored format (seen ids, recent positive items with weights, a content
    profile, event ids) in ``dump_state``'s: the CF factor starts afresh."""
    recent = [[item, float(weight)] for item, weight in data.get("history", [])]
    own: dict[str, Any] = {}
    if data.get("profile") is not None:
        own[CONTENT] = [data["profile"], float(data.get("profile_ts", 0.0))]
    return {
        "history": {
            "seen": list(data.get("seen", [])),
            "recent": recent,
            "last": [item for item, _ in recent],
            "events": int(data.get("events_applied", 0)),
            "own": own,
        },
        "event_ids": list(data.get("recent_event_ids", [])),
    }
