"""The embedded store keeps free space in reserve: a write that could fill the disk is
refused before the engine, whose files are memory-mapped, is killed by SIGBUS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.vector_store import EdgeVectorStore, StoredItem, StoreFullError


def item(n: int) -> StoredItem:
    return StoredItem(f"i-{n}", {"content": np.array([1.0, float(n)])}, {"title": str(n)})


def test_writes_under_the_reserve_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    with EdgeVectorStore(tmp_path / "items", {"content": 2}) as store:
        store.upsert([item(0)])
        store.min_free_bytes = store.free_bytes() + 2**40  # a reserve this disk cannot hold
        assert not store.has_room()
        with pytest.raises(StoreFullError, match="min_free_disk_mb"):
            store.upsert([item(1)])
        with pytest.raises(StoreFullError):
            store.set_vectors({"i-0": {"content": np.array([0.0, 1.0])}})
        assert store.count() == 1
        assert store.get(["i-0"])["i-0"].vectors["content"].tolist() == [1.0, 0.0]
        store.min_free_bytes = 0
        store.upsert([item(1)])
        assert store.count() == 2


def test_an_index_build_is_not_started_when_its_copy_would_eat_the_reserve(
    tmp_path: Path,
) -> None:
    with EdgeVectorStore(tmp_path / "items", {"content": 2}, index_after=2) as store:
        store.upsert([item(n) for n in range(3)])
        size = sum(f.stat().st_size for f in (tmp_path / "items").rglob("*") if f.is_file())
        store.min_free_bytes = store.free_bytes() - size // 2  # room to write, not to copy
        while store.maintain():  # as the worker's upkeep: each step at once
            pass
        assert store._build is None
        assert not list(tmp_path.glob("items.indexing-*"))
