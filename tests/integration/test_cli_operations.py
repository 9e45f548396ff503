"""The operator's commands against a real broker: status, dead-letters, produce from
standard input, recommend --follow, and one-line errors when no broker answers."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from streams.admin import create_topics, produce
from streams.cli import main
from streams.events import DeadLetter, Recommendations, RecommendedItem
from streams.process import settings_env
from tests.conftest import free_port, isolated_settings

pytestmark = pytest.mark.integration


def run(settings, *args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), env=settings_env(settings), input=input)


def test_produce_from_stdin_and_status_shows_the_records(broker, tmp_path) -> None:
    settings = isolated_settings(broker, tmp_path / "data")
    lines = "".join(json.dumps({"item_id": f"i{n}", "title": f"Item {n}"}) + "\n" for n in range(5))
    result = run(settings, "produce", "items", "-", input=lines)
    assert result.exit_code == 0, result.output
    assert "sent 5 items" in result.output

    status = run(settings, "status")
    assert status.exit_code == 0, status.output
    rows = [line.split() for line in status.output.splitlines() if line.startswith("items-")]
    assert sum(int(row[2].replace(",", "")) for row in rows) == 5  # end offsets
    # Nobody committed on items yet: all five are lag; outputs have no lag column.
    assert sum(int(row[4].replace(",", "")) for row in rows) == 5
    assert any(
        line.startswith("recommendations-") and line.split()[-1] == "-"
        for line in status.output.splitlines()
    )
    assert "no worker answers" in status.output


def test_dead_letters_are_shown_with_their_reason(broker, tmp_path) -> None:
    settings = isolated_settings(broker, tmp_path / "data")
    letters = [
        DeadLetter(
            source_topic=settings.topic_items,
            partition=0,
            offset=n,
            key="bad-item",
            reason="invalid",
            error=f"title: String should have at most 1000 characters ({n})",
            raw="x" * 500,
            failed_at=datetime.now(UTC),
        )
        for n in range(3)
    ]
    produce(settings, settings.topic_dead_letters, [(d.key, d.to_bytes()) for d in letters])
    result = run(settings, "dead-letters", "-n", "2")
    assert result.exit_code == 0, result.output
    assert "(1)" in result.output and "(2)" in result.output and "(0)" not in result.output
    assert f"{settings.topic_items}[0]@2" in result.output
    assert "invalid: title" in result.output and "x" * 200 not in result.output  # cut short

    as_json = run(settings, "dead-letters", "--json")
    assert [json.loads(line)["offset"] for line in as_json.output.splitlines()] == [0, 1, 2]


@pytest.mark.parametrize("command", [["status"], ["recommend", "alice"], ["dead-letters"]])
def test_no_broker_is_one_line_naming_the_setting(command, tmp_path) -> None:
    result = CliRunner().invoke(
        main,
        ["-b", f"127.0.0.1:{free_port()}", *command],
        # Unset for the run and restored after it: -b writes the environment.
        env={"STREAMREC_DATA_DIR": str(tmp_path), "STREAMREC_BOOTSTRAP_SERVERS": None},
    )
    assert result.exit_code == 1
    assert result.output.count("\n") == 1, result.output  # one line, no traceback
    assert "no broker answers at bootstrap_servers" in result.output
    assert "bootstrap-servers" in result.output


def test_recommend_follow_shows_the_newest_list_then_each_new_one(broker, tmp_path) -> None:
    """The user's newest list, then each new one, another user's never. One consumer
    reads both (``inspection.tail``'s ``on_caught_up``): the command used to read the topic,
    then tail it from its end with a second consumer, and a list produced in between was
    never shown (a race this test does not force)."""
    settings = isolated_settings(broker, tmp_path / "data")

    def a_list(user: str, trigger: str, events: int) -> tuple[str, bytes]:
        item = RecommendedItem(item_id="jazz-1", score=1.0, title="Jazz", reasons=[])
        message = Recommendations(
            user_id=user,
            items=[item],
            trigger_event_id=trigger,
            based_on_events=events,
            generated_at=datetime.now(UTC),
            model_version="t",
        )
        return user, message.to_bytes()

    topic = settings.topic_recommendations
    create_topics(settings)
    produce(settings, topic, [a_list("ann", "e-1", 1), a_list("bob", "b-1", 1)])
    produce(settings, topic, [a_list("ann", "e-2", 2)])
    command = [sys.executable, "-m", "streams", "recommend", "ann", "--follow", "--json"]
    follower = subprocess.Popen(
        command, env=settings_env(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    shown: list[str] = []
    reader = threading.Thread(
        target=lambda: shown.extend(line.decode() for line in follower.stdout), daemon=True
    )
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while '"e-2"' not in "".join(shown) and time.monotonic() < deadline:
            time.sleep(0.2)
        produce(settings, topic, [a_list("bob", "b-2", 2), a_list("ann", "e-3", 3)])
        while '"e-3"' not in "".join(shown) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        follower.terminate()
        follower.wait(timeout=30)
    triggers = [line.split('"')[3] for line in "".join(shown).splitlines() if "trigger" in line]
    assert triggers == ["e-2", "e-3"]  # the newest, then the new one; bob's never
