"""The vector store interface: one small facade over Qdrant's embedded and server engines."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Qdrant point ids must be integers or UUIDs; item ids are free text, so derive a UUID.
_ITEM_NAMESPACE = uuid.UUID("6f1c1a52-6a53-4f0c-9a55-3e1b1f0d2c11")

#: The payload field holding each item's decayed popularity; indexed for ordering.
TRENDING_FIELD = "trending"


def point_id(item_id: str) -> str:
    """The stable Qdrant point id of an item id.

    >>> point_id("movie-1") == point_id("movie-1") != point_id("movie-2")
    True
    """
    return str(uuid.uuid5(_ITEM_NAMESPACE, item_id))


@dataclass(frozen=True)
class StoredItem:
    """An item as stored: its named vectors and its payload (``item_id`` is always in it)."""

    item_id: str
    vectors: Mapping[str, np.ndarray]
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    """One result of a query, best first; ``vectors`` only when asked for."""

    item_id: str
    score: float
    payload: Mapping[str, Any]
    vectors: Mapping[str, np.ndarray] = field(default_factory=dict)


def vectors_of(raw: Any) -> dict[str, np.ndarray]:
    """Named vectors as returned by either Qdrant library, as float32 arrays."""
    if not raw or not isinstance(raw, dict):
        return {}
    return {name: np.asarray(values, dtype=np.float32) for name, values in raw.items()}


def hit_of(point: Any, score: float) -> Hit:
    """A Hit from either library's scored point or record (both have payload and vector)."""
    return Hit(point.payload["item_id"], float(score), point.payload, vectors_of(point.vector))


class VectorStore(ABC):
    """Items with named vectors and a payload, searchable by similarity and by a payload field.

    Every backend gives the same answers for the same calls (tests/test_vector_store_congruence.py).
    Cosine distance everywhere: stored vectors are compared by direction only.
    """

    def __init__(self, vector_sizes: Mapping[str, int]) -> None:
        self.vector_sizes = dict(vector_sizes)

    @abstractmethod
    def start(self) -> None:
        """Open (or create) the collection; idempotent."""

    @abstractmethod
    def stop(self) -> None:
        """Flush and release the collection."""

    @abstractmethod
    def upsert(self, items: Sequence[StoredItem]) -> None:
        """Insert or replace items; when this returns they are durable and searchable."""

    @abstractmethod
    def get(self, item_ids: Collection[str], with_vectors: bool = True) -> dict[str, StoredItem]:
        """The stored items among ``item_ids`` (unknown ids are absent from the result)."""

    @abstractmethod
    def nearest(
        self,
        vector: np.ndarray,
        using: str,
        limit: int,
        exclude: Collection[str] = (),
        with_vectors: bool = False,
    ) -> list[Hit]:
        """The ``limit`` items closest to ``vector`` on the named vector ``using``."""

    @abstractmethod
    def top_by(
        self, field: str, limit: int, exclude: Collection[str] = (), with_vectors: bool = False
    ) -> list[Hit]:
        """The ``limit`` items with the largest numeric payload ``field`` (score = that value)."""

    @abstractmethod
    def set_payload(self, item_id: str, values: Mapping[str, Any]) -> None:
        """Set some payload fields of one stored item, leaving the others."""

    @abstractmethod
    def scroll(self, batch_size: int = 256) -> Iterator[StoredItem]:
        """Every stored item with its vectors, in point-id order, fetched in pages."""

    @abstractmethod
    def count(self) -> int:
        """How many items are stored."""

    def __enter__(self) -> VectorStore:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _check(self, items: Sequence[StoredItem]) -> None:
        for item in items:
            for name, vector in item.vectors.items():
                expected = self.vector_sizes.get(name)
                if expected is None:
                    raise ValueError(f"unknown vector {name!r}; this store has {self.vector_sizes}")
                if vector.shape != (expected,):
                    raise ValueError(
                        f"vector {name!r} of {item.item_id!r} has shape {vector.shape}"
                    )
