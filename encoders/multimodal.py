"""Items with any subset of text, image and audio, to modality embeddings and a fused vector.

One batch goes through in four steps: fetch and decode every item's media in parallel
threads (I/O and decoding release the GIL), encode each modality as one batch (what
the networks are fast at), fuse, and report per item either its vectors or why it failed.
A bad file fails only its own item, and so does anything unexpected while decoding or
encoding it (``internal-error``): a batch that fails as a whole is encoded again one item
at a time, so the failure is pinned on its item.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from encoders.audio import Clip, decode_audio
from encoders.base import Encoder
from encoders.fusion import Fusion
from encoders.image import decode_image, thumbnail_data_uri
from encoders.media import MediaError, MediaFetcher
from encoders.text import compose_item_text

#: The reason of a failure no check foresaw (a bug, or a library's own error).
INTERNAL_ERROR = "internal-error"


def internal_error(error: BaseException) -> MediaError:
    text = f"{type(error).__name__}: {error}"
    return MediaError(INTERNAL_ERROR, text[:500])


@dataclass(frozen=True)
class MediaSource:
    """Where one media file comes from: a ``uri``, or base64 ``data`` with its ``mime``."""

    uri: str | None = None
    data: str | None = None
    mime: str | None = None


@dataclass(frozen=True)
class ItemContent:
    title: str = ""
    text: str = ""
    tags: Sequence[str] = ()
    image: MediaSource | None = None
    audio: MediaSource | None = None


@dataclass(frozen=True)
class EncodedItem:
    """Each present modality's embedding, the fused content vector, and a thumbnail
    (a small JPEG ``data:`` URI) when the item has an image."""

    embeddings: dict[str, np.ndarray]
    vector: np.ndarray
    thumbnail: str | None = None

    @property
    def modalities(self) -> list[str]:
        return sorted(self.embeddings)


@dataclass
class _Decoded:
    """One item between the steps: its encoder inputs by modality, or its error."""

    inputs: dict[str, object] = field(default_factory=dict)
    error: MediaError | None = None
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    thumbnail: str | None = None


class MultimodalEncoder:
    """Encoders per modality, a fusion strategy and a media fetcher, used together.

    ``image`` and ``audio`` encoders are optional: without one, items carrying that
    modality fail with a clear reason instead of being stored without it.
    """

    def __init__(
        self,
        text: Encoder[str],
        fusion: Fusion,
        fetcher: MediaFetcher,
        image: Encoder | None = None,
        audio: Encoder[Clip] | None = None,
        fetch_threads: int = 8,
    ) -> None:
        self.encoders: dict[str, Encoder] = {"text": text}
        if image is not None:
            self.encoders["image"] = image
        if audio is not None:
            self.encoders["audio"] = audio
        self.fusion = fusion
        self.fetcher = fetcher
        self.fetch_threads = fetch_threads

    @property
    def dims(self) -> dict[str, int]:
        return {modality: encoder.dim for modality, encoder in self.encoders.items()}

    def encode(self, items: Sequence[ItemContent]) -> list[EncodedItem | MediaError]:
        """One result per item, in order: its vectors, or the MediaError that rejected it."""
        if not items:
            return []
        decoded = _map_in_daemon_threads(self._decode, items, self.fetch_threads)
        for modality, encoder in self.encoders.items():
            rows = [d for d in decoded if d.error is None and modality in d.inputs]
            if rows:
                self._encode_rows(modality, encoder, rows)
        ok = [d for d in decoded if d.error is None]
        try:
            vectors = list(self.fusion.fuse([d.embeddings for d in ok])) if ok else []
        except Exception:
            vectors = [self._fuse_one(d) for d in ok]
        fused = iter(vectors)
        results: list[EncodedItem | MediaError] = []
        for d in decoded:
            vector = None if d.error is not None else next(fused)
            if d.error is None and vector is not None and not np.isfinite(vector).all():
                d.error = MediaError(INTERNAL_ERROR, "the encoders gave a non-finite vector")
            if d.error is None and any(not np.isfinite(e).all() for e in d.embeddings.values()):
                d.error = MediaError(INTERNAL_ERROR, "the encoders gave a non-finite embedding")
            results.append(
                d.error if d.error is not None else EncodedItem(d.embeddings, vector, d.thumbnail)
            )
        return results

    @staticmethod
    def _encode_rows(modality: str, encoder: Encoder, rows: list[_Decoded]) -> None:
        """One batch for the modality; if it fails, one item at a time, so only the item
        that fails is lost."""
        try:
            vectors = encoder.encode([d.inputs[modality] for d in rows])
            for d, vector in zip(rows, vectors, strict=True):
                d.embeddings[modality] = vector
            return
        except Exception:
            pass  # found below, item by item
        for d in rows:
            try:
                d.embeddings[modality] = encoder.encode([d.inputs[modality]])[0]
            except Exception as error:
                d.error = internal_error(error)

    def _fuse_one(self, decoded: _Decoded) -> np.ndarray | None:
        try:
            return self.fusion.fuse([decoded.embeddings])[0]
        except Exception as error:
            decoded.error = internal_error(error)
            return None

    def _decode(self, item: ItemContent) -> _Decoded:
        decoded = _Decoded()
        policy = self.fetcher.policy
        text = compose_item_text(item.title, item.text, item.tags)
        if text:
            decoded.inputs["text"] = text
        try:
            if item.image is not None:
                data = self._fetch("image", item.image)
                image = decode_image(data, policy.max_image_pixels, policy.max_image_side)
                decoded.inputs["image"] = image
                decoded.thumbnail = thumbnail_data_uri(image)
            if item.audio is not None:
                data = self._fetch("audio", item.audio)
                decoded.inputs["audio"] = decode_audio(
                    data,
                    policy.max_audio_seconds,
                    policy.min_audio_sample_rate,
                    policy.max_audio_sample_rate,
                    policy.max_audio_channels,
                )
            if not decoded.inputs:
                raise MediaError("empty", "item has no title, text, tags, image or audio to encode")
        except MediaError as error:
            decoded.error = error
        except Exception as error:  # a decoder's own bug or limit: this item alone fails
            decoded.error = internal_error(error)
        return decoded

    def _fetch(self, modality: str, source: MediaSource) -> bytes:
        if modality not in self.encoders:
            raise MediaError(
                "media-unsupported-format",
                f"this worker has no {modality} encoder: enable it or drop the item's {modality}",
            )
        return self.fetcher.fetch(modality, uri=source.uri, data=source.data, mime=source.mime)


def _map_in_daemon_threads(
    function: Callable[[ItemContent], _Decoded], items: Sequence[ItemContent], threads: int
) -> list[_Decoded]:
    """``[function(item) for item in items]`` in up to ``threads`` daemon threads: a read
    stuck in one never holds up the process's exit (a thread pool's threads are joined)."""
    results: list[_Decoded | None] = [None] * len(items)
    pending = list(enumerate(items))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if not pending:
                    return
                n, item = pending.pop()
            results[n] = function(item)

    workers = [
        threading.Thread(target=work, name="fetch", daemon=True)
        for _ in range(max(1, min(threads, len(items))))
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return [
        r if r is not None else _Decoded(error=internal_error(RuntimeError("lost")))
        for r in results
    ]
