"""An HNSW index for the embedded store, built in another process while the shard serves.

qdrant-edge indexes a shard only when ``optimize()`` is called, and that call holds the
GIL for the whole build (48.7 s for 20k vectors of 384 dimensions on 2 cores,
docs/scale.md): a worker that built in place would stop answering for as long. Without
an index every query reads every vector (17 ms at 100k items here, and a click asks
several). So ``IndexBuild`` copies the flushed shard, and a child process at low priority
opens the copy and builds its index; the store swaps the indexed copy in when the child
is done and applies again the writes it took meanwhile (``EdgeVectorStore.maintain``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: HNSW parameters: Qdrant's defaults, kept explicit because the copy's config is
#: written with them and the swapped-in shard keeps it.
HNSW_M = 16
HNSW_EF_CONSTRUCT = 100
#: Qdrant's default: filtered searches whose filter leaves fewer vectors (KB) scan them.
FULL_SCAN_THRESHOLD_KB = 10_000


class IndexBuild:
    """One build: the copy at ``target`` and the child process indexing it.

    ``points`` is how many points the copy holds (all of them indexed once it is done).
    """

    def __init__(
        self,
        source: Path,
        target: Path,
        vectors: dict[str, tuple[int, str]],
        points: int,
        threads: int,
    ) -> None:
        self.target = target
        self.points = points
        self.started = time.monotonic()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by discard)
        try:
            shutil.copytree(source, target)
            arguments = [str(target), json.dumps(vectors), str(threads), str(os.getpid())]
            self._child = subprocess.Popen(
                [sys.executable, "-c", _BUILD, *arguments],
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
            )
        except BaseException:  # a full disk, no process to start: nothing left behind
            self.discard()
            raise
        #: Why the build failed, once it has.
        self.error: str | None = None

    def poll(self) -> bool | None:
        """None while the child runs; then whether the indexed copy is ready."""
        returncode = self._child.poll()
        if returncode is None:
            return None
        if returncode != 0 and self.error is None:
            self._stderr.seek(0)
            said = self._stderr.read().decode(errors="replace").strip().splitlines()
            self.error = f"ended with {returncode}: {said[-1][:300] if said else 'no message'}"
        return returncode == 0

    def cancel(self) -> None:
        """Stop the child and remove the copy."""
        if self._child.poll() is None:
            self._child.kill()
            self._child.wait()
        self.discard()

    def discard(self) -> None:
        self._stderr.close()
        shutil.rmtree(self.target, ignore_errors=True)


#: The child: the engine alone, niced so the worker's loop keeps its core. It dies with
#: its parent (PR_SET_DEATHSIG) rather than finishing a copy nobody will swap in.
_BUILD = f"""
import ctypes, json, os, signal, sys
try:
    ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
except (AttributeError, OSError):
    pass
if os.getppid() != int(sys.argv[4]):  # the parent died before the prctl
    sys.exit(1)
os.nice(10)
import qdrant_edge as qe
path, vectors, threads = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
distance = {{"cosine": qe.Distance.Cosine, "dot": qe.Distance.Dot}}
config = qe.EdgeConfig(
    vectors={{
        name: qe.EdgeVectorParams(size=size, distance=distance[kind])
        for name, (size, kind) in vectors.items()
    }},
    hnsw_config=qe.HnswIndexConfig(
        m={HNSW_M}, ef_construct={HNSW_EF_CONSTRUCT},
        full_scan_threshold={FULL_SCAN_THRESHOLD_KB}, max_indexing_threads=threads,
    ),
    # Every segment is indexed, however small: the copy is indexed whole.
    optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
)
shard = qe.EdgeShard.load(path, config)
shard.optimize()
shard.flush()
shard.close()
"""
