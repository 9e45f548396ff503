"""Hostile and careless input to the commands, fifth pass: each ends with a report or one
line naming the option or the file's line and the fix, never a traceback, invalid JSON,
or hours of work (docs/reliability.md, the commands' row)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from models.evaluation.synthetic import Shape, generate
from streams.cli import main
from streams.replay import parse_offsets, read_items_file

ROOT = Path(__file__).resolve().parents[2]


def _strict(text: str) -> object:
    """JSON as a strict reader takes it: no NaN, no Infinity."""

    def refuse(token: str) -> object:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def _events(path: Path, *items: str) -> Path:
    path.write_text(
        "".join(
            json.dumps({"user_id": f"u{n % 2}", "item_id": item, "kind": "click", "ts": 1000})
            + "\n"
            for n, item in enumerate(items)
        )
    )
    return path


def _evaluate(tmp_path: Path, *args: str) -> Result:
    return CliRunner().invoke(
        main,
        ["evaluate", *args, "--no-content", "--processes", "1"],
        env={"STREAMREC_DATA_DIR": str(tmp_path / "data")},
    )


@pytest.mark.parametrize(
    ("items", "options"),
    [
        pytest.param(("a", "b", "a"), ["--cold-threshold", "0"], id="no-cold-event"),
        pytest.param((), [], id="no-event"),
    ],
)
def test_a_report_with_metrics_over_no_events_is_strict_json(
    tmp_path: Path, items: tuple[str, ...], options: list[str]
) -> None:
    # A metric over no events is NaN; json.dumps wrote it as NaN, which no strict JSON
    # reader (jq, JavaScript's JSON.parse) accepts: now null, shown n/a in the table.
    events = _events(tmp_path / "events.jsonl", *items)
    out = tmp_path / "out"
    result = _evaluate(tmp_path, str(events), "--only", "popularity", "--out", str(out), *options)
    assert result.exit_code == 0, result.output
    report = _strict((out / "report.json").read_text())
    assert isinstance(report, dict)
    row = report["table"][0]
    assert row["cold items HitRate@10"] is None
    assert "n/a" in result.output and (out / "hit_rate_over_time.png").stat().st_size > 0


def test_report_json_writes_what_is_not_finite_as_null() -> None:
    # ``streamrec load`` prints its figures so, and ``load --evaluate`` its served.json:
    # with no list back, the latencies and every HitRate were NaN.
    from models.evaluation.report import report_json

    figures = {"p50_ms": float("nan"), "max_ms": float("inf"), "lists": [1.5, -float("inf")]}
    assert _strict(report_json(figures, indent=None)) == {
        "p50_ms": None,
        "max_ms": None,
        "lists": [1.5, None],
    }


@pytest.mark.parametrize(
    "where",
    [
        pytest.param("afile/reports", id="under-a-file"),
        pytest.param("/dev/null", id="a-device"),
        pytest.param("/proc/reports", id="cannot-be-made"),
    ],
)
def test_an_out_directory_that_cannot_be_written_is_refused_before_the_replay(
    tmp_path: Path, where: str
) -> None:
    (tmp_path / "afile").write_text("")
    out = where if where.startswith("/") else str(tmp_path / where)
    events = _events(tmp_path / "events.jsonl", "a", "b")
    result = _evaluate(tmp_path, str(events), "--only", "popularity", "--out", out)
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: --out {out}: cannot write there (")
    assert result.output.count("\n") == 1 and "replaying" not in result.output


@pytest.mark.parametrize("only", [",", " ", " , ,"])
def test_only_naming_no_configuration_is_a_usage_error(tmp_path: Path, only: str) -> None:
    events = _events(tmp_path / "events.jsonl", "a", "b")
    result = _evaluate(tmp_path, str(events), "--only", only, "--out", str(tmp_path / "o"))
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--only'" in result.output and "names no configuration" in (
        result.output
    )
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def test_only_naming_a_configuration_twice_runs_it_once(tmp_path: Path) -> None:
    events = _events(tmp_path / "events.jsonl", "a", "b")
    out = tmp_path / "o"
    result = _evaluate(tmp_path, str(events), "--only", "popularity, popularity", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert [
        row["configuration"] for row in _strict((out / "report.json").read_text())["table"]
    ] == ["popularity"]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        pytest.param(b'{"item_id": "a"}\n', "empty item", id="empty-item"),
        pytest.param(b"[1, 2]\n", "Input should be an object", id="not-an-object"),
        pytest.param(b"[" * 100_000 + b"\n", "recursion limit", id="too-deep"),
        pytest.param(
            b'{"item_id": "a", "tags": [1], "created_at": "soon"}\n',
            "tags.0: Input should be a valid string; created_at:",
            id="two-fields",
        ),
        pytest.param(b'{"item_id": "a", "title": "\xff"}\n', "not UTF-8 text", id="not-utf-8"),
    ],
)
def test_a_bad_line_of_an_items_file_is_one_line_naming_the_file_and_line(
    tmp_path: Path, content: bytes, says: str
) -> None:
    # pydantic's own message took three lines and a link; bytes that are not UTF-8 raised
    # a codec error naming neither the file nor the line.
    items = tmp_path / "items.jsonl"
    items.write_bytes(b'{"item_id": "ok", "title": "fine"}\n' + content)
    events = _events(tmp_path / "events.jsonl", "ok")
    result = _evaluate(tmp_path, str(events), "--items", str(items), "--out", str(tmp_path / "o"))
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: {items}:2: ")
    assert says in result.output and result.output.count("\n") == 1


def test_an_items_file_may_start_with_a_byte_order_mark(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_bytes(b'\xef\xbb\xbf{"item_id": "a", "title": "A"}\r\n\r\n')
    assert [u.item_id for u in read_items_file(items)] == ["a"]


@pytest.mark.parametrize("text", ["x:1", "0:1:2", ":5", "0:-5", "-1:0", "0:" + "9" * 30, "0:1e3"])
def test_a_replay_start_offset_that_is_not_one_names_the_form(text: str) -> None:
    with pytest.raises(ValueError, match=r"should be PARTITION:OFFSET, two whole numbers"):
        parse_offsets(text)
    with pytest.raises(ValueError, match="partition 0 is given twice"):
        parse_offsets("0:1,0:2")


@pytest.mark.parametrize(
    ("shape", "says"),
    [
        pytest.param(Shape(items=0), "--items 0: give 1 to", id="no-items"),
        pytest.param(Shape(items=-3), "--items -3", id="negative-items"),
        pytest.param(Shape(items=10**12), "--items 1000000000000", id="huge-items"),
        pytest.param(Shape(events=0, items=5, users=2), "--events 0: give 5 to", id="no-event"),
        pytest.param(Shape(events=10**11), "--events 100000000000", id="huge-events"),
        pytest.param(Shape(users=0), "--users 0: give 1 to 5,000", id="no-user"),
        pytest.param(Shape(users=10**9), "or raise --events", id="huge-users"),
        pytest.param(Shape(popularity_exponent=float("nan")), "--popularity-exponent", id="nan"),
        pytest.param(Shape(popularity_exponent=1e6), "--popularity-exponent", id="steep"),
        pytest.param(Shape(seed=-1), "--seed -1", id="negative-seed"),
    ],
)
def test_a_synthetic_shape_that_cannot_be_made_is_refused_naming_the_option(
    shape: Shape, says: str
) -> None:
    from models.evaluation.synthetic import shape_problem

    problem = shape_problem(shape)
    assert problem is not None and problem.startswith("--") and says in problem


def test_the_synthetic_command_refuses_in_one_line_and_allocates_nothing(tmp_path: Path) -> None:
    # 10^12 items asked numpy for 7 TiB; items 0 divided by zero.
    for args in (["--items", "1000000000000"], ["--items", "0"], ["--seed", "-1"]):
        run = subprocess.run(
            [sys.executable, "-m", "models.evaluation.synthetic", str(tmp_path / "s"), *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
        assert run.stderr.splitlines()[-1].startswith("synthetic.py: error: --")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param(Shape(events=50, items=50, users=1, popularity_exponent=10), id="steep"),
        pytest.param(Shape(events=10, items=2, users=1), id="fewer-items-than-genres"),
        pytest.param(Shape(events=3, items=1, users=3), id="one-item"),
    ],
)
def test_a_synthetic_shape_at_the_edges_is_made_quickly(shape: Shape) -> None:
    # An exponent of 10 drew the 50th item with a chance of 1e-17 a draw, forever; with
    # fewer items than genres a user's liked genres could hold none (numpy raised).
    started = time.perf_counter()
    data = generate(shape)
    assert time.perf_counter() - started < 10
    per_user: dict[int, set[int]] = {}
    for user, item, _rating, _ts in data.ratings:
        assert item not in per_user.setdefault(user, set())  # each item once per user
        per_user[user].add(item)
    assert len(data.ratings) == min(shape.events, shape.users * shape.items)


@pytest.mark.parametrize(
    ("script", "args", "says"),
    [
        (
            ["examples/make_catalog.py"],
            ["--per-taste", "0", "--out", "{dir}/c"],
            "--per-taste 0: give 1 to 200",
        ),
        (
            ["examples/make_catalog.py"],
            ["--per-taste", "100000000", "--out", "{dir}/c"],
            "--per-taste 100000000",
        ),
        (["examples/make_catalog.py"], ["--out", "{file}/x"], "--out {file}/x: cannot write"),
        (["-m", "tests.planted"], ["--media", "{file}/x"], "--media {file}/x: cannot write"),
        (["-m", "tests.planted"], ["--media"], "expected one argument"),
        (["-m", "tests.planted"], ["x"], "invalid int value: 'x'"),
        (["-m", "tests.planted"], ["--media", "{dir}/p", "-3"], "seed -3: give a whole number"),
    ],
)
def test_the_example_writers_refuse_bad_arguments_in_one_line(
    tmp_path: Path, script: list[str], args: list[str], says: str
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")

    def filled(text: str) -> str:
        return text.format(file=afile, dir=tmp_path)

    run = subprocess.run(
        [sys.executable, *script, *map(filled, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert run.returncode in (1, 2) and "Traceback" not in run.stderr, run.stderr
    assert filled(says) in run.stderr.splitlines()[-1]
    assert not (tmp_path / "c").exists() and not (tmp_path / "p").exists()  # nothing written
