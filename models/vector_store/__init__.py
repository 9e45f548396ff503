"""Vector stores: ``open_vector_store`` picks the backend from a location."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from models.vector_store.base import (
    Distance,
    Hit,
    IncompatibleStoreError,
    StoredItem,
    StoreFullError,
    UnreadableStoreError,
    VectorStore,
    point_id,
)
from models.vector_store.edge import EdgeVectorStore
from models.vector_store.server import QdrantServerStore

__all__ = [
    "Distance",
    "EdgeVectorStore",
    "Hit",
    "IncompatibleStoreError",
    "QdrantServerStore",
    "StoreFullError",
    "StoredItem",
    "UnreadableStoreError",
    "VectorStore",
    "open_vector_store",
    "point_id",
]


def open_vector_store(
    location: str | Path,
    vector_sizes: Mapping[str, int],
    distances: Mapping[str, Distance] | None = None,
    collection: str = "items",
    api_key: str | None = None,
    index_after: int = 0,
    min_free_bytes: int = 0,
) -> VectorStore:
    """A server store for ``http(s)://`` URLs and ``:memory:``, else an embedded shard at a
    path (indexed in the background past ``index_after`` unindexed points, refusing writes
    while its disk has less than ``min_free_bytes`` free)."""
    text = str(location)
    if text == ":memory:" or text.startswith(("http://", "https://")):
        return QdrantServerStore(
            text, vector_sizes, distances, collection=collection, api_key=api_key
        )
    path = Path(text) / collection
    return EdgeVectorStore(
        path, vector_sizes, distances, index_after=index_after, min_free_bytes=min_free_bytes
    )
