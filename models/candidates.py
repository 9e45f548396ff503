"""The candidate stage: which items of a large catalog are worth ranking for a user.

Ranking scores every unseen item with every source, which is exact but reads the
whole catalog per list. Above ``dense_max_items`` items the hybrid ranks only the
candidates this stage retrieves: each source's ``per_source`` best items for the user,
asked from the vector store for the sources that have a named vector there (``content``:
the user's content profile; ``cf``: the user's factor against ``[item factor, bias]``
by dot product, so the store's nearest are exactly the CF's best) and taken from the
in-memory item side for the others (item-item co-engagement with the user's recent
items, trending). Seen items are filtered out in the store query itself.

The CF vectors in the store follow the item side in micro-batches
(``HybridRecommender.publish_cf``), so between two publishes the store's CF neighbours
are a little behind the in-memory factors; the ranking itself always reads the latter.

A click is ranked twice: the learned blend's step ranks the list the user had before
it, and the list after it is ranked anew. The first is the list already served, so its
candidates are kept per user (``last_served``) instead of asked from the store again:
half of a click's queries at 100k items, where they were a third of the worker's time
(docs/scale.md).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from models.sources import Catalog, Source, UserHistory

if TYPE_CHECKING:  # the Qdrant clients take seconds to import; the evaluation needs neither
    from models.vector_store import VectorStore


@dataclass
class CandidateStage:
    """Retrieves candidates from ``store`` once the catalog has more than ``dense_max_items``.

    >>> import tempfile
    >>> from models.vector_store import EdgeVectorStore, StoredItem
    >>> from models.sources import ContentSimilarity
    >>> catalog, content, history = Catalog(), ContentSimilarity(dim=2), UserHistory()
    >>> store = EdgeVectorStore(tempfile.mkdtemp(), {"content": 2})
    >>> store.start()
    >>> for item_id, vector in [("a", [1.0, 0.0]), ("b", [0.9, 0.1]), ("c", [0.0, 1.0])]:
    ...     content.set_vector(catalog.add(item_id), np.array(vector))
    ...     store.upsert([StoredItem(item_id, {"content": np.array(vector)})])
    >>> content.learn_one("u", 0, 1.0, 0.0, history); history.add(0, 1.0)
    >>> stage = CandidateStage(store, per_source=1, dense_max_items=0)
    >>> [catalog.ids[i] for i in stage.retrieve({"content": content}, catalog, "u", history, 0.0)]
    ['b']
    >>> store.stop()
    """

    store: VectorStore
    per_source: int = 200
    dense_max_items: int = 20_000
    #: Users whose last candidates are kept (``last_served``), least recently ranked
    #: forgotten first: at most 4 bytes per candidate, about 32 MB at the defaults.
    remembered_users: int = 10_000
    _served: OrderedDict[str, tuple[tuple[int, ...], np.ndarray]] = field(
        default_factory=OrderedDict, init=False, repr=False
    )

    def applies(self, n_items: int) -> bool:
        return n_items > self.dense_max_items

    def retrieve(
        self,
        sources: Mapping[str, Source],
        catalog: Catalog,
        user: str,
        history: UserHistory,
        now: float,
    ) -> np.ndarray:
        """The candidate item indexes for ``user``, sorted, none of them seen."""
        n_items = len(catalog)
        seen_ids = [catalog.ids[i] for i in history.seen if i < n_items]
        found: set[int] = set()
        for source in sources.values():
            if source.retrieval_vector is not None:
                query = source.retrieval_query(user, history, now)
                if query is None:
                    continue
                ids = self.store.nearest_ids(
                    query, using=source.retrieval_vector, limit=self.per_source, exclude=seen_ids
                )
                found.update(catalog.known_indexes(ids))
            else:
                found.update(source.best_items(user, history, self.per_source, n_items, now))
        found.difference_update(history.seen)
        # Nothing vouches for enough items (a new deployment): fill from the catalog, in
        # its order, as dense ranking does.
        fill = (i for i in range(n_items) if i not in history.seen and i not in found)
        for item in fill:
            if len(found) >= self.per_source:
                break
            found.add(item)
        items = np.array(sorted(found), dtype=np.int64)
        if self.remembered_users > 0:
            self._served[user] = (_fingerprint(catalog, history), items.astype(np.int32))
            self._served.move_to_end(user)
            while len(self._served) > self.remembered_users:
                self._served.popitem(last=False)
        return items

    def last_served(
        self,
        sources: Mapping[str, Source],
        catalog: Catalog,
        user: str,
        history: UserHistory,
        now: float,
    ) -> np.ndarray:
        """The candidates the user's last list was ranked from, if neither the user's
        history nor the catalog's size changed since; otherwise ``retrieve`` them now.

        What the learned blend's step ranks: the list the user had when they clicked.
        Between the two the store's CF vectors may have moved on (other users' clicks),
        as between two publishes; a worker that never ranked for the user (after a
        restart, a rebalance) retrieves, so a step may draw its negatives from a
        slightly different set there than in a replay.
        """
        kept = self._served.get(user)
        if kept is not None and kept[0] == _fingerprint(catalog, history):
            self._served.move_to_end(user)
            return kept[1].astype(np.int64)
        return self.retrieve(sources, catalog, user, history, now)


def _fingerprint(catalog: Catalog, history: UserHistory) -> tuple[int, ...]:
    """What retrieval read that changes only with a new item or the user's next event."""
    return (len(catalog), history.events, *history.last)
