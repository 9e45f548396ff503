"""The worker's long-lived objects, kept out of the garbage collector's full passes.

A worker imports torch, Faust, aiokafka and the rest: about 330,000 objects that Python's
cyclic garbage collector tracks, nearly all of them alive as long as the process. Every
full collection walks them all, 0.2-0.4 s in a worker on a 2-core machine, and no click is
handled meanwhile: the clicks queued behind one such pause were a worker's p99
(docs/scale.md#the-garbage-collectors-full-passes). Once the worker is ready, one
collection and ``gc.freeze()`` move every object alive then to the permanent generation,
which collections no longer walk; what the worker makes afterwards is collected as
before (an item or a user adds almost no tracked objects: their state is arrays and
bytes). What is kept out is still freed when its last reference goes; only objects
that refer to each other in a cycle and die after ready stay in memory.
"""

from __future__ import annotations

import gc
import time


def freeze_long_lived() -> tuple[int, float]:
    """Collect once, then keep every object alive now out of later collections; returns
    how many are kept out and the seconds it took.

    >>> frozen, seconds = freeze_long_lived()
    >>> frozen > 0 and gc.get_freeze_count() > 0
    True
    >>> gc.unfreeze()
    """
    started = time.perf_counter()
    # Garbage still in the heap now would be kept out with the rest, never freed.
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count(), time.perf_counter() - started


class CollectionPauses:
    """The garbage collector's passes while installed: how many per generation, and the
    longest, which holds every click waiting meanwhile (the worker's stats).

    >>> pauses = CollectionPauses(); pauses.install()
    >>> _ = gc.collect()
    >>> stats = pauses.stats(); pauses.uninstall()
    >>> stats["collections"]["2"] >= 1 and stats["longest_pause_ms"] >= 0
    True
    """

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.longest_s = 0.0
        self._started = 0.0

    def install(self) -> None:
        gc.callbacks.append(self._on_collection)

    def uninstall(self) -> None:
        if self._on_collection in gc.callbacks:
            gc.callbacks.remove(self._on_collection)

    def _on_collection(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.collections[info["generation"]] += 1
        self.longest_s = max(self.longest_s, time.perf_counter() - self._started)

    def stats(self) -> dict[str, object]:
        return {
            "collections": {str(g): n for g, n in enumerate(self.collections)},
            "longest_pause_ms": round(1000 * self.longest_s, 1),
            "objects_kept_out": gc.get_freeze_count(),
        }
