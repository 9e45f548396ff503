"""End to end through the real broker: items in, clicks in, explained lists out.

One worker process serves the module; each test sends to its own users.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from streams.admin import produce
from streams.broker import LocalBroker
from streams.cli import main
from streams.process import WorkerProcess, settings_env
from streams.settings import Settings
from tests.conftest import TopicReader, isolated_settings
from tests.integration.helpers import click, recommendations_for, start_worker_with_catalog

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def running(
    broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, WorkerProcess]]:
    settings = isolated_settings(broker, tmp_path_factory.mktemp("pipeline"))
    worker = start_worker_with_catalog(settings)
    yield settings, worker
    worker.stop()


def test_clicks_produce_explained_recommendations_without_seen_items(running) -> None:
    settings, _ = running
    reader = TopicReader(settings, settings.topic_recommendations)
    events = [
        click("p-1", "alice", "space-1", "click", minute=1),
        click("p-2", "alice", "space-5", "like", minute=2),
    ]
    produce(settings, settings.topic_interactions, [("alice", e) for e in events])
    messages = reader.wait_for(lambda m: recommendations_for(m, "p-2") is not None)
    reader.close()

    first, latest = recommendations_for(messages, "p-1"), recommendations_for(messages, "p-2")
    assert first is not None and latest is not None
    assert latest.user_id == "alice" and latest.based_on_events == 2
    ranked = [item.item_id for item in latest.items]
    assert len(ranked) == settings.top_k
    assert not {"space-1", "space-5"} & set(ranked), "seen items must not come back"
    assert "space-1" not in [item.item_id for item in first.items]
    # The content source explains itself with one of alice's own items.
    top = latest.items[0]
    assert top.item_id.startswith("space-")
    content = [r for r in top.reasons if r.source == "content"]
    assert content and content[0].because_of in {"space-1", "space-5"}
    assert sum(item.startswith("space-") for item in ranked[:3]) >= 2


def test_bad_messages_are_dead_lettered_and_neighbours_processed(running) -> None:
    settings, worker = running
    recs = TopicReader(settings, settings.topic_recommendations)
    letters = TopicReader(settings, settings.topic_dead_letters)
    good_1 = click("d-1", "bob", "cook-2", minute=1)
    good_2 = click("d-2", "bob", "cook-5", "purchase", minute=2)
    messages = [
        ("bob", good_1),
        ("bob", b'{"event_id": "d-x", "user_id": "bob", '),  # truncated JSON
        ("bob", {**click("d-3", "bob", "cook-1"), "kind": "teleport"}),  # schema violation
        ("bob", click("d-4", "bob", "no-such-item")),  # unknown item
        ("bob", good_1),  # the same event again
        ("mallory", click("d-5", "bob", "cook-3")),  # key disagrees with user_id
        ("bob", good_2),
    ]
    produce(settings, settings.topic_interactions, messages)

    got = recs.wait_for(lambda m: recommendations_for(m, "d-2") is not None)
    dead = letters.wait_for(lambda m: len(m) >= 5)
    recs.close()
    letters.close()

    assert recommendations_for(got, "d-1") is not None
    after = recommendations_for(got, "d-2")
    assert after is not None and after.based_on_events == 2
    by_reason = {json.loads(value)["reason"]: json.loads(value) for _, value in dead}
    assert set(by_reason) == {"invalid-json", "schema", "unknown-item", "duplicate", "key-mismatch"}
    assert "kind" in by_reason["schema"]["error"]
    assert "no-such-item" in by_reason["unknown-item"]["error"]
    assert by_reason["invalid-json"]["source_topic"] == settings.topic_interactions
    assert by_reason["invalid-json"]["raw"].startswith('{"event_id": "d-x"')
    assert by_reason["invalid-json"]["offset"] is not None
    assert worker.stats()["dead_letters"]["duplicate"] >= 1


def test_item_upload_errors_are_dead_lettered_and_batch_neighbours_stored(running) -> None:
    settings, worker = running
    letters = TopicReader(settings, settings.topic_dead_letters)
    before = worker.stats()["items"]
    produce(
        settings,
        settings.topic_items,
        [
            ("new-1", {"item_id": "new-1", "title": "Saturn's Rings Up Close"}),
            ("new-2", b"not json at all"),
            ("new-3", {"item_id": "new-3"}),  # nothing to encode
            ("new-4", {"item_id": "new-4", "title": "Orbital Mechanics", "colour": "red"}),
            ("new-5", {"item_id": "new-5", "title": "Cosmic Dawn", "tags": ["space"]}),
        ],
    )
    worker.wait_until(lambda s: s["items"] >= before + 2, timeout_s=60, what="2 new items")
    dead = letters.wait_for(
        lambda m: sum(json.loads(v)["source_topic"] == settings.topic_items for _, v in m) >= 3
    )
    letters.close()
    errors = {
        json.loads(v)["key"]: json.loads(v)["error"]
        for _, v in dead
        if json.loads(v)["source_topic"] == settings.topic_items
    }
    assert set(errors) == {"new-2", "new-3", "new-4"}
    assert "empty item" in errors["new-3"]
    assert "colour" in errors["new-4"]
    assert worker.stats()["items"] == before + 2


def test_load_command_times_every_click(running, tmp_path) -> None:
    settings, _ = running
    log = tmp_path / "clicks.jsonl"
    items = ["space-2", "cook-3", "jazz-4", "ball-3", "space-6"]
    log.write_text(
        "\n".join(
            json.dumps(click(f"l-{n}", f"loader-{n % 4}", items[n % len(items)], minute=n))
            for n in range(20)
        )
    )
    result = CliRunner(env=settings_env(settings)).invoke(
        main, ["load", str(log), "--rate", "0", "--limit", "20"]
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])  # progress is on stderr
    assert figures["events_sent"] == 20
    assert figures["recommendations_received"] == 20
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]


def test_a_ready_worker_keeps_its_long_lived_objects_out_of_collections(running) -> None:
    _, worker = running
    # The task runs once the item side has caught up (streams/heap.py): the imports and
    # the loaded catalog, hundreds of thousands of objects, no longer walked by the GC.
    stats = worker.wait_until(
        lambda s: s["garbage_collection"]["objects_kept_out"] > 0, 60, "the heap frozen"
    )
    assert stats["garbage_collection"]["objects_kept_out"] > 100_000
    assert "kept out of garbage collections" in worker.log_path.read_text()
    # From then on it counts how late its loop wakes a task (streams/loop_stalls.py).
    stalls = worker.wait_until(
        lambda s: s["event_loop_stalls"]["wakes"] > 10, 60, "the loop watched"
    )["event_loop_stalls"]
    assert stalls["longest_ms"] >= 0 and stalls["over_250_ms"] <= stalls["over_100_ms"]
