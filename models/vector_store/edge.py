"""The embedded backend: Qdrant Edge (``qdrant-edge-py``), in process and persisted on disk."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import qdrant_edge as qe

from models.vector_store.base import (
    Distance,
    Hit,
    StoredItem,
    UnreadableStoreError,
    VectorStore,
    hit_of,
    point_id,
    vectors_of,
)


class EdgeVectorStore(VectorStore):
    """A Qdrant Edge shard in a directory: HNSW, payload indexes, WAL; no server.

    With no ``vector_sizes``, an existing shard opens with the vectors it was made with
    (to read a worker's store).

    >>> import tempfile, numpy as np
    >>> with EdgeVectorStore(tempfile.mkdtemp(), {"content": 2}) as store:
    ...     store.upsert([StoredItem("a", {"content": np.array([1.0, 0.0])}, {"title": "A"}),
    ...                   StoredItem("b", {"content": np.array([0.0, 1.0])}, {"title": "B"})])
    ...     [hit.item_id for hit in store.nearest(np.array([0.9, 0.1]), "content", limit=2)]
    ['a', 'b']
    """

    def __init__(
        self,
        path: str | Path,
        vector_sizes: Mapping[str, int],
        distances: Mapping[str, Distance] | None = None,
        open_timeout_s: float = 120.0,
    ) -> None:
        super().__init__(vector_sizes, distances)
        self.path = Path(path)
        #: How long a trial opening of an existing shard may take (``start``).
        self.open_timeout_s = open_timeout_s
        self._shard: qe.EdgeShard | None = None

    def _config(self) -> qe.EdgeConfig | None:
        if not self.vector_sizes:
            return None  # open an existing shard with the vectors it was made with
        distance = {"cosine": qe.Distance.Cosine, "dot": qe.Distance.Dot}
        return qe.EdgeConfig(
            vectors={
                name: qe.EdgeVectorParams(size=size, distance=distance[self.distances[name]])
                for name, size in self.vector_sizes.items()
            }
        )

    @property
    def shard(self) -> qe.EdgeShard:
        if self._shard is None:
            raise RuntimeError("the vector store is not started: call start() first")
        return self._shard

    def start(self) -> None:
        """Open the shard, or create it. A shard that cannot be opened (a write-ahead log
        cut by a crash, a damaged segment) raises ``UnreadableStoreError``: the store is
        derived, so the caller rebuilds it (``reset``) rather than failing to start.

        Some damage makes the engine abort the process instead of raising (a native abort
        cannot be caught). An ``.opening`` marker beside the shard is written before it is
        opened and removed after, so a process that died opening it leaves the marker
        behind, and the next start reports the shard unreadable without opening it: a
        worker dies once on such a store, never in a loop
        (``test_a_damaged_store_opens_or_is_reported_unreadable_and_rebuilt``)."""
        if self._shard is not None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        exists = (self.path / "edge_config.json").exists()
        if exists and self._opening.exists():
            raise UnreadableStoreError(
                f"the vector store in {self.path} ended the process the last time it was "
                "opened: it is not opened again"
            )
        if exists:
            self._open_in_a_child()
            with self._opening.open("wb") as marker:
                marker.flush()
                os.fsync(marker.fileno())
        try:
            if exists:
                self._shard = qe.EdgeShard.load(str(self.path), self._config())
            else:
                self._shard = qe.EdgeShard.create(str(self.path), self._config())
        except BaseException as error:
            if isinstance(error, KeyboardInterrupt | SystemExit):
                raise
            if exists and "incompatible" in str(error):
                raise self._incompatible(f"in {self.path}", error) from error
            # A Rust panic reaches Python as a BaseException (pyo3's PanicException).
            raise UnreadableStoreError(
                f"the vector store in {self.path} cannot be opened "
                f"({type(error).__name__}: {str(error)[:300]})"
            ) from error
        finally:
            if exists:  # the process lived through the opening, whatever its outcome
                self._opening.unlink(missing_ok=True)

    def _open_in_a_child(self) -> None:
        """Open the shard once in a child process, with a time and a memory bound, before
        this process opens it: a damaged id tracker made the engine run for minutes and
        take 13 GB opening one (a worker would hang at every start), and other damage
        aborts natively. Either way the shard is reported unreadable, not opened here."""
        limit = 2 * 2**30 + 4 * sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        try:
            child = subprocess.run(
                [sys.executable, "-c", _OPEN_AND_CLOSE, str(self.path), str(limit)],
                capture_output=True,
                timeout=self.open_timeout_s,
            )
        except subprocess.TimeoutExpired:
            raise UnreadableStoreError(
                f"the vector store in {self.path} did not open within "
                f"{self.open_timeout_s:.0f}s in a trial opening"
            ) from None
        if child.returncode != 0:
            said = [
                line
                for line in child.stderr.decode(errors="replace").strip().splitlines()
                if not line.startswith("note:")  # Rust's advice on backtraces
            ]
            raise UnreadableStoreError(
                f"the vector store in {self.path} cannot be opened (a trial opening ended "
                f"with {child.returncode}: {said[-1][:300] if said else 'no message'})"
            )

    @property
    def _opening(self) -> Path:
        return self.path.with_name(self.path.name + ".opening")

    def reset(self) -> None:
        """Move the shard aside (the last one moved aside is kept, for a post-mortem) and
        start an empty one."""
        if self._shard is not None:
            self._shard.close()
            self._shard = None
        if self.path.exists():
            aside = self.path.with_name(self.path.name + ".unreadable")
            shutil.rmtree(aside, ignore_errors=True)
            self.path.rename(aside)
        self._opening.unlink(missing_ok=True)
        self.start()

    def stop(self) -> None:
        if self._shard is not None:
            self._shard.flush()
            self._shard.close()
            self._shard = None

    def upsert(self, items: Sequence[StoredItem]) -> None:
        if not items:
            return
        self._check({item.item_id: item.vectors for item in items})
        points = [
            qe.Point(
                point_id(item.item_id),
                {name: vector.astype(np.float32).tolist() for name, vector in item.vectors.items()},
                {**item.payload, "item_id": item.item_id},
            )
            for item in items
        ]
        self.shard.update(qe.UpdateOperation.upsert_points(points))

    def get(self, item_ids: Collection[str], with_vectors: bool = True) -> dict[str, StoredItem]:
        if not item_ids:
            return {}
        records = self.shard.retrieve([point_id(i) for i in item_ids], True, with_vectors)
        return {
            record.payload["item_id"]: StoredItem(
                record.payload["item_id"], vectors_of(record.vector), record.payload
            )
            for record in records
        }

    def nearest(
        self,
        vector: np.ndarray,
        using: str,
        limit: int,
        exclude: Collection[str] = (),
        with_vectors: bool = False,
        with_payload: bool = True,
    ) -> list[Hit]:
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(vector.astype(np.float32).tolist(), using=using),
            filter=_excluding(exclude),
            with_payload=True if with_payload else qe.PayloadSelector.Include(["item_id"]),
            with_vector=with_vectors,
        )
        return [hit_of(point, point.score) for point in self.shard.query(request)]

    def set_vectors(self, vectors: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        if not vectors:
            return
        self._check(vectors)
        points = [
            qe.PointVectors(
                point_id(item_id),
                {name: vector.astype(np.float32).tolist() for name, vector in named.items()},
            )
            for item_id, named in vectors.items()
        ]
        self.shard.update(qe.UpdateOperation.update_vectors(points))

    def scroll(self, batch_size: int = 256, with_vectors: bool = True) -> Iterator[StoredItem]:
        offset = None
        while True:
            records, offset = self.shard.scroll(
                qe.ScrollRequest(
                    offset=offset, limit=batch_size, with_payload=True, with_vector=with_vectors
                )
            )
            for record in records:
                item_id = record.payload["item_id"]
                yield StoredItem(item_id, vectors_of(record.vector), record.payload)
            if offset is None:
                return

    def count(self) -> int:
        return self.shard.info().points_count


#: The trial opening of ``_open_in_a_child``: the engine alone, not this package, under
#: an address-space limit it sets itself (``preexec_fn`` is unsafe in a threaded worker).
_OPEN_AND_CLOSE = """
import resource, sys
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import qdrant_edge
qdrant_edge.EdgeShard.load(sys.argv[1], None).close()
"""


def _excluding(item_ids: Collection[str]) -> qe.Filter | None:
    if not item_ids:
        return None
    return qe.Filter(must_not=[qe.HasIdCondition({point_id(i) for i in item_ids})])
