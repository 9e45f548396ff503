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

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from encoders.multimodal import EncodedItem
from models.engine import InProcessRecommender
from models.evaluation.served import score_served
from models.hybrid import CONTENT, HybridRecommender, UnknownItemError
from streams.encoding import build_item_encoder, content_of, modality_embeddings, stored_item
from streams.events import ItemUpload
from streams.settings import Settings


def reference_engine(settings: Settings, uploads: Sequence[ItemUpload]) -> InProcessRecommender:
    """``uploads`` encoded by the worker's own encoding code, in the in-process engine."""
    engine, items = encoded_reference(settings, uploads)
    for item in items.values():
        item.add_to(engine)
    return engine


def encoded_reference(
    settings: Settings, uploads: Sequence[ItemUpload]
) -> tuple[InProcessRecommender, dict[str, ReferenceItem]]:
    """An in-process engine with the worker's settings and no items yet, and ``uploads``
    encoded by the worker's own encoding code (by item id), for the engine to add."""
    encoder = build_item_encoder(settings)
    engine = InProcessRecommender(
        HybridRecommender(
            content_dim=encoder.fusion.dim,
            modality_projection=encoder.fusion.projection.project,
            **settings.hybrid_options(),
        )
    )
    items = {}
    for upload, encoded in zip(
        uploads, encoder.encode([content_of(u) for u in uploads]), strict=True
    ):
        if not isinstance(encoded, EncodedItem):
            raise ValueError(f"item {upload.item_id!r} could not be encoded: {encoded}")
        item = stored_item(upload, encoded, encoder.fusion.version)
        items[item.item_id] = ReferenceItem(
            item.item_id, upload.title, item.vectors[CONTENT], modality_embeddings(item)
        )
    return engine, items


@dataclass(frozen=True)
class ReferenceItem:
    item_id: str
    title: str
    vector: np.ndarray
    modalities: Mapping[str, np.ndarray]

    def add_to(self, engine: InProcessRecommender) -> None:
        engine.add_item(self.item_id, self.title, self.vector, self.modalities)


def upload_stages(
    uploads: Sequence[ItemUpload], events: Sequence[dict[str, Any]], stages: int = 20
) -> dict[int, list[ItemUpload]]:
    """Before which event (index) each item is uploaded when a log is sent to a worker:
    items without ``created_at``, or created by the first event, before event 0; a later
    one at the start of the stage (``stages`` equal runs of events) holding the first
    event at or after its ``created_at``, so it is there before anyone can click it (and
    up to a stage early). Items created after the last event are not uploaded.

    >>> from datetime import UTC, datetime
    >>> def at(s): return datetime.fromtimestamp(s, UTC)
    >>> uploads = [ItemUpload(item_id=i, title=i, created_at=at(t)) for i, t in
    ...            [("a", 0), ("b", 25), ("c", 70), ("late", 999)]]
    >>> events = [{"ts": 10.0 * n} for n in range(10)]
    >>> {n: [u.item_id for u in items] for n, items in upload_stages(uploads, events, 5).items()}
    {0: ['a'], 2: ['b'], 6: ['c']}
    """
    size = max(1, math.ceil(len(events) / stages))
    times = [float(e["ts"]) for e in events]
    staged: dict[int, list[ItemUpload]] = {}
    for upload in uploads:
        at = upload.created_at.timestamp() if upload.created_at else -math.inf
        first = bisect.bisect_left(times, at)  # the first event that may click it
        if first < len(events):
            staged.setdefault(first // size * size, []).append(upload)
    return dict(sorted(staged.items()))


def in_process_lists(
    engine: InProcessRecommender,
    events: Sequence[dict[str, Any]],
    k: int,
    progress: Callable[[int], None] | None = None,
    arrivals: Mapping[int, Sequence[ReferenceItem]] | None = None,
) -> dict[str, list[str]]:
    """The list the engine gives after each event (Interaction JSON objects), by event
    id; ``arrivals[n]``: items added before event ``n``. An event on an item the engine
    does not have gets no list (the worker dead-letters it)."""
    lists: dict[str, list[str]] = {}
    for n, e in enumerate(events):
        for item in (arrivals or {}).get(n, ()):
            item.add_to(engine)
        ts = float(e["ts"])
        try:
            recs = engine.process(
                e["event_id"], e["user_id"], e["item_id"], e["kind"], e.get("value"), ts, k
            )
        except UnknownItemError:  # the worker dead-letters it: no list either way
            recs = None
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
        # Events on items nobody engaged with before in the log (zero-click items).
        "zero_click": {
            "through_kafka": score_served(sent, kafka_lists, k, zero_click=True).as_dict(),
            "in_process": score_served(sent, reference_lists, k, zero_click=True).as_dict(),
        },
        "identical_lists": sum(kafka_lists[i] == reference_lists[i] for i in both)
        / max(len(both), 1),
        # Lists that differ in order may still hold the same items: the share they share.
        "mean_overlap": sum(
            len(set(kafka_lists[i]) & set(reference_lists[i])) / max(len(reference_lists[i]), 1)
            for i in both
        )
        / max(len(both), 1),
    }
