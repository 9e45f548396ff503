"""The embedded backend: Qdrant Edge (``qdrant-edge-py``), in process and persisted on disk."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from models.atomic_file import set_aside
from models.vector_store.base import (
    Distance,
    Hit,
    StoredItem,
    StoreFullError,
    UnreadableStoreError,
    VectorStore,
    hit_of,
    point_id,
    vectors_of,
)
from models.vector_store.edge_index import IndexBuild

log = logging.getLogger(__name__)

#: A file in the shard's directory (the engine ignores it): how many points its last
#: build indexed and, as of the last stop, the points changed since; so ``unindexed``
#: survives restarts (a worker restarted more often than it builds would otherwise let
#: its plain segment grow for good) and goes with the shard.
INDEXED_MARKER = "streamrec-indexed.json"

#: How long one ``maintain`` call applies journaled writes to a finished build's copy
#: (it applies at least those journaled since the call before, and one more).
CATCH_UP_STEP_S = 0.02


class EdgeVectorStore(VectorStore):
    """A Qdrant Edge shard in a directory: HNSW, payload indexes, WAL; no server.

    With no ``vector_sizes``, an existing shard opens with the vectors it was made with
    (to read a worker's store). With ``index_after``, ``maintain`` builds an HNSW index
    in another process once that many points are outside one (``edge_index.py``).

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
        index_after: int = 0,
        index_threads: int = 1,
        index_retry_s: float = 300.0,
        min_free_bytes: int = 0,
    ) -> None:
        super().__init__(vector_sizes, distances)
        self.path = Path(path)
        #: Free space on the shard's disk below which writes are refused (``StoreFullError``).
        self.min_free_bytes = min_free_bytes
        #: How long a trial opening of an existing shard may take (``start``).
        self.open_timeout_s = open_timeout_s
        #: Points outside the HNSW index that start a build (``maintain``); 0: never.
        self.index_after = index_after
        #: Threads the build's child process may use.
        self.index_threads = index_threads
        #: After a failed build (a full disk, a child that died), how long until the next.
        self.index_retry_s = index_retry_s
        self._next_build = 0.0  # time.monotonic()
        self._shard: qe.EdgeShard | None = None
        # A swap closes the shard: the lock keeps it from doing so under a call from
        # another thread (the worker makes them all on its loop today).
        self._lock = threading.RLock()
        self._build: IndexBuild | None = None
        #: The writes made since the running build's copy, to apply again to it.
        self._journal: list[qe.UpdateOperation] = []
        self._journaled_points = 0
        #: A finished build's copy, open while the journal is applied to it, and how
        #: much of the journal it holds.
        self._built: qe.EdgeShard | None = None
        self._journal_applied = self._journal_seen = 0
        self.catch_up_step_s = CATCH_UP_STEP_S
        self._built_flushed = self._flush_put_off = False
        #: Removes the shard a swap replaced, off the caller's thread (files only).
        self._remover: threading.Thread | None = None
        # Points whose vectors changed since the last build's copy: the engine moves a
        # changed point out of its indexed segment into a plain one (a CF vector update
        # too), so they are outside the index as much as new points.
        self._changed: set[str] = set()
        self._changed_before_build: set[str] = set()
        #: Points the swapped-in build indexed.
        self._indexed = 0

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
        self._join_remover()
        self._recover_swap()
        self._indexed, self._changed = self._read_marker()
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
        try:
            child = subprocess.run(
                [sys.executable, "-c", _OPEN_AND_CLOSE, str(self.path), str(self._trial_bytes())],
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

    def _trial_bytes(self) -> int:
        """The trial opening's address-space bound: 2 GiB and four times the shard's files,
        each counted at most at what it holds on disk and ``SPARSE_ALLOWANCE_BYTES``."""
        held = 0
        for file in self.path.rglob("*"):
            if file.is_file():
                stat = file.stat()
                held += min(stat.st_size, stat.st_blocks * 512 + SPARSE_ALLOWANCE_BYTES)
        return 2 * 2**30 + 4 * held

    @property
    def _opening(self) -> Path:
        return self.path.with_name(self.path.name + ".opening")

    def reset(self) -> None:
        """Move the shard aside (the last one moved aside is kept, for a post-mortem) and
        start an empty one."""
        self._cancel_build()
        self._join_remover()
        if self._shard is not None:
            self._shard.close()
            self._shard = None
        if self.path.exists():
            set_aside(self.path)
        self._opening.unlink(missing_ok=True)
        self.start()

    def stop(self) -> None:
        self._cancel_build()
        self._join_remover()
        if self._shard is not None:
            if self._changed:
                self._write_marker(self.path, self._indexed, self._changed)
            self._shard.flush()
            self._shard.close()
            self._shard = None

    # -- the HNSW index, built in another process ---------------------------------------

    @property
    def indexing(self) -> bool:
        """Whether a build is running."""
        return self._build is not None

    @property
    def unindexed(self) -> int:
        """Points added, or stored before and changed, since the last build's copy (all
        when none was built)."""
        count = self.count()
        return min(max(count - self._indexed, 0) + len(self._changed), count)

    def maintain(self) -> bool:
        """Swap a finished build in, or start one once ``index_after`` points are outside
        the index. Called periodically by the worker; without a finished build, a flush of
        what was written since the last call and a count.
        Returns whether it has more to do at once (the caller calls again after a short
        pause rather than its usual interval): a finished build's copy is catching up with
        the writes made during the build, ``catch_up_step_s`` per call. The engine holds
        the GIL while it writes, so the caller's loop stops for one step at a time.

        While a build runs, writes are journaled; past ``index_after`` new points the
        build is dropped (it would be out of date when done) and a later call starts
        again, so the journal holds at most that many new points.
        """
        with self._lock:  # no write between what is checked here and what is done
            return self._maintain()

    def _maintain(self) -> bool:
        if self._built is None and self._shard is not None:  # not a catch-up step
            # The writes since the last call (5 to 20 ms for a few thousand points; the
            # engine never flushes by itself), so the flush before a build's copy is as
            # short (the writes since an upload of 100k items took 250 ms).
            self.shard.flush()
        if self._build is not None:
            done = self._build.poll()
            if done is None:
                if self._journaled_points <= self.index_after:
                    return False
                log.info(
                    "vector index: %d points added during the build; restarting it",
                    self._journaled_points,
                )
                self._cancel_build()
            elif done:
                return self._catch_up(self._build)
            else:
                self._failed(f"the build {self._build.error}")
                return False
        if (
            self.index_after <= 0
            or not self.vector_sizes
            or time.monotonic() < self._next_build
            or self.unindexed < self.index_after
        ):
            return False
        # Flushed above: the copy is of what the shard holds.
        vectors = {n: (size, self.distances[n]) for n, size in self.vector_sizes.items()}
        # Named per build: a child outliving its worker writes nowhere a later build
        # reads; the pid says at start whether that worker still runs.
        name = f"{self.path.name}.indexing-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        target = self.path.with_name(name)
        # The copy must leave the reserve free: a disk the copy fills kills the shard.
        needed = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        if self.free_bytes() < needed + self.min_free_bytes:
            self._failed(f"no room for a {needed / 2**20:.0f} MB copy of the shard")
            return False
        try:
            build = IndexBuild(self.path, target, vectors, self.count(), self.index_threads)
        except OSError as error:  # no room for the copy, no process to start
            self._failed(f"could not start a build ({error})")
            return False
        self._build = build
        self._changed_before_build, self._changed = self._changed, set()
        log.info("vector index: building over %d points in another process", build.points)
        return False

    def _catch_up(self, build: IndexBuild) -> bool:
        """Apply journaled writes to the built copy for ``catch_up_step_s`` (it is opened
        by the first call, and flushed in a call of its own once it holds them all), or
        swap it in; whether to call again."""
        try:
            if self._built is None:  # opening it is a step of its own
                self._built = qe.EdgeShard.load(str(build.target), self._config())
                self._journal_applied, self._journal_seen = 0, len(self._journal)
                self._built_flushed = self._flush_put_off = False
                return True
            # At least what was journaled since the last step, and one more: the backlog
            # shrinks at every step however fast writes come (an upload's batches).
            started = self._journal_applied
            least = started + len(self._journal) - self._journal_seen + 1
            self._journal_seen = len(self._journal)
            ends = time.monotonic() + self.catch_up_step_s
            while self._journal_applied < len(self._journal) and (
                self._journal_applied < least or time.monotonic() < ends
            ):
                self._built.update(self._journal[self._journal_applied])
                self._journal_applied += 1
            if self._journal_applied < len(self._journal):
                return True
            if not self._built_flushed:
                # Its flush in a call of its own (at most once put off for that: writes may
                # come before every call), then the swap's is short.
                if self._journal_applied > started and not self._flush_put_off:
                    self._flush_put_off = True
                    return True
                self._built.flush()
                self._built_flushed = True
                return True
        except BaseException as error:
            if isinstance(error, KeyboardInterrupt | SystemExit):
                raise
            self._failed(f"the built copy cannot be used ({str(error)[:300]})")
            return False
        self._swap_in(build, self._built)
        return False

    def _failed(self, why: str) -> None:
        self._cancel_build()
        self._next_build = time.monotonic() + self.index_retry_s
        log.warning("vector index: %s; the next try in %.0f s", why, self.index_retry_s)

    def _swap_in(self, build: IndexBuild, indexed: qe.EdgeShard) -> None:
        """The indexed copy (open: ``indexed``), holding the whole journal, is flushed and
        replaces the shard; ``maintain`` holds the store's lock.

        A crash between the two renames leaves the old shard ``.replaced``; ``start``
        puts it back if the new one is not in place (``_recover_swap``)."""
        replaced = self.path.with_name(self.path.name + ".replaced")
        self._built = None  # closed here, or (failing) removed with the build
        try:
            indexed.flush()
            indexed.close()
            self._write_marker(build.target, build.points, ())
        except BaseException as error:
            if isinstance(error, KeyboardInterrupt | SystemExit):
                raise
            self._failed(f"the built copy cannot be used ({str(error)[:300]})")
            return
        self._join_remover()  # the last swap's: before the store has no shard open
        self.shard.close()
        self._shard = None
        try:
            shutil.rmtree(replaced, ignore_errors=True)
            self.path.rename(replaced)
            build.target.rename(self.path)
        except OSError as error:  # the old shard stays, or is put back
            if replaced.exists() and not self.path.exists():
                replaced.rename(self.path)
            self._shard = qe.EdgeShard.load(str(self.path), self._config())
            self._failed(f"the built copy could not be moved in ({error})")
            return
        try:
            self._shard = qe.EdgeShard.load(str(self.path), self._config())
        except BaseException as error:
            if isinstance(error, KeyboardInterrupt | SystemExit):
                raise
            shutil.rmtree(self.path, ignore_errors=True)
            replaced.rename(self.path)
            self._shard = qe.EdgeShard.load(str(self.path), self._config())
            self._failed(f"the indexed shard did not open ({str(error)[:300]})")
            return
        self._remover = threading.Thread(
            target=shutil.rmtree, args=(replaced, True), name="remove-replaced-shard"
        )
        self._remover.start()
        build.discard()
        self._build, self._journal, self._journaled_points = None, [], 0
        self._indexed, self._changed_before_build = build.points, set()
        # At most half the time building: points that change during a build are
        # outside the index after it, and enough of them would start the next at once.
        self._next_build = time.monotonic() + (time.monotonic() - build.started)
        log.info("vector index: %d points indexed, swapped in", build.points)

    def _join_remover(self) -> None:
        if self._remover is not None:
            self._remover.join()
            self._remover = None

    def _cancel_build(self) -> None:
        built, self._built = self._built, None
        if built is not None:
            try:
                built.close()
            except BaseException as error:  # a native panic too: removed next, closed or not
                if isinstance(error, KeyboardInterrupt | SystemExit):
                    raise
                log.warning("vector index: the built copy did not close (%s)", error)
        if self._build is not None:
            self._build.cancel()
        self._build, self._journal, self._journaled_points = None, [], 0
        self._changed |= self._changed_before_build
        self._changed_before_build = set()

    def _recover_swap(self) -> None:
        """Undo what a crash left of a swap or a build."""
        replaced = self.path.with_name(self.path.name + ".replaced")
        if replaced.exists():
            if (self.path / "edge_config.json").exists():  # the new shard was in place
                shutil.rmtree(replaced)
            else:
                shutil.rmtree(self.path, ignore_errors=True)
                replaced.rename(self.path)
        for leftover in self.path.parent.glob(self.path.name + ".indexing-*"):
            pid = leftover.name.rsplit("-", 2)[-2]
            # This process's own pid too: a worker restarted in a container is pid 1 again.
            if not pid.isdigit() or int(pid) == os.getpid() or not _running(int(pid)):
                shutil.rmtree(leftover, ignore_errors=True)

    def _read_marker(self) -> tuple[int, set[str]]:
        """Points indexed, and changed since, as the marker says; none if it is absent or
        unreadable (the next build comes sooner, no harm)."""
        try:
            marker = json.loads((self.path / INDEXED_MARKER).read_text())
            return int(marker["indexed"]), {str(i) for i in marker["changed"]}
        except (OSError, ValueError, TypeError, KeyError):
            return 0, set()

    @staticmethod
    def _write_marker(shard: Path, indexed: int, changed: Collection[str]) -> None:
        (shard / INDEXED_MARKER).write_text(
            json.dumps({"indexed": indexed, "changed": sorted(changed)})
        )

    def free_bytes(self) -> int:
        """Free space on the shard's disk (for an unprivileged process)."""
        return shutil.disk_usage(self.path if self.path.exists() else self.path.parent).free

    def has_room(self) -> bool:
        if self.min_free_bytes <= 0:
            return True
        try:
            return self.free_bytes() >= self.min_free_bytes
        except OSError:  # the directory is gone: the write will say what is wrong
            return True

    def _update(
        self, operation: qe.UpdateOperation, new_points: int, changed: Collection[str] = ()
    ) -> None:
        if not self.has_room():
            raise StoreFullError(
                f"{self.path} has {self.free_bytes() / 2**20:.0f} MB free, under the "
                f"{self.min_free_bytes / 2**20:.0f} MB kept in reserve (min_free_disk_mb): "
                "free space on that disk, or give data_dir a larger one"
            )
        with self._lock:
            self.shard.update(operation)
            if self.index_after > 0:
                self._changed.update(changed)
            if self._build is not None:
                self._journal.append(operation)
                self._journaled_points += new_points

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
        # An existing point upserted again (a re-upload, a fusion refit) leaves the index
        # as a changed one does; only the others are new.
        ids = [item.item_id for item in items]
        stored = set(self.get(ids, with_vectors=False)) if self.index_after > 0 else set()
        self._update(qe.UpdateOperation.upsert_points(points), len(points) - len(stored), stored)

    def get(self, item_ids: Collection[str], with_vectors: bool = True) -> dict[str, StoredItem]:
        if not item_ids:
            return {}
        with self._lock:
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
    ) -> list[Hit]:
        points = self._query(vector, using, limit, exclude, True, with_vectors)
        return [hit_of(point, point.score) for point in points]

    def nearest_ids(
        self, vector: np.ndarray, using: str, limit: int, exclude: Collection[str] = ()
    ) -> list[str]:
        points = self._query(vector, using, limit, exclude, qe.PayloadSelector.Include(["item_id"]))
        return [point.payload["item_id"] for point in points]

    def _query(
        self,
        vector: np.ndarray,
        using: str,
        limit: int,
        exclude: Collection[str],
        with_payload: bool | qe.PayloadSelector,
        with_vectors: bool = False,
    ) -> list[Any]:
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(vector.astype(np.float32).tolist(), using=using),
            filter=_excluding(exclude),
            with_payload=with_payload,
            with_vector=with_vectors,
        )
        with self._lock:
            return self.shard.query(request)

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
        self._update(qe.UpdateOperation.update_vectors(points), 0, vectors.keys())

    def scroll(self, batch_size: int = 256, with_vectors: bool = True) -> Iterator[StoredItem]:
        offset = None
        while True:
            request = qe.ScrollRequest(
                offset=offset, limit=batch_size, with_payload=True, with_vector=with_vectors
            )
            with self._lock:
                records, offset = self.shard.scroll(request)
            for record in records:
                item_id = record.payload["item_id"]
                yield StoredItem(item_id, vectors_of(record.vector), record.payload)
            if offset is None:
                return

    def count(self) -> int:
        with self._lock:
            return self.shard.info().points_count


#: A shard's file counts towards its trial opening's bound up to what it holds on disk
#: and this (the engine preallocates files of up to 32 MB sparsely). Damage can make the
#: engine extend a file sparsely: a deletion-flags length of 111 billion in a 20-point
#: shard made it 16 GB, and counted whole it lifted the next trial's bound to 66 GB, under
#: which that trial took 22 GB of memory (``tests/unit/test_hostile_worker.py``).
SPARSE_ALLOWANCE_BYTES = 64 * 2**20

#: The trial opening of ``_open_in_a_child``: the engine alone, not this package, under
#: an address-space limit it sets itself (``preexec_fn`` is unsafe in a threaded worker).
_OPEN_AND_CLOSE = """
import resource, sys
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import qdrant_edge
qdrant_edge.EdgeShard.load(sys.argv[1], None).close()
"""


def _running(pid: int) -> bool:
    """Whether process ``pid`` lives (a build's copy is named after its worker's pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def _excluding(item_ids: Collection[str]) -> qe.Filter | None:
    if not item_ids:
        return None
    return qe.Filter(must_not=[qe.HasIdCondition({point_id(i) for i in item_ids})])
