"""The CLI's file readers and the settings it builds."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import streams.admin
import streams.cli
from streams.cli import MAX_RECORD_DEPTH, main, read_records
from streams.settings import Settings


def test_reads_json_lines_and_csv(tmp_path) -> None:
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text(json.dumps({"item_id": "a", "title": "A"}) + "\n\n")
    csv_file = tmp_path / "clicks.csv"
    csv_file.write_text("event_id,user_id,item_id,kind,value,tags\ne1,u,a,rating,4,x|y\n")
    assert list(read_records(jsonl)) == [{"item_id": "a", "title": "A"}]
    assert list(read_records(csv_file)) == [
        {
            "event_id": "e1",
            "user_id": "u",
            "item_id": "a",
            "kind": "rating",
            "value": 4.0,
            "tags": ["x", "y"],
        }
    ]


def test_bad_json_line_names_the_line(tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"item_id": "a"}\n{oops\n')
    with pytest.raises(click.ClickException, match=r"bad\.jsonl:2"):
        list(read_records(path))


#: What ``produce`` handed the producer: (topic, key, value) per record.
Sent = list[tuple[str, bytes, bytes]]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    """The messages ``produce`` sends, to a fake producer (no broker)."""
    messages: Sent = []

    class FakeProducer:
        def send(self, topic: str, key: bytes, value: bytes) -> None:
            messages.append((topic, key, value))

        def flush(self) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setattr(streams.admin, "producer", lambda settings: FakeProducer())
    monkeypatch.setattr(streams.cli, "_kafka_settings", Settings)
    return messages


GOOD_LINE = b'{"user_id": "ann", "item_id": "i"}\n'


@pytest.mark.parametrize(
    ("name", "content", "line", "says"),
    [
        pytest.param(
            "a.jsonl",
            GOOD_LINE + b'{"user_id": "\\ud800"}\n' + GOOD_LINE,
            2,
            "'user_id' is not valid Unicode",
            id="lone-surrogate-key",
        ),
        pytest.param(
            "b.csv",
            b"event_id,user_id,item_id,kind,value,ts\ne1,ann,i,rating,4,1\ne2,ann,i,rating,five,1\n",
            3,
            "'value' is not a number ('five')",
            id="csv-value-not-a-number",
        ),
        pytest.param(
            "c.jsonl",
            GOOD_LINE + b'{"user_id": "x", "a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
            2,
            "nests deeper than",
            id="nesting-past-the-recursion-limit",
        ),
        pytest.param(
            "c.jsonl",
            GOOD_LINE
            + b'{"user_id": "x", "a": '
            + b"[" * MAX_RECORD_DEPTH
            + b"]" * MAX_RECORD_DEPTH
            + b"}\n",
            2,
            "nests deeper than",
            id="nesting-past-the-limit",
        ),
        pytest.param(
            "d.jsonl", GOOD_LINE + b'\r\n{"user_id": "\xff"}\n', 3, "not UTF-8", id="not-utf-8"
        ),
        pytest.param(
            "e.csv", b"user_id,value\nann,4\nb\xe9,1\n", 3, "not UTF-8", id="csv-not-utf-8"
        ),
        pytest.param(
            "f.jsonl", GOOD_LINE + b'{"item_id": "i"}\n', 2, "'user_id' is missing", id="no-key"
        ),
        pytest.param("g.jsonl", GOOD_LINE + b"[1, 2]\n", 2, "JSON object", id="not-an-object"),
        pytest.param("h.jsonl", GOOD_LINE + b"{oops\n", 2, "not JSON", id="not-json"),
        pytest.param(
            "i.jsonl",
            GOOD_LINE + b'{"user_id": "x", "n": ' + b"1" * 5_000 + b"}\n",
            2,
            "a number is too long",
            id="integer-past-the-digit-limit",
        ),
        pytest.param(
            "j.jsonl",
            GOOD_LINE + b'{"user_id": "x", "s": "' + b"y" * 2_000_000 + b'"}\n',
            2,
            "a message may hold",
            id="over-the-producer-limit",
        ),
        pytest.param(
            "k.csv",
            b'user_id,note\nann,"' + b"y" * 200_000 + b'"\n',
            2,
            "not CSV",
            id="csv-field-past-the-csv-limit",
        ),
    ],
)
def test_produce_refuses_a_file_with_a_bad_line_and_sends_none_of_it(
    tmp_path: Path, sent: Sent, name: str, content: bytes, line: int, says: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    result = CliRunner().invoke(main, ["produce", "interactions", str(path)])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: {path}:{line}: ")
    assert says in result.output and result.output.count("\n") == 1  # one line, no traceback
    assert sent == []


def test_produce_refuses_bad_standard_input_and_sends_none_of_it(sent: Sent) -> None:
    result = CliRunner().invoke(
        main, ["produce", "items", "-"], input=b'{"item_id": "a"}\n{"item_id": "\xfe"}\n'
    )
    assert result.exit_code == 1
    assert result.output == "Error: <stdin>:2: not UTF-8 text (byte 0xfe): save the file as UTF-8\n"
    assert sent == []


def test_produce_sends_records_as_they_are(tmp_path: Path, sent: Sent) -> None:
    # Bad events are the worker's to dead-letter: a number as key, a lone surrogate in a
    # value, NaN, an unknown field and CRLF line ends all go out as before.
    records = [
        {"user_id": "ann", "item_id": "i", "kind": "click"},
        {"user_id": 5, "note": "\ud800", "value": float("nan"), "\udc00": [1, {"a": None}]},
        {"user_id": "zoë", "item_id": "i", "extra": "x" * 1000},
    ]
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_bytes(b"\r\n".join(json.dumps(r).encode() for r in records) + b"\r\n\n")
    result = CliRunner().invoke(main, ["produce", "interactions", str(jsonl)])
    assert result.exit_code == 0, result.output
    topic = Settings().topic_interactions
    assert sent == [(topic, str(r["user_id"]).encode(), json.dumps(r).encode()) for r in records]

    sent.clear()
    csv_file = tmp_path / "items.csv"  # as a spreadsheet saves it: a UTF-8 byte order mark
    csv_file.write_bytes(b"\xef\xbb\xbfitem_id,title,tags,value\na,A,x|y,nan\nb,B,,\n")
    result = CliRunner().invoke(main, ["produce", "items", str(csv_file)])
    assert result.exit_code == 0, result.output
    assert sent == [
        (
            Settings().topic_items,
            b"a",
            b'{"item_id": "a", "title": "A", "tags": ["x", "y"], "value": NaN}',
        ),
        (Settings().topic_items, b"b", b'{"item_id": "b", "title": "B"}'),
    ]

    sent.clear()
    result = CliRunner().invoke(main, ["produce", "items", "-"], input=json.dumps(records[2]))
    assert result.exit_code == 0, result.output
    assert sent == [(Settings().topic_items, b"i", json.dumps(records[2]).encode())]


def test_settings_from_environment_and_toml(tmp_path, monkeypatch) -> None:
    config = tmp_path / "streamrec.toml"
    config.write_text('topic_items = "uploads"\npartitions = 6\n')
    monkeypatch.setenv("STREAMREC_CONFIG", str(config))
    monkeypatch.setenv("STREAMREC_PARTITIONS", "4")
    settings = Settings()
    assert settings.topic_items == "uploads" and settings.partitions == 4
    assert settings.uses_local_broker and settings.effective_bootstrap_servers.endswith(":19092")


def test_secrets_are_passed_to_clients_but_not_printed(monkeypatch) -> None:
    monkeypatch.setenv("STREAMREC_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("STREAMREC_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("STREAMREC_SASL_PASSWORD", "hunter2")
    settings = Settings()
    assert settings.kafka_client_options()["sasl_plain_password"] == "hunter2"
    assert "hunter2" not in repr(settings)


def test_evaluate_writes_a_table_and_reports(tmp_path) -> None:
    events = tmp_path / "interactions.jsonl"
    lines = []
    for n in range(300):
        user, item = f"u{n % 9}", f"item-{(n * 7 + n // 9) % 23}"
        ts = f"2026-01-01T00:{n // 60:02d}:{n % 60:02d}+00:00"
        lines.append(
            json.dumps(
                {"event_id": f"e{n}", "user_id": user, "item_id": item, "kind": "click", "ts": ts}
            )
        )
    events.write_text("\n".join(lines))
    result = CliRunner().invoke(
        main, ["evaluate", str(events), "-k", "5", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    table = result.output[result.output.index("configuration") :]
    assert "hybrid" in table and "random" in table and "HitRate@5" in table
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["events"] == 300 and report["k"] == 5
    assert (tmp_path / "r" / "hit_rate_over_time.png").stat().st_size > 1000


def test_evaluate_names_the_layout_it_expects(tmp_path) -> None:
    odd = tmp_path / "ratings.parquet"
    odd.write_bytes(b"")
    result = CliRunner().invoke(main, ["evaluate", str(odd)])
    assert result.exit_code != 0 and "ml-100k directory" in result.output


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        ("evaluate", "-k", "0"),
        ("evaluate", "-k", "-3"),
        ("evaluate", "--limit", "0"),
        ("evaluate", "--limit", "-1"),
        ("evaluate", "--cold-threshold", "-1"),
        ("evaluate", "--ease-l2", "nan"),
        ("evaluate", "--ease-l2", "inf"),
        ("evaluate", "--ease-l2", "-500"),
        ("evaluate", "--ease-l2", "0"),
        ("evaluate", "--ease-refit-every", "0"),
        ("replay", "--ease-refit-every", "-2"),
        ("replay", "--from-time", "inf"),
        ("replay", "--to-time", "-inf"),
        ("replay", "--to-time", "nan"),
        ("replay", "--from-time", "tomorrow"),
        ("replay", "--from-offsets", "0"),
        ("load", "--limit", "0"),
        ("load", "--rate", "-1"),
        ("load", "--rate", "nan"),
    ],
)
def test_options_out_of_range_are_usage_errors_naming_the_option(
    tmp_path: Path, command: str, option: str, value: str
) -> None:
    """Refused while the options are read: nothing is loaded, no broker is asked."""
    events = tmp_path / "events.jsonl"
    events.write_text('{"user_id": "a", "item_id": "x", "kind": "click", "ts": 1}\n')
    dataset = [] if command == "replay" else [str(events)]
    result = CliRunner().invoke(main, [command, *dataset, option, value])
    assert result.exit_code == 2, result.output
    assert "Invalid value for" in result.output and option in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("movies", "says"),
    [
        ("1," + "T" * 1001 + ",Drama", "title: String should have at most 1000 characters"),
        ("1,,", "empty item"),
    ],
    ids=["title-too-long", "no-title-no-genres"],
)
def test_load_refuses_a_dataset_item_that_is_no_upload_before_sending_anything(
    tmp_path: Path, sent: Sent, movies: str, says: str
) -> None:
    """``load --upload-items`` built each upload unchecked: pydantic's traceback."""
    (tmp_path / "movies.csv").write_text(f"movieId,title,genres\n{movies}\n2,Fine,Drama\n")
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("userId,movieId,rating,timestamp\n1,1,4,881250949\n")
    result = CliRunner().invoke(
        main,
        ["load", str(ratings), "--upload-items", "--limit", "1"],
        env={"STREAMREC_DATA_DIR": str(tmp_path / "data")},
    )
    assert result.exit_code == 1 and sent == [], result.output
    assert result.output.startswith(f"Error: {ratings}: item '1' cannot be uploaded (")
    assert says in result.output and result.output.count("\n") == 1
