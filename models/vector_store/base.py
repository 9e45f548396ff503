"""The vector store interface: one small facade over Qdrant's embedded and server engines."""

from __future__ import annotations

import functools
import uuid
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

import numpy as np

#: Qdrant point ids must be integers or UUIDs; item ids are free text, so derive a UUID.
_ITEM_NAMESPACE = uuid.UUID("6f1c1a52-6a53-4f0c-9a55-3e1b1f0d2c11")

#: How a named vector is compared: by direction (cosine) or by dot product, for vectors
#: whose length carries meaning (a CF factor with its bias).
Distance = Literal["cosine", "dot"]


class IncompatibleStoreError(RuntimeError):
    """The stored collection was made with other named vectors (an older version, or
    other encoders) than the store was opened with."""


class StoreFullError(OSError):
    """The store's disk has less free space than the store keeps in reserve: a write now
    could fill it, and the embedded engine, whose files are memory-mapped, is then killed
    by SIGBUS (measured: a full data disk ended the worker with signal 7). Nothing was
    written; the same write succeeds once there is room."""


class UnreadableStoreError(IncompatibleStoreError):
    """The stored collection cannot be read back (damaged files): it is rebuilt like an
    incompatible one, from the item-updates topic it is derived from."""


@functools.lru_cache(maxsize=1 << 20)  # a user's seen items are excluded on every query
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


class Hit(NamedTuple):
    """One result of a query, best first; ``vectors`` only when asked for. A tuple, not a
    frozen dataclass: a query makes hundreds, and a frozen dataclass's ``__init__`` was
    4% of a 100k-item worker's time while candidate queries still built hits
    (``nearest_ids`` builds none)."""

    item_id: str
    score: float
    payload: Mapping[str, Any]
    vectors: Mapping[str, np.ndarray] = MappingProxyType({})


def vectors_of(raw: Any) -> dict[str, np.ndarray]:
    """Named vectors as returned by either Qdrant library, as float32 arrays."""
    if not raw or not isinstance(raw, dict):
        return {}
    return {name: np.asarray(values, dtype=np.float32) for name, values in raw.items()}


def hit_of(point: Any, score: float) -> Hit:
    """A Hit from either library's scored point or record (both have payload and vector)."""
    payload = point.payload  # built anew by each read, in qdrant-edge
    return Hit(payload["item_id"], float(score), payload, vectors_of(point.vector))


class VectorStore(ABC):
    """Items with named vectors and a payload, searchable by similarity and by a payload field.

    Every backend gives the same answers for the same calls
    (tests/unit/test_vector_store_congruence.py).
    Named vectors are compared by cosine unless ``distances`` says ``dot``.
    """

    def __init__(
        self, vector_sizes: Mapping[str, int], distances: Mapping[str, Distance] | None = None
    ) -> None:
        self.vector_sizes = dict(vector_sizes)
        self.distances: dict[str, Distance] = {
            name: (distances or {}).get(name, "cosine") for name in self.vector_sizes
        }

    @abstractmethod
    def start(self) -> None:
        """Open (or create) the collection; idempotent. Raises IncompatibleStoreError
        when the stored collection has other named vectors, sizes or distances."""

    @abstractmethod
    def reset(self) -> None:
        """Delete the collection and start an empty one with this store's vectors."""

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
    def nearest_ids(
        self, vector: np.ndarray, using: str, limit: int, exclude: Collection[str] = ()
    ) -> list[str]:
        """The ids of ``nearest``'s items, in its order: what the candidate stage asks at
        each list, read without the rest of the payload or a hit per item (whole payloads
        were a quarter of a worker's time at 100k items, then a hit per item a tenth)."""

    @abstractmethod
    def set_vectors(self, vectors: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Replace some named vectors of stored items (item id -> name -> vector), leaving
        their other vectors and payload; every item must be stored already."""

    @abstractmethod
    def scroll(self, batch_size: int = 256, with_vectors: bool = True) -> Iterator[StoredItem]:
        """Every stored item (with its vectors unless told not), in point-id order,
        fetched in pages."""

    @abstractmethod
    def count(self) -> int:
        """How many items are stored."""

    @property
    @abstractmethod
    def unindexed(self) -> int:
        """Items outside the vector index, each query reading them all."""

    def has_room(self) -> bool:
        """Whether a write may be made now (``StoreFullError`` otherwise); a server's disk
        is the server's to watch."""
        return True

    @abstractmethod
    def maintain(self) -> bool:
        """Periodic upkeep, called by the worker (the embedded backend builds its HNSW
        index here); whether it has more to do at once (call again after a short pause)."""
        return False

    def __enter__(self) -> VectorStore:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _check(self, vectors: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Refuse vectors this store has no index for (item id -> name -> vector)."""
        for item_id, named in vectors.items():
            for name, vector in named.items():
                expected = self.vector_sizes.get(name)
                if expected is None:
                    raise ValueError(f"unknown vector {name!r}; this store has {self.vector_sizes}")
                if vector.shape != (expected,):
                    raise ValueError(f"vector {name!r} of {item_id!r} has shape {vector.shape}")

    def _incompatible(self, where: str, found: object) -> IncompatibleStoreError:
        wanted = {n: (self.vector_sizes[n], self.distances[n]) for n in self.vector_sizes}
        return IncompatibleStoreError(
            f"the vector store {where} was made with the vectors {found}, not {wanted} (an "
            "older version, or other encoders): use a new data_dir or collection, or delete "
            "it to rebuild it from the item-updates topic"
        )
