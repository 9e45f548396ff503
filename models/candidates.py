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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
                hits = self.store.nearest(
                    query,
                    using=source.retrieval_vector,
                    limit=self.per_source,
                    exclude=seen_ids,
                    with_payload=False,
                )
                found.update(catalog.index(h.item_id) for h in hits if h.item_id in catalog)
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
        return np.array(sorted(found), dtype=np.int64)
