"""Replay from the real broker: ranges by offset and by time, time order across partitions,
the same evaluation as replaying the same events from a file, and the items topic's
media encoded as the worker encodes them."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from models.evaluation.datasets import load_dataset
from models.evaluation.prequential import prequential
from models.evaluation.suite import standard_configurations, standard_sources
from models.sources import Catalog
from streams.admin import produce
from streams.broker import LocalBroker
from streams.cli import main
from streams.process import settings_env
from streams.replay import ReplayRange, read_interactions, topic_dataset
from tests.conftest import isolated_settings
from tests.media_samples import circles, encoded, inline

pytestmark = pytest.mark.integration

START = datetime(2026, 1, 1, tzinfo=UTC)


def interaction(n: int) -> dict:
    return {
        "event_id": f"r-{n}",
        "user_id": f"user-{n % 5}",
        "item_id": f"item-{(n * 7) % 13}",
        "kind": "click" if n % 4 else "like",
        "ts": (START + timedelta(minutes=n)).isoformat(),
    }


def test_replay_ranges_order_and_congruence_with_a_file(broker: LocalBroker, tmp_path) -> None:
    settings = isolated_settings(broker, tmp_path / "data")
    items = [(f"item-{i}", {"item_id": f"item-{i}", "title": f"Item {i}"}) for i in range(13)]
    # A later upload of item-1 adds an image: the replay takes the latest, media included.
    picture = {
        "item_id": "item-1",
        "title": "Item 1",
        "image": inline(encoded(circles()), "image/png"),
    }
    produce(settings, settings.topic_items, [*items, ("item-1", picture)])
    first = [interaction(n) for n in range(40)]
    second = [interaction(n) for n in range(40, 80)]
    produce(settings, settings.topic_interactions, [(e["user_id"], e) for e in first])
    produce(settings, settings.topic_interactions, [("user-0", b"{not json")])
    time.sleep(1.5)
    boundary = time.time()
    time.sleep(1.5)
    produce(settings, settings.topic_interactions, [(e["user_id"], e) for e in second])

    everything = read_interactions(settings)
    assert [e.event_id for e in everything.events] == [f"r-{n}" for n in range(80)]
    assert everything.skipped == 1

    later = read_interactions(settings, ReplayRange(start_time=boundary))
    assert [e.event_id for e in later.events] == [f"r-{n}" for n in range(40, 80)]
    earlier = read_interactions(settings, ReplayRange(end_time=boundary))
    assert [e.event_id for e in earlier.events] == [f"r-{n}" for n in range(40)]
    # Skipping the first 3 records of every partition skips 6 (one of them the bad one).
    skipped_start = read_interactions(settings, ReplayRange(start_offsets={0: 3, 1: 3}))
    assert len(skipped_start.events) + skipped_start.skipped == 81 - 6

    # The same events from the topic and from a file evaluate to the same numbers.
    log = tmp_path / "interactions.jsonl"
    log.write_text("\n".join(json.dumps(e) for e in first + second))
    tables = []
    for data in (topic_dataset(settings)[0], load_dataset(log)):
        catalog = Catalog()
        sources = standard_sources(catalog, [], None)
        result = prequential(data.events, catalog, sources, standard_configurations(list(sources)))
        tables.append(result.table())
    assert tables[0] == tables[1]
    assert tables[0][0]["configuration"] == "hybrid"

    # The command: the topic's items encoded with their media, measured per modality.
    env = {**settings_env(settings.model_copy(update={"encoders": "hashing"}))}
    result = CliRunner().invoke(
        main, ["replay", "--only", "content", "--out", str(tmp_path / "out")], env=env
    )
    assert result.exit_code == 0, result.output
    assert "encoding the 13 items of topic" in result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    groups = report["details"]["content"]["by_modalities"]
    assert groups["text+image"]["events"] == sum(e["item_id"] == "item-1" for e in first + second)
