"""Small deterministic encoders for tests and demos: no model weights, no torch.

They keep the contract of the pretrained encoders (``Encoder``: same modality, a fixed
``dim``, deterministic, unit-length rows) at a fraction of their start-up cost, so tests of
Kafka semantics (restarts, rebalances, redelivery) do not spend most of their time loading
MiniLM and EfficientNet in every worker they start. Selected with ``encoders = "hashing"``
(``STREAMREC_ENCODERS``). Their similarity is lexical (text) and colour/pitch based
(image, audio): good enough to group a demo catalog, not a substitute for the real models,
which keep their own tests.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
from PIL import Image

from encoders.audio import Clip
from encoders.base import Encoder

_WORD = re.compile(r"\w+")


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _bucket(token: str, dim: int) -> tuple[int, float]:
    """A stable (index, sign) for a token: blake2b, not ``hash()``, which is salted per
    process and would give every worker different vectors."""
    digest = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
    return digest % dim, 1.0 if (digest >> 63) & 1 else -1.0


class HashingTextEncoder(Encoder[str]):
    """Signed feature hashing of lower-cased words and word pairs (384-d, unit length).

    >>> encoder = HashingTextEncoder()
    >>> a, b, c = encoder.encode(["Mars colony", "a colony on Mars", "bread baking"])
    >>> bool(a @ b > a @ c), a.shape
    (True, (384,))
    """

    modality = "text"
    dim = 384

    def encode(self, batch: Sequence[str]) -> np.ndarray:
        matrix = np.zeros((len(batch), self.dim), dtype=np.float64)
        for row, text in enumerate(batch):
            words = _WORD.findall(text.lower())
            for token in [*words, *(f"{a} {b}" for a, b in pairwise(words))]:
                index, sign = _bucket(token, self.dim)
                matrix[row, index] += sign
        return _unit_rows(matrix)


class PixelImageEncoder(Encoder[Image.Image]):
    """The image shrunk to 8x8 RGB and centred (192-d, unit length): colour and layout.

    >>> encoder = PixelImageEncoder()
    >>> red, pink, blue = encoder.encode([Image.new("RGB", (64, 64), c) for c in
    ...     ("red", (255, 60, 60), "blue")])
    >>> bool(red @ pink > red @ blue)
    True
    """

    modality = "image"
    side = 8
    dim = side * side * 3

    def encode(self, batch: Sequence[Image.Image]) -> np.ndarray:
        rows = [
            np.asarray(
                image.convert("RGB").resize((self.side, self.side)), dtype=np.float64
            ).reshape(-1)
            / 255.0
            for image in batch
        ]
        matrix = np.array(rows).reshape(len(batch), self.dim) - 0.5
        return _unit_rows(matrix)


class SpectrumAudioEncoder(Encoder[Clip]):
    """Energy in 32 log-spaced frequency bands of the first 10 s (unit length): pitch.

    >>> rate = 16_000
    >>> t = np.arange(rate) / rate
    >>> low, low2, high = SpectrumAudioEncoder().encode(
    ...     [Clip(np.sin(2 * np.pi * f * t).astype(np.float32), rate) for f in (220, 230, 3000)])
    >>> bool(low @ low2 > low @ high)
    True
    """

    modality = "audio"
    dim = 32
    max_seconds = 10.0

    def encode(self, batch: Sequence[Clip]) -> np.ndarray:
        edges = np.geomspace(40.0, 8_000.0, self.dim + 1)
        matrix = np.zeros((len(batch), self.dim), dtype=np.float64)
        for row, clip in enumerate(batch):
            samples = clip.samples[: int(self.max_seconds * clip.sample_rate)].astype(np.float64)
            power = np.abs(np.fft.rfft(samples)) ** 2
            freqs = np.fft.rfftfreq(len(samples), 1.0 / clip.sample_rate)
            band = np.digitize(freqs, edges) - 1
            inside = (band >= 0) & (band < self.dim)
            np.add.at(matrix[row], band[inside], power[inside])
            matrix[row] = np.log1p(matrix[row] / max(len(samples), 1))
        return _unit_rows(matrix)
