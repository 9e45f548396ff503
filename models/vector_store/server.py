"""The server backend: a Qdrant server (or qdrant-client's local mode) through ``qdrant-client``."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from models.vector_store.base import (
    Distance,
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
        distances: Mapping[str, Distance] | None = None,
        collection: str = "items",
        api_key: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        super().__init__(vector_sizes, distances)
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

    def _connect(self) -> QdrantClient:
        if self._client is None:
            if self.location == ":memory:":
                self._client = QdrantClient(location=":memory:")
            else:
                self._client = QdrantClient(
                    url=self.location, api_key=self.api_key, timeout=int(self.timeout_s)
                )
        return self._client

    def start(self) -> None:
        if not self._connect().collection_exists(self.collection):
            self._create()
            return
        found = self.client.get_collection(self.collection).config.params.vectors
        wanted = self._vectors_config()
        if not isinstance(found, dict) or {n: (p.size, p.distance) for n, p in found.items()} != {
            n: (p.size, p.distance) for n, p in wanted.items()
        }:
            raise self._incompatible(f"collection {self.collection!r}", found)

    def _vectors_config(self) -> dict[str, qm.VectorParams]:
        distance = {"cosine": qm.Distance.COSINE, "dot": qm.Distance.DOT}
        return {
            name: qm.VectorParams(size=size, distance=distance[self.distances[name]])
            for name, size in self.vector_sizes.items()
        }

    def _create(self) -> None:
        self.client.create_collection(self.collection, vectors_config=self._vectors_config())

    def reset(self) -> None:
        self._connect().delete_collection(self.collection)
        self._create()

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def upsert(self, items: Sequence[StoredItem]) -> None:
        if not items:
            return
        self._check({item.item_id: item.vectors for item in items})
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
        points = self._query(vector, using, limit, exclude, True, with_vectors)
        return [hit_of(point, point.score) for point in points]

    def nearest_ids(
        self, vector: np.ndarray, using: str, limit: int, exclude: Collection[str] = ()
    ) -> list[str]:
        points = self._query(vector, using, limit, exclude, ["item_id"])
        return [point.payload["item_id"] for point in points]

    def _query(
        self,
        vector: np.ndarray,
        using: str,
        limit: int,
        exclude: Collection[str],
        with_payload: bool | list[str],
        with_vectors: bool = False,
    ) -> list[qm.ScoredPoint]:
        response = self.client.query_points(
            self.collection,
            query=vector.astype(np.float32).tolist(),
            using=using,
            limit=limit,
            query_filter=_excluding(exclude),
            with_payload=with_payload,
            with_vectors=with_vectors,
        )
        return response.points

    def set_vectors(self, vectors: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        if not vectors:
            return
        self._check(vectors)
        points = [
            qm.PointVectors(
                id=point_id(item_id),
                vector={name: v.astype(np.float32).tolist() for name, v in named.items()},
            )
            for item_id, named in vectors.items()
        ]
        self.client.update_vectors(self.collection, points=points, wait=True)

    def scroll(self, batch_size: int = 256, with_vectors: bool = True) -> Iterator[StoredItem]:
        offset = None
        while True:
            records, offset = self.client.scroll(
                self.collection,
                offset=offset,
                limit=batch_size,
                with_payload=True,
                with_vectors=with_vectors,
            )
            for r in records:
                yield StoredItem(r.payload["item_id"], vectors_of(r.vector), r.payload)
            if offset is None:
                return

    def count(self) -> int:
        return self.client.count(self.collection, exact=True).count

    @property
    def unindexed(self) -> int:
        """0: a Qdrant server indexes by itself (searching what it has not indexed yet)."""
        return 0

    def maintain(self) -> bool:
        """Nothing: a Qdrant server indexes by itself."""
        return False


def _excluding(item_ids: Collection[str]) -> qm.Filter | None:
    if not item_ids:
        return None
    return qm.Filter(must_not=[qm.HasIdCondition(has_id=[point_id(i) for i in item_ids])])
