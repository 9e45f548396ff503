"""From the wire format to the encoders and back: the item encoder the settings ask for,
an upload as the encoder sees it, and an encoded upload as the vector store keeps it."""

from __future__ import annotations

from encoders.base import Encoder
from encoders.fusion import (
    AverageFusion,
    Embeddings,
    Fusion,
    ModalityProjection,
    WeightedFusion,
)
from encoders.media import MediaFetcher, MediaPolicy
from encoders.multimodal import EncodedItem, ItemContent, MediaSource, MultimodalEncoder
from models.hybrid import CF, CONTENT
from models.vector_store import StoredItem
from streams.events import ItemUpload, MediaRef
from streams.settings import Settings


def build_item_encoder(settings: Settings) -> MultimodalEncoder:
    """The encoders, fusion strategy and media policy the settings ask for."""
    s = settings
    text, image, audio = _modality_encoders(settings)
    projection = ModalityProjection(
        {e.modality: e.dim for e in (text, image, audio)}, common_dim=text.dim
    )
    fusion: Fusion = {
        "average": lambda: AverageFusion(projection),
        "weighted": lambda: WeightedFusion(projection, s.fusion_weights),
        "learned": lambda: _learned_fusion(projection),
    }[s.fusion]()
    policy = MediaPolicy(
        max_bytes=s.media_max_bytes,
        max_image_pixels=s.media_max_image_pixels,
        max_audio_seconds=s.media_max_audio_seconds,
        max_image_side=s.media_max_image_side,
        min_audio_sample_rate=s.media_min_audio_sample_rate,
        max_audio_sample_rate=s.media_max_audio_sample_rate,
        max_audio_channels=s.media_max_audio_channels,
        allowed_schemes=tuple(s.media_allowed_schemes),
        allowed_dirs=tuple(s.media_allowed_dirs),
        allowed_hosts=tuple(h.lower() for h in s.media_allowed_hosts),
        allow_private_hosts=s.media_allow_private_hosts,
        connect_timeout_s=s.media_connect_timeout_s,
        read_timeout_s=s.media_read_timeout_s,
    )
    return MultimodalEncoder(text, fusion, MediaFetcher(policy), image=image, audio=audio)


def _learned_fusion(projection: ModalityProjection) -> Fusion:
    from encoders.learned_fusion import LearnedFusion  # imports torch: encoders/fusion.py

    return LearnedFusion(projection)


def _modality_encoders(settings: Settings) -> tuple[Encoder, Encoder, Encoder]:
    if settings.encoders == "hashing":
        from encoders.hashing import HashingTextEncoder, PixelImageEncoder, SpectrumAudioEncoder

        return HashingTextEncoder(), PixelImageEncoder(), SpectrumAudioEncoder()
    from encoders.audio import LogMelAudioEncoder
    from encoders.image import EfficientNetLite0ImageEncoder
    from encoders.text import MiniLMTextEncoder

    threads = settings.torch_threads
    return (
        MiniLMTextEncoder(threads=threads),
        EfficientNetLite0ImageEncoder(threads=threads),
        LogMelAudioEncoder(threads=threads),
    )


def stored_item(upload: ItemUpload, encoded: EncodedItem, fusion_version: str) -> StoredItem:
    """An encoded upload as the vector store keeps it: the fused vector and each modality's."""
    payload = {
        "title": upload.title,
        "tags": upload.tags,
        "modalities": encoded.modalities,
        "fusion": fusion_version,
        "metadata": upload.metadata,
        "created_at": upload.created_at.isoformat() if upload.created_at else None,
    }
    if encoded.thumbnail:
        payload["thumbnail"] = encoded.thumbnail
    return StoredItem(upload.item_id, {CONTENT: encoded.vector, **encoded.embeddings}, payload)


def content_of(upload: ItemUpload) -> ItemContent:
    """The encoder's view of an upload (the core knows nothing of the wire format)."""

    def source(ref: MediaRef | None) -> MediaSource | None:
        return None if ref is None else MediaSource(uri=ref.uri, data=ref.data, mime=ref.mime)

    return ItemContent(
        upload.title, upload.text, upload.tags, source(upload.image), source(upload.audio)
    )


def modality_embeddings(item: StoredItem) -> Embeddings:
    """Each modality's own vector of a stored item (what a fusion fuses): neither the
    fused ``content`` vector nor the CF one a replica keeps beside them."""
    return {name: vector for name, vector in item.vectors.items() if name not in (CONTENT, CF)}
