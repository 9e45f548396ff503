"""The server backend: a Qdrant server (or qdrant-client's local mode) through ``qdrant-client``."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from models.vector_store.base import (
    TRENDING_FIELD,
    Hit,
    StoredItem,
    VectorStore,
    hit_of,
    point_id,
    vectors_of,
)


class QdrantServerStore(VectorStore):
    """A Qdrant collection behind ``qdrant-client``.

    ``location`` is a server URL (``http://qdrant:6333``) or ``":memory:"`` for
    qdrant-client's in-process mode (brute force; tests and tiny catalogs only).
    """

    def __init__(
        self,
        location: str,
        vector_sizes: Mapping[str, int],
        collection: str = "items",
        api_key: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        super().__init__(vector_sizes)
        self.location = location
        self.collection = collection
        self.api_key = api_key
        self.timeout_s = timeout_s
        self._client: QdrantClient | None = None

    @property
    def client(self) -> QdrantClient:
        if self._client is None:
            raise RuntimeError("the vector store is not started: call start() first")
        return self._client

    def start(self) -> None:
        if self._client is not None:
            return
        if self.location == ":memory:":
            self._client = QdrantClient(location=":memory:")
        else:
            self._client = QdrantClient(
                url=self.location, api_key=self.api_key, timeout=int(self.timeout_s)
            )
        if not self._client.collection_exists(self.collection):
            self._client.create_collection(
                self.collection,
                vectors_config={
                    name: qm.VectorParams(size=size, distance=qm.Distance.COSINE)
                    for name, size in self.vector_sizes.items()
                },
            )
            self._client.create_payload_index(
                self.collection, TRENDING_FIELD, qm.PayloadSchemaType.FLOAT
            )

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def upsert(self, items: Sequence[StoredItem]) -> None:
        if not items:
            return
        self._check(items)
        points = [
            qm.PointStruct(
                id=point_id(item.item_id),
                vector={name: v.astype(np.float32).tolist() for name, v in item.vectors.items()},
                payload={**item.payload, "item_id": item.item_id},
            )
            for item in items
        ]
        self.client.upsert(self.collection, points=points, wait=True)

    def get(self, item_ids: Collection[str], with_vectors: bool = True) -> dict[str, StoredItem]:
        if not item_ids:
            return {}
        records = self.client.retrieve(
            self.collection,
            [point_id(i) for i in item_ids],
            with_payload=True,
            with_vectors=with_vectors,
        )
        return {
            r.payload["item_id"]: StoredItem(r.payload["item_id"], vectors_of(r.vector), r.payload)
            for r in records
            if r.payload
        }

    def nearest(
        self,
        vector: np.ndarray,
        using: str,
        limit: int,
        exclude: Collection[str] = (),
        with_vectors: bool = False,
    ) -> list[Hit]:
        response = self.client.query_points(
            self.collection,
            query=vector.astype(np.float32).tolist(),
            using=using,
            limit=limit,
            query_filter=_excluding(exclude),
            with_payload=True,
            with_vectors=with_vectors,
        )
        return [hit_of(point, point.score) for point in response.points]

    def top_by(
        self, field: str, limit: int, exclude: Collection[str] = (), with_vectors: bool = False
    ) -> list[Hit]:
        records, _ = self.client.scroll(
            self.collection,
            scroll_filter=_excluding(exclude),
            limit=limit,
            with_payload=True,
            with_vectors=with_vectors,
            order_by=qm.OrderBy(key=field, direction=qm.Direction.DESC),
        )
        return [hit_of(record, float(record.payload[field])) for record in records]

    def set_payload(self, item_id: str, values: Mapping[str, Any]) -> None:
        self.client.set_payload(
            self.collection, dict(values), points=[point_id(item_id)], wait=True
        )

    def scroll(self, batch_size: int = 256) -> Iterator[StoredItem]:
        offset = None
        while True:
            records, offset = self.client.scroll(
                self.collection,
                offset=offset,
                limit=batch_size,
                with_payload=True,
                with_vectors=True,
            )
            for r in records:
                yield StoredItem(r.payload["item_id"], vectors_of(r.vector), r.payload)
            if offset is None:
                return

    def count(self) -> int:
        return self.client.count(self.collection, exact=True).count


def _excluding(item_ids: Collection[str]) -> qm.Filter | None:
    if not item_ids:
        return None
    return qm.Filter(must_not=[qm.HasIdCondition(has_id=[point_id(i) for i in item_ids])])
