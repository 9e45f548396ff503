"""Fusion: the modality embeddings an item has, turned into one "content" vector.

Every strategy works on whatever subset of modalities an item has: a text-only item and
an item with text, image and audio both get a unit vector in the same common space.

- ``AverageFusion``: project each modality to the common dimension, L2-normalise, average.
- ``WeightedFusion``: the same with per-modality weights.
- ``LearnedFusion`` (encoders/learned_fusion.py): a small network trained from interactions.
  Its module imports torch, which alone makes 600 MB of a process resident, so only code
  that builds one imports it; ``learned`` tells other code whether a fusion is one.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from encoders.learned_fusion import LearnedFusion

#: Modality embeddings of one item, by modality name; absent modalities are absent keys.
Embeddings = Mapping[str, np.ndarray]


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


class ModalityProjection:
    """Fixed projections of each modality into the common space, the same on every worker.

    A modality already of the common dimension (the text encoder's) is kept as is. Others
    are centred (pooled CNN and log-mel features are mostly positive, so every pair of
    them would look alike) and mapped by a seeded Gaussian random matrix, which keeps
    angles between vectors approximately (Johnson-Lindenstrauss).

    >>> projection = ModalityProjection({"text": 3, "audio": 5}, common_dim=3)
    >>> print(projection.project("text", np.array([[3.0, 4.0, 0.0]])))
    [[0.6 0.8 0. ]]
    >>> projection.project("audio", np.ones((1, 5)) + np.eye(5)[:1]).shape
    (1, 3)
    """

    def __init__(self, dims: Mapping[str, int], common_dim: int, seed: int = 20261125) -> None:
        self.dims = dict(dims)
        self.common_dim = common_dim
        self.matrices: dict[str, np.ndarray | None] = {}
        for index, (modality, dim) in enumerate(sorted(self.dims.items())):
            if dim == common_dim:
                self.matrices[modality] = None
            else:
                rng = np.random.default_rng([seed, index])
                matrix = rng.standard_normal((dim, common_dim)) / np.sqrt(common_dim)
                self.matrices[modality] = matrix.astype(np.float32)

    def centred(self, modality: str, vectors: np.ndarray) -> np.ndarray:
        if self.matrices[modality] is None:
            return vectors
        return vectors - vectors.mean(axis=-1, keepdims=True)

    def project(self, modality: str, vectors: np.ndarray) -> np.ndarray:
        """(n, dim) embeddings of one modality to (n, common_dim) unit rows."""
        matrix = self.matrices[modality]
        projected = self.centred(modality, vectors)
        if matrix is not None:
            projected = projected @ matrix
        return unit(projected.astype(np.float32))


class Fusion(ABC):
    """Embeddings of any subset of modalities in, one unit vector of ``dim`` out."""

    #: Written to each item's payload, so a query can tell which fusion placed it.
    name: str

    def __init__(self, projection: ModalityProjection) -> None:
        self.projection = projection
        self.dim = projection.common_dim

    @property
    def version(self) -> str:
        return self.name

    @abstractmethod
    def fuse(self, items: Sequence[Embeddings]) -> np.ndarray:
        """(len(items), dim) unit vectors; an item with no embeddings is a ValueError."""


def learned(fusion: Fusion) -> LearnedFusion | None:
    """``fusion`` if it is a ``LearnedFusion``, without importing torch to find out: if its
    module was never imported, no fusion can be one.

    >>> learned(AverageFusion(ModalityProjection({"text": 2}, common_dim=2))) is None
    True
    """
    module = sys.modules.get("encoders.learned_fusion")
    return fusion if module is not None and isinstance(fusion, module.LearnedFusion) else None


class WeightedFusion(Fusion):
    """Weighted mean of the projected, normalised modality vectors an item has.

    >>> projection = ModalityProjection({"text": 2, "image": 2}, common_dim=2)
    >>> fusion = WeightedFusion(projection, {"text": 3.0, "image": 1.0})
    >>> fusion.fuse([{"text": np.array([1.0, 0.0]), "image": np.array([0.0, 1.0])}]).round(3)
    array([[0.949, 0.316]], dtype=float32)
    >>> fusion.fuse([{"image": np.array([0.0, 2.0])}]).round(3)  # a missing modality
    array([[0., 1.]], dtype=float32)
    """

    name = "weighted"

    def __init__(self, projection: ModalityProjection, weights: Mapping[str, float]) -> None:
        super().__init__(projection)
        unknown = set(weights) - set(projection.dims)
        if unknown:
            raise ValueError(
                f"fusion weights name unknown modalities {sorted(unknown)}; "
                f"known: {sorted(projection.dims)}"
            )
        if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
            raise ValueError("fusion weights must be >= 0 with at least one > 0")
        self.weights = {m: float(weights.get(m, 0.0)) for m in projection.dims}

    def fuse(self, items: Sequence[Embeddings]) -> np.ndarray:
        fused = np.zeros((len(items), self.dim), dtype=np.float32)
        for row, embeddings in enumerate(items):
            if not embeddings:
                raise ValueError("an item needs at least one modality embedding to be fused")
            for modality, vector in embeddings.items():
                # A zero weight only shrinks: an item with no other modality keeps a vector.
                weight = self.weights[modality] or 1e-3
                fused[row] += weight * self.projection.project(modality, vector[None, :])[0]
        return unit(fused)


class AverageFusion(WeightedFusion):
    """Every present modality counts the same."""

    name = "average"

    def __init__(self, projection: ModalityProjection) -> None:
        super().__init__(projection, dict.fromkeys(projection.dims, 1.0))
