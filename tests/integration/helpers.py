"""Helpers for tests that run a real worker process against the real broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from streams.admin import produce
from streams.demo import catalog_uploads
from streams.events import Recommendations
from streams.process import WorkerProcess
from streams.settings import Settings

START = datetime.now(UTC) - timedelta(hours=1)

#: The named vectors a worker stores: the fused one and each modality's own.
WORKER_VECTORS = {"content": 384, "text": 384, "image": 1280, "audio": 168}


def click(
    event_id: str, user: str, item: str, kind: str = "click", minute: int = 0
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "user_id": user,
        "item_id": item,
        "kind": kind,
        "ts": (START + timedelta(minutes=minute)).isoformat(),
    }


def start_worker_with_catalog(settings: Settings, log_name: str = "worker.log") -> WorkerProcess:
    worker = WorkerProcess(settings, settings.data_dir / log_name)
    worker.start()
    worker.wait_until(lambda s: True, timeout_s=180, what="web server up")
    catalog = catalog_uploads()
    produce(settings, settings.topic_items, catalog)
    worker.wait_until(lambda s: s["items"] >= len(catalog), timeout_s=120, what="catalog indexed")
    return worker


def recommendations_for(
    messages: list[tuple[str | None, bytes]], event_id: str
) -> Recommendations | None:
    for _, value in messages:
        message = Recommendations.model_validate_json(value)
        if message.trigger_event_id == event_id:
            return message
    return None
