"""Dataset files for ``evaluate`` and ``load`` are checked line by line while they load: a
bad line is one ``DatasetError`` naming the file, line and field, and nothing is replayed."""

from __future__ import annotations

import gc
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

import streams.cli
from models.evaluation.datasets import DatasetError, load_dataset
from models.signals import signal_weight
from streams.cli import main
from streams.replay import parse_time
from streams.settings import Settings

GOOD_CLICK = {"user_id": "a", "item_id": "x", "kind": "click", "ts": 1_000}


def ml100k(directory: Path, u_data: str | bytes) -> Path:
    """An ml-100k directory with two items and ``u_data`` as its ratings."""
    directory.mkdir()
    (directory / "u.genre").write_text("Action|0\nDrama|1\n")
    (directory / "u.item").write_text("1|One (1995)|01-Jan-1995||url|1|0\n2|Two|||url|0|1\n")
    data = u_data if isinstance(u_data, bytes) else u_data.encode()
    (directory / "u.data").write_bytes(data)
    return directory


def ratings_csv(directory: Path, text: str | bytes) -> Path:
    path = directory / "ratings.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def jsonl(directory: Path, *lines: str | bytes) -> Path:
    path = directory / "events.jsonl"
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")
    return path


def json_line(**fields: object) -> str:
    return json.dumps({**GOOD_CLICK, **fields}, allow_nan=True)


GOOD_RATING = "1\t1\t5\t881250949\n"
HEADER = "userId,movieId,rating,timestamp\n"

#: (format, file content, line, field): each content has one bad line.
BAD_LINES = [
    ("ml100k", GOOD_RATING + "1\t2\t3\n", 2, "line"),
    ("ml100k", GOOD_RATING + "1\t2\t3\t4\t5\n", 2, "line"),
    ("ml100k", GOOD_RATING + "1\t2\tfive\t881250949\n", 2, "rating"),
    ("ml100k", "1\t2\tnan\t881250949\n", 1, "rating"),
    ("ml100k", "1\t2\tinf\t881250949\n", 1, "rating"),
    ("ml100k", "1\t2\t4e300\t881250949\n", 1, "rating"),
    ("ml100k", "1\t2\t4\tinf\n", 1, "timestamp"),
    ("ml100k", "1\t2\t4\t1e300\n", 1, "timestamp"),
    ("ml100k", "1\t2\t4\t-5\n", 1, "timestamp"),
    ("ml100k", "\t2\t4\t881250949\n", 1, "user id"),
    ("ml100k", "1\t \t4\t881250949\n", 1, "item id"),
    ("csv", HEADER + "1,2,4,5\n1,3\n", 3, "line"),
    ("csv", "userId,movieId,timestamp\n1,2,5\n", 1, "header"),
    ("csv", "", 1, "header"),
    ("csv", HEADER + "1,2,,5\n", 2, "rating"),
    ("csv", HEADER + "1,2,nan,5\n", 2, "rating"),
    ("csv", HEADER + "1,2,-inf,5\n", 2, "rating"),
    ("csv", HEADER + "1,2,4e300,5\n", 2, "rating"),
    ("csv", HEADER + "1,2,five,5\n", 2, "rating"),
    ("csv", HEADER + "1,2,4,1e300\n", 2, "timestamp"),
    ("csv", HEADER + "1,2,4,nan\n", 2, "timestamp"),
    ("csv", HEADER + ",2,4,5\n", 2, "userId"),
    ("csv", HEADER.encode() + b"1,\xff,4,5\n", 2, "line"),
    ("jsonl", [json_line(), '{"user_id": "a"'], 2, "line"),
    ("jsonl", [json_line(), "[1, 2]"], 2, "line"),
    ("jsonl", ["[" * 100_000], 1, "line"),
    ("jsonl", [json_line(), b'{"user_id": "\xe9"}'], 2, "line"),
    ("jsonl", [json.dumps({k: v for k, v in GOOD_CLICK.items() if k != "ts"})], 1, "ts"),
    ("jsonl", [json_line(ts=None)], 1, "ts"),
    ("jsonl", [json_line(ts="yesterday")], 1, "ts"),
    ("jsonl", [json_line(ts=True)], 1, "ts"),
    ("jsonl", [json_line(ts=math.inf)], 1, "ts"),
    ("jsonl", [json_line(ts=1e300)], 1, "ts"),
    (
        "jsonl",
        ['{"user_id": "a", "item_id": "x", "kind": "click", "ts": 1' + "0" * 400 + "}"],
        1,
        "ts",
    ),
    ("jsonl", [json_line(ts="3001-01-01T00:00:00+00:00")], 1, "ts"),
    ("jsonl", [json_line(item_id={"a": 1})], 1, "item_id"),
    ("jsonl", [json_line(item_id=7)], 1, "item_id"),
    ("jsonl", [json_line(user_id="")], 1, "user_id"),
    ("jsonl", [json_line(user_id="u" * 300)], 1, "user_id"),
    ("jsonl", [json_line(value="x")], 1, "value"),
    ("jsonl", [json_line(value=math.nan)], 1, "value"),
    ("jsonl", [json_line(kind="rating")], 1, "value"),
    ("jsonl", [json_line(kind="rating", value=4e300)], 1, "value"),
    ("jsonl", [json_line(kind="explode")], 1, "kind"),
    ("jsonl", [json_line(kind=None)], 1, "kind"),
    ("jsonl", [json_line(event_id=3)], 1, "event_id"),
]


def write(layout: str, content: object, directory: Path) -> tuple[Path, Path]:
    """The path to load and the file a bad line is reported in."""
    if layout == "ml100k":
        root = ml100k(directory / "ml-100k", content)  # type: ignore[arg-type]
        return root, root / "u.data"
    if layout == "csv":
        path = ratings_csv(directory, content)  # type: ignore[arg-type]
        return path, path
    path = jsonl(directory, *content)  # type: ignore[misc]
    return path, path


@pytest.mark.parametrize(("layout", "content", "line", "field"), BAD_LINES)
def test_a_bad_line_is_one_error_naming_file_line_and_field(
    tmp_path: Path, layout: str, content: object, line: int, field: str
) -> None:
    path, reported = write(layout, content, tmp_path)
    # Earlier tests' garbage finalised while the parser is at its recursion limit (the
    # line nested 100,000 deep) made Python fail to report it, now and then: not here.
    gc.collect()
    with pytest.raises(DatasetError) as raised:
        load_dataset(path)
    message = str(raised.value)
    assert message.startswith(f"{reported}:{line}: {field}: "), message
    assert "\n" not in message and "; " in message  # one line, with its fix
    assert (raised.value.line, raised.value.field) == (line, field)


@pytest.mark.parametrize(("layout", "content", "line", "field"), BAD_LINES[::4])
def test_evaluate_stops_at_a_bad_line_before_the_replay(
    tmp_path: Path, layout: str, content: object, line: int, field: str
) -> None:
    path, reported = write(layout, content, tmp_path)
    out = tmp_path / "reports"
    result = CliRunner().invoke(
        main, ["evaluate", str(path), "--no-content", "--processes", "1", "--out", str(out)]
    )
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: {reported}:{line}: {field}: ")
    assert result.output.count("\n") == 1 and "replaying" not in result.output
    assert not out.exists()


def test_load_stops_at_a_bad_line_before_sending(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(streams.cli, "_kafka_settings", Settings)  # no broker is asked
    path = jsonl(tmp_path, json_line(), json_line(kind="explode"))
    result = CliRunner().invoke(main, ["load", str(path)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {path}:2: kind: unknown interaction kind 'explode'")
    assert result.output.count("\n") == 1


def test_good_files_of_every_layout_load_in_time_order(tmp_path: Path) -> None:
    root = ml100k(tmp_path / "ml-100k", "1\t2\t4\t20\n\n3\t1\t1.5\t10\r\n")
    data = load_dataset(root)
    assert [(e.user, e.item, e.value, e.ts, e.event_id) for e in data.events] == [
        ("3", "1", 1.5, 10.0, "ml100k-2"),
        ("1", "2", 4.0, 20.0, "ml100k-0"),
    ]
    assert [i.tags for i in data.items] == [("Action",), ("Drama",)]
    (tmp_path / "movies.csv").write_text('movieId,title,genres\n7,"Seven, the",Crime|Drama\n')
    csv_path = ratings_csv(tmp_path, "\ufeff" + HEADER + "1, 7 ,4.5,5\n")
    data = load_dataset(csv_path)
    assert [(e.item, e.value, e.ts) for e in data.events] == [("7", 4.5, 5.0)]
    assert data.items[0].title == "Seven, the" and data.items[0].tags == ("Crime", "Drama")
    events = jsonl(
        tmp_path,
        json_line(ts="1970-01-01T00:00:20Z", event_id="b"),
        "",
        json_line(kind="rating", value=4, ts=10, event_id="a"),
    )
    assert [(e.kind, e.value, e.ts, e.event_id) for e in load_dataset(events).events] == [
        ("rating", 4.0, 10.0, "a"),
        ("click", None, 20.0, "b"),
    ]


def test_movies_csv_beside_the_ratings_is_checked_too(tmp_path: Path) -> None:
    (tmp_path / "movies.csv").write_text("movieId,genres\n1,Drama\n")
    with pytest.raises(DatasetError, match=r"movies\.csv:1: header: no column 'title'"):
        load_dataset(ratings_csv(tmp_path, HEADER + "1,1,4,5\n"))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("kind", ["rating", "click"])
def test_signal_weight_refuses_a_value_that_is_not_finite(kind: str, value: float) -> None:
    with pytest.raises(ValueError, match="not a finite number"):
        signal_weight(kind, value)


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "1e300", "-1", "soon"])
def test_parse_time_refuses_what_is_not_a_time_in_range(text: str) -> None:
    with pytest.raises(ValueError, match=r"^--from-time: "):
        parse_time(text, "--from-time")
