"""Encoded vectors kept on disk, so repeated evaluations skip loading and running a model.

The file name is a hash of the model's name and every input, in order: any change to
the texts (or the model) makes a new entry, and a stale one is never read. An entry that
cannot be read, or is not one finite row of floats per input (a file cut short, damaged,
of another shape or holding NaN), is a miss: logged once, encoded again and rewritten.

>>> import tempfile
>>> cache = VectorCache(tempfile.mkdtemp())
>>> calls = []
>>> def encode(texts):
...     calls.append(len(texts))
...     return np.ones((len(texts), 2), dtype=np.float32)
>>> first = cache.get_or_encode("toy", ["a", "b"], encode)
>>> again = cache.get_or_encode("toy", ["a", "b"], encode)
>>> bool((first == again).all()), again.shape
(True, (2, 2))
>>> calls  # the second call read the file
[2]
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from models.atomic_file import read_failure, write_atomically

log = logging.getLogger(__name__)


class VectorCache:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, model: str, inputs: Sequence[str]) -> Path:
        digest = hashlib.sha256(model.encode())
        for text in inputs:
            digest.update(b"\0" + text.encode())
        return self.directory / f"{model}-{digest.hexdigest()[:20]}.npy"

    def get_or_encode(
        self,
        model: str,
        inputs: Sequence[str],
        encode: Callable[[Sequence[str]], np.ndarray],
        dim: int | None = None,
    ) -> np.ndarray:
        """The vectors of ``inputs``, read from the cache or encoded and cached; ``dim``, if
        given, is the width a cached entry must have."""
        path = self.path(model, inputs)
        if path.exists():
            vectors = _cached(path, len(inputs), dim)
            if vectors is not None:
                return vectors
        vectors = encode(inputs)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_atomically(path, lambda file: np.save(file, vectors, allow_pickle=False))
        except OSError as error:  # a cache that cannot be written is only slower
            log.warning("vectors not cached at %s: %s", path, error)
        return vectors


def _cached(path: Path, rows: int, dim: int | None) -> np.ndarray | None:
    """The vectors cached at ``path``, or None (logged) if they cannot be used."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as error:  # whatever a damaged file raises: it is only a cache
        problem = read_failure(error)
    else:
        if not isinstance(loaded, np.ndarray):  # an .npz archive under the name
            loaded.close()
            problem = "not an array"
        elif loaded.dtype.kind != "f" or loaded.ndim != 2 or loaded.shape[0] != rows:
            problem = f"{loaded.dtype} {loaded.shape}, not {rows} rows of floats"
        elif dim is not None and loaded.shape[1] != dim:
            problem = f"{loaded.shape[1]} columns, not {dim}"
        elif not np.isfinite(loaded).all():
            problem = "a number that is not finite"
        else:
            return loaded.astype(np.float32, copy=False)
    log.warning("unusable cached vectors %s (%s): encoding again", path, problem)
    return None
