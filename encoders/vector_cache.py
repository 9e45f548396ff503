"""Encoded vectors kept on disk, so repeated evaluations skip loading and running a model.

The file name is a hash of the model's name and every input, in order: any change to
the texts (or the model) makes a new entry, and a stale one is never read.

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
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


class VectorCache:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, model: str, inputs: Sequence[str]) -> Path:
        digest = hashlib.sha256(model.encode())
        for text in inputs:
            digest.update(b"\0" + text.encode())
        return self.directory / f"{model}-{digest.hexdigest()[:20]}.npy"

    def get_or_encode(
        self, model: str, inputs: Sequence[str], encode: Callable[[Sequence[str]], np.ndarray]
    ) -> np.ndarray:
        path = self.path(model, inputs)
        if path.exists():
            return np.load(path, allow_pickle=False)
        vectors = encode(inputs)
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp.npy")
        np.save(partial, vectors, allow_pickle=False)
        partial.replace(path)  # a run stopped mid-write leaves no half file behind
        return vectors
