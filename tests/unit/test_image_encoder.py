"""EfficientNet-Lite0 image features and safe decoding, on images drawn in the test."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from encoders.image import EfficientNetLite0ImageEncoder, decode_image
from encoders.media import CORRUPT, OVERSIZED, MediaError
from tests.media_samples import circles, decompression_bomb, encoded, photograph, stripes


@pytest.fixture(scope="module")
def encoder() -> EfficientNetLite0ImageEncoder:
    return EfficientNetLite0ImageEncoder(threads=1)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_shape_and_determinism(encoder) -> None:
    images = [stripes(), circles(), photograph()]
    vectors = encoder.encode(images)
    assert vectors.shape == (3, 1280) and vectors.dtype == np.float32
    assert np.array_equal(vectors, encoder.encode(images))
    # One image alone gives the same features as inside a batch.
    assert np.allclose(encoder.encode([images[1]])[0], vectors[1], atol=1e-4)
    assert encoder.encode([]).shape == (0, 1280)


def test_renderings_of_one_pattern_are_closer_than_another_pattern(encoder) -> None:
    small, large, other = encoder.encode([stripes(200, 24), stripes(320, 40), circles()])
    assert cosine(small, large) > cosine(small, other) + 0.05
    # A photograph and its mirror image are near; the photograph and stripes are not.
    photo = photograph()
    a, mirrored, pattern = encoder.encode(
        [photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT), stripes()]
    )
    assert cosine(a, mirrored) > cosine(a, pattern) + 0.1


def test_exif_orientation_is_applied(encoder) -> None:
    upright = photograph().resize((240, 300))
    # Stored on its side, with EXIF saying "rotate 90 degrees clockwise to view" (6).
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = encoded(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif)
    decoded = decode_image(sideways, max_pixels=10**7)
    assert decoded.size == upright.size
    plain = decode_image(encoded(upright, "JPEG"), max_pixels=10**7)
    a, b = encoder.encode([decoded, plain])
    assert cosine(a, b) > 0.95


def test_modes_are_converted_to_rgb() -> None:
    for mode in ("L", "RGBA", "P", "CMYK"):
        fmt = "JPEG" if mode == "CMYK" else "PNG"
        assert decode_image(encoded(Image.new(mode, (8, 8)), fmt), 100).mode == "RGB"


def test_corrupt_truncated_and_bomb_images_are_refused() -> None:
    png = encoded(stripes())
    with pytest.raises(MediaError) as truncated:
        decode_image(png[: len(png) // 2], max_pixels=10**7)
    assert truncated.value.reason == CORRUPT
    with pytest.raises(MediaError) as garbage:
        decode_image(b"\x89PNG\r\n\x1a\n" + bytes(100), max_pixels=10**7)
    assert garbage.value.reason == CORRUPT
    bomb = decompression_bomb()
    assert len(bomb) < 100_000
    with pytest.raises(MediaError) as refused:
        decode_image(bomb, max_pixels=40_000_000)
    assert refused.value.reason == OVERSIZED and "pixels" in refused.value.message
