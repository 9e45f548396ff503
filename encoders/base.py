"""The encoder interface: a batch of inputs in, an (n, dim) float32 array out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Generic, TypeVar

import numpy as np

InputT = TypeVar("InputT")


class Encoder(ABC, Generic[InputT]):
    """Deterministic for the same input; one row per input, ``dim`` columns."""

    #: Which modality this encoder reads ("text", "image", "audio").
    modality: str
    dim: int

    @abstractmethod
    def encode(self, batch: Sequence[InputT]) -> np.ndarray:
        """Encode a batch; an empty batch gives an array of shape (0, dim)."""
