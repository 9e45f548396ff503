"""Real media made in the tests: shapes and colours drawn with PIL, tones and noise with numpy,
and a photograph that an installed package ships (matplotlib's sample data)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import matplotlib
import numpy as np
import soundfile
from PIL import Image, ImageDraw


def encoded(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def stripes(
    size: int = 256, period: int = 32, colour: str = "navy", angle: float = 0
) -> Image.Image:
    """Vertical stripes, optionally rotated: the same pattern at another size is 'similar'."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    for x in range(0, size, period):
        draw.rectangle([x, 0, x + period // 2, size], fill=colour)
    return image.rotate(angle, fillcolor="white") if angle else image


def circles(size: int = 256, colour: str = "crimson") -> Image.Image:
    image = Image.new("RGB", (size, size), "lightyellow")
    draw = ImageDraw.Draw(image)
    for n in range(5):
        r = size // 12 + n * 4
        cx, cy = (n * 53) % size, (n * 97) % size
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    return image


def photograph() -> Image.Image:
    """Grace Hopper's portrait from matplotlib's bundled sample data."""
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return Image.open(path).convert("RGB")


def tone(
    freq: float, seconds: float = 1.0, rate: int = 16_000, amplitude: float = 0.5
) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float = 1.0, rate: int = 16_000, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).uniform(-0.5, 0.5, int(seconds * rate))).astype(np.float32)


def audio_file(samples: np.ndarray, rate: int = 16_000, fmt: str = "WAV") -> bytes:
    subtype = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}[fmt]
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def inline(data: bytes, mime: str) -> dict[str, str]:
    """A media reference carrying the bytes inline, as on the wire."""
    return {"data": base64.b64encode(data).decode(), "mime": mime}


def decompression_bomb(side: int = 12_000) -> bytes:
    """A PNG of a few kilobytes that decodes to ``side`` x ``side`` pixels."""
    return encoded(Image.new("1", (side, side)), optimize=True)
