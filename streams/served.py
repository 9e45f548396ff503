"""Evaluation through Kafka: a dataset's interactions through a running worker, every
list read back from the recommendations topic and scored as served
(``models/evaluation/served.py``), beside the same core run in process over the same
events in the same order. Used by ``streamrec load --evaluate``.

With one partition the worker applies the events in the order they were sent, and the
two runs are the same computation (same lists). With several, a worker interleaves its
partitions as they arrive, a different valid order: what then separates the two runs
is that event-order effect, which the identical-lists share measures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from encoders.multimodal import EncodedItem
from models.engine import InProcessRecommender
from models.evaluation.served import score_served
from models.hybrid import CONTENT, HybridRecommender
from streams.encoding import build_item_encoder, content_of, stored_item
from streams.events import ItemUpload
from streams.settings import Settings


def reference_engine(settings: Settings, uploads: Sequence[ItemUpload]) -> InProcessRecommender:
    """``uploads`` encoded by the worker's own encoding code, in the in-process engine."""
    encoder = build_item_encoder(settings)
    engine = InProcessRecommender(
        HybridRecommender(
            settings.hybrid_weights,
            content_dim=encoder.fusion.dim,
            learned=settings.hybrid_blend == "learned",
            served_k=settings.top_k,
        )
    )
    for upload, encoded in zip(
        uploads, encoder.encode([content_of(u) for u in uploads]), strict=True
    ):
        if not isinstance(encoded, EncodedItem):
            raise ValueError(f"item {upload.item_id!r} could not be encoded: {encoded}")
        item = stored_item(upload, encoded, encoder.fusion.version)
        engine.add_item(item.item_id, upload.title, item.vectors[CONTENT])
    return engine


def in_process_lists(
    engine: InProcessRecommender,
    events: Sequence[dict[str, Any]],
    k: int,
    progress: Callable[[int], None] | None = None,
) -> dict[str, list[str]]:
    """The list the engine gives after each event (Interaction JSON objects), by event id."""
    lists: dict[str, list[str]] = {}
    for n, e in enumerate(events):
        ts = float(e["ts"])
        recs = engine.process(
            e["event_id"], e["user_id"], e["item_id"], e["kind"], e.get("value"), ts, k
        )
        if recs is not None:
            lists[e["event_id"]] = [r.item_id for r in recs]
        if progress is not None:
            progress(n + 1)
    return lists


def compare_served(
    events: Sequence[dict[str, Any]],
    kafka_lists: dict[str, list[str]],
    reference_lists: dict[str, list[str]],
    k: int,
) -> dict[str, Any]:
    """Both runs scored as served, and how many of their lists are the same."""
    sent = [(e["event_id"], e["user_id"], e["item_id"]) for e in events]
    both = [i for i in reference_lists if i in kafka_lists]
    return {
        "events": len(events),
        "lists_received": len(kafka_lists),
        "through_kafka": score_served(sent, kafka_lists, k).as_dict(),
        "in_process": score_served(sent, reference_lists, k).as_dict(),
        "identical_lists": sum(kafka_lists[i] == reference_lists[i] for i in both)
        / max(len(both), 1),
        # Lists that differ in order may still hold the same items: the share they share.
        "mean_overlap": sum(
            len(set(kafka_lists[i]) & set(reference_lists[i])) / max(len(reference_lists[i]), 1)
            for i in both
        )
        / max(len(both), 1),
    }
