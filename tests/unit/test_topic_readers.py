"""The commands that read topics (recommend, recommend --follow, dead-letters, status)
skip a bad record with one line and keep showing the good ones around it; text from
producers reaches the terminal escaped, never as control sequences."""

from __future__ import annotations

import http.client
import io
import json
import types
import urllib.error
from collections.abc import Callable, Iterator

import pytest
from click.testing import CliRunner

import streams.admin
import streams.cli
import streams.inspection
from streams.cli import main
from streams.inspection import (
    dead_letter_json,
    describe_dead_letter,
    printable,
    worker_readiness,
)
from streams.settings import Settings


def recommendations(title: str = "ok", event: str = "e1") -> bytes:
    return json.dumps(
        {
            "user_id": "alice",
            "items": [{"item_id": "i1", "score": 0.5, "title": title, "reasons": []}],
            "trigger_event_id": event,
            "based_on_events": 1,
            "generated_at": "2024-01-01T00:00:00Z",
            "model_version": "v",
        }
    ).encode()


def letter(**fields: object) -> bytes:
    base = {
        "source_topic": "interactions",
        "partition": 0,
        "offset": 1,
        "key": "k",
        "reason": "schema",
        "error": "e",
        "raw": "r",
        "failed_at": "2024-01-01T00:00:00Z",
    }
    return json.dumps(base | fields).encode()


Records = list[tuple[str | None, bytes | None]]


@pytest.fixture
def topic(monkeypatch: pytest.MonkeyPatch) -> Callable[[Records], None]:
    """Serve records to ``read_topic`` and ``tail`` (a follow ends after them)."""
    served: Records = []

    def read_topic(settings: Settings, name: str, **_: object) -> Iterator:
        yield from served

    def tail(settings: Settings, name: str, on_caught_up=lambda: None, **_: object) -> Iterator:
        yield from served[:1]
        on_caught_up()
        yield from served[1:]

    monkeypatch.setattr(streams.cli, "_kafka_settings", Settings)
    monkeypatch.setattr(streams.admin, "read_topic", read_topic)
    monkeypatch.setattr(streams.inspection, "tail", tail)
    return lambda records: served.extend(records)


def invoke(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize("bad", [b"garbage", b'{"a": 1}', b"[1, 2]", None, b"[" * 5000])
def test_recommend_keeps_the_latest_valid_list(topic, bad) -> None:
    topic([("alice", recommendations(event="good")), ("alice", bad), ("bob", b"junk")])
    result = invoke("recommend", "alice")
    assert result.exit_code == 0
    assert "alice: after good" in result.stdout
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and len(skipped[0]) < 300


def test_recommend_with_only_bad_records_is_one_line_error(topic) -> None:
    topic([("alice", b"garbage")])
    result = invoke("recommend", "alice")
    assert result.exit_code == 1
    assert "no recommendations for 'alice'" in result.stderr


def test_recommend_follow_skips_a_bad_record_and_carries_on(topic) -> None:
    topic(
        [
            ("alice", recommendations(event="first")),
            ("alice", b"not json"),
            ("alice", None),
            ("alice", recommendations(event="second")),
        ]
    )
    result = invoke("recommend", "alice", "--follow")
    assert result.exit_code == 0
    assert "after first" in result.stdout and "after second" in result.stdout
    assert sum(line.startswith("skipped") for line in result.stderr.splitlines()) == 2


def test_recommend_prints_titles_escaped(topic) -> None:
    hostile = "\x1b[2J\x1b]8;;https://evil.example\x07click me\x1b]8;;\x07"
    topic([("alice", recommendations(title=hostile, event="e\x1b[2J"))])
    result = CliRunner().invoke(main, ["recommend", "alice"], color=True)
    assert result.exit_code == 0
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "\\x1b[2J" in result.output and "after e\\x1b[2J" in result.output
    as_json = CliRunner().invoke(main, ["recommend", "alice", "--json"], color=True)
    assert "\x1b" not in as_json.output


@pytest.mark.parametrize("bad", [b"[1,2]", b"5", b"null", None, b"[" * 5000, b"\xff\x1b[2J"])
def test_dead_letters_shows_the_good_ones_around_a_bad_record(topic, bad) -> None:
    topic([("k", letter(error="BEFORE")), ("k", bad), ("k", letter(error="AFTER"))])
    for args in (["dead-letters"], ["dead-letters", "--json"]):
        result = invoke(*args)
        assert result.exit_code == 0
        assert "BEFORE" in result.stdout and "AFTER" in result.stdout
        # a letter's lines: its JSON object, or its description and its "raw:" line
        odd = [
            line
            for line in result.stdout.splitlines()
            if not line.startswith(("{", "2024", "    raw:"))
        ]
        assert len(odd) == 1 and len(odd[0]) < 400, odd
        assert "\x1b" not in result.output


def test_dead_letters_escape_control_characters(topic) -> None:
    topic([("k", letter(reason="x\x1b[31m", error="\x9b2J", raw="\x1b[2J\x1b[31mPWNED"))])
    for args in (["dead-letters"], ["dead-letters", "--json"]):
        result = CliRunner().invoke(main, args, color=True)
        assert result.exit_code == 0
        assert "\x1b" not in result.output and "\x9b" not in result.output
        assert "PWNED" in result.output


def test_describe_and_json_of_odd_values() -> None:
    assert describe_dead_letter(None) == "(empty record)"
    assert dead_letter_json(None) == "(empty record)"
    assert describe_dead_letter(b"[1]").startswith("(not a dead letter:")
    assert json.loads(dead_letter_json(letter(raw="\x1b")))["raw"] == "\x1b"
    assert printable("a\x1bb\x07\x9bc\n") == "a\\x1bb\\x07\\x9bc\\x0a"
    assert printable("x" * 50, 10) == "x" * 7 + "..."


class Answer(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.mark.parametrize(
    "answer",
    [
        lambda: Answer(b"<html>hello</html>"),
        lambda: Answer(b"[1, 2]"),
        lambda: Answer(b"[" * 5000),
        http.client.BadStatusLine("SSH-2.0-OpenSSH"),
        http.client.RemoteDisconnected("closed"),
    ],
)
def test_worker_readiness_of_something_else_on_the_port(monkeypatch, answer) -> None:
    def urlopen(url: str, timeout: float):
        if isinstance(answer, Exception):
            raise answer
        return answer()

    monkeypatch.setattr(streams.inspection.urllib.request, "urlopen", urlopen)
    ready, reason = worker_readiness(Settings())
    assert ready is None
    assert "answers but not as a streamrec worker" in reason or "no worker answers" in reason
    assert "\n" not in reason


def test_worker_readiness_503_that_is_not_an_object(monkeypatch) -> None:
    def urlopen(url: str, timeout: float):
        raise urllib.error.HTTPError(url, 503, "no", {}, io.BytesIO(b"[1]"))  # type: ignore[arg-type]

    monkeypatch.setattr(streams.inspection.urllib.request, "urlopen", urlopen)
    assert worker_readiness(Settings()) == (False, "HTTP 503")


def test_status_prints_one_line_for_a_foreign_service(monkeypatch) -> None:
    monkeypatch.setattr(streams.cli, "_kafka_settings", Settings)
    monkeypatch.setattr(streams.inspection, "topic_status", lambda settings: [])
    monkeypatch.setattr(
        streams.inspection.urllib.request,
        "urlopen",
        lambda url, timeout: Answer(b"not json"),
    )
    result = invoke("status")
    assert result.exit_code == 0
    assert "not as a streamrec worker" in result.output


def test_read_topic_keys_that_are_not_utf8(monkeypatch) -> None:
    from kafka import TopicPartition

    tp = TopicPartition("t", 0)
    records = [(b"\xff\xfe", b"x"), (b"alice", b"y")]

    class Consumer:
        def __init__(self, *args: object, **kwargs: object) -> None:
            self.position_ = 0

        def partitions_for_topic(self, topic: str) -> set[int]:
            return {0}

        def assign(self, partitions: object) -> None: ...

        def seek_to_beginning(self, *partitions: object) -> None: ...

        def end_offsets(self, partitions: object) -> dict:
            return {tp: len(records)}

        def poll(self, timeout_ms: int = 0) -> dict:
            self.position_ = len(records)
            return {tp: [types.SimpleNamespace(key=k, value=v) for k, v in records]}

        def position(self, partition: object) -> int:
            return self.position_

        def close(self) -> None: ...

    monkeypatch.setattr(streams.admin, "KafkaConsumer", Consumer)
    monkeypatch.setattr(streams.admin, "check_connection", lambda *a, **k: None)
    keys = [key for key, _ in streams.admin.read_topic(Settings(), "t")]
    assert keys == ["\ufffd\ufffd", "alice"]
