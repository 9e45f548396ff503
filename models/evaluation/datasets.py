"""Datasets for replay: MovieLens 100k (``u.data`` + ``u.item``), MovieLens ``ratings.csv``
(+ ``movies.csv``), and the project's own JSON-lines events.

Nothing here is bundled: MovieLens' licence forbids redistribution, so users point at
their own copy.
"""

from __future__ import annotations

import codecs
import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.signals import KNOWN_KINDS, MAX_INTERACTION_VALUE
from models.sources.changes import MAX_ID_CHARS


@dataclass(frozen=True)
class ReplayEvent:
    """One interaction to replay; ``ts`` in epoch seconds."""

    user: str
    item: str
    kind: str
    value: float | None
    ts: float
    event_id: str = ""


@dataclass(frozen=True)
class ReplayItem:
    item_id: str
    title: str
    text: str = ""
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dataset:
    name: str
    items: list[ReplayItem]
    events: list[ReplayEvent]


def _sorted(events: list[ReplayEvent]) -> list[ReplayEvent]:
    # Stable: events with the same timestamp keep the order the file gave them.
    return sorted(events, key=lambda e: e.ts)


class DatasetError(ValueError):
    """A line of a dataset file that cannot be replayed, as one line: the file, the line,
    the field, what is wrong and how to fix it."""

    def __init__(self, path: str | Path, line: int, field: str, why: str, fix: str) -> None:
        super().__init__(f"{path}:{line}: {field}: {why}; {fix}")
        self.path, self.line, self.field = str(path), line, field


#: Event times are epoch seconds from 1970 up to (not including) the year 3000: beyond
#: that a time is a unit error (milliseconds, microseconds) or garbage.
MAX_TIMESTAMP = datetime(3000, 1, 1, tzinfo=UTC).timestamp()
#: At most this much of a bad value is quoted in an error.
_QUOTED_CHARS = 40


def _quoted(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _QUOTED_CHARS else text[: _QUOTED_CHARS - 3] + "..."


def text_lines(path: Path, encoding: str = "utf-8") -> Iterator[str]:
    """``path``'s lines, decoded strictly one by one (a large file is never held whole), a
    line that is not ``encoding`` a ``DatasetError`` naming it."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and encoding == "utf-8":
                raw = raw.removeprefix(codecs.BOM_UTF8)  # spreadsheets save "UTF-8" with one
            try:
                yield raw.decode(encoding)
            except UnicodeDecodeError as error:
                raise DatasetError(
                    path,
                    number,
                    "line",
                    f"not {encoding.upper()} text (byte 0x{raw[error.start]:02x})",
                    f"save the file as {encoding.upper()}",
                ) from None


def _identifier(value: object, path: Path, line: int, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        why = (
            "missing"
            if value is None or value == ""
            else f"not a non-empty string ({_quoted(value)})"
        )
        raise DatasetError(path, line, field, why, 'give the id as text, e.g. "42"')
    if len(value) > MAX_ID_CHARS:
        raise DatasetError(
            path, line, field, f"{len(value):,} characters long", f"keep ids to {MAX_ID_CHARS}"
        )
    return value


def _number(value: object, path: Path, line: int, field: str, fix: str) -> float:
    """A finite float from a CSV cell (text) or a JSON number (never a bool)."""
    if value is None or value == "":
        raise DatasetError(path, line, field, "missing", fix)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DatasetError(path, line, field, f"not a number ({_quoted(value)})", fix)
    try:
        number = float(value)
    except (ValueError, OverflowError):  # OverflowError: a JSON integer beyond a float
        raise DatasetError(path, line, field, f"not a number ({_quoted(value)})", fix) from None
    if not math.isfinite(number):
        raise DatasetError(path, line, field, f"{_quoted(value)} is not a finite number", fix)
    return number


def _value(value: object, path: Path, line: int, field: str) -> float:
    fix = f"write a finite number within +-{MAX_INTERACTION_VALUE:,.0f}, e.g. 4"
    number = _number(value, path, line, field, fix)
    if abs(number) > MAX_INTERACTION_VALUE:
        raise DatasetError(path, line, field, f"{_quoted(value)} is out of range", fix)
    return number


def _timestamp(value: object, path: Path, line: int, field: str, iso: bool) -> float:
    """Epoch seconds (a number, or its text in CSV); with ``iso`` (JSON lines) a string is
    an ISO-8601 time."""
    fix = "write epoch seconds (e.g. 881250949) from 1970 to before the year 3000"
    fix += " or an ISO-8601 time" if iso else ""
    given = value
    if iso and isinstance(value, str):
        try:  # a naive time is local time, as it always was here
            value = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except (ValueError, OverflowError, OSError):
            why = f"not an ISO-8601 time ({_quoted(value)})"
            fix = "write e.g. 2026-01-01T10:00:00+00:00"
            raise DatasetError(path, line, field, why, fix) from None
    ts = _number(value, path, line, field, fix)
    if not 0 <= ts < MAX_TIMESTAMP:
        raise DatasetError(path, line, field, f"{_quoted(given)} is out of range", fix)
    return ts


def _event(
    path: Path,
    line: int,
    user: object,
    item: object,
    kind: object,
    value: object,
    ts: object,
    event_id: str,
    fields: tuple[str, str, str, str, str] = ("user_id", "item_id", "kind", "value", "ts"),
    iso: bool = False,
) -> ReplayEvent:
    """A checked ``ReplayEvent``: ids non-empty text, a known kind, a finite value within
    the wire's bound (required for a rating), and a plausible time."""
    user_field, item_field, kind_field, value_field, ts_field = fields
    if not isinstance(kind, str) or kind not in KNOWN_KINDS:
        raise DatasetError(
            path,
            line,
            kind_field,
            f"unknown interaction kind {_quoted(kind)}",
            f"use one of {', '.join(sorted(KNOWN_KINDS))}",
        )
    if value is None and kind == "rating":
        raise DatasetError(path, line, value_field, "missing", "a rating needs its value, e.g. 4")
    return ReplayEvent(
        _identifier(user, path, line, user_field),
        _identifier(item, path, line, item_field),
        kind,
        None if value is None else _value(value, path, line, value_field),
        _timestamp(ts, path, line, ts_field, iso),
        event_id,
    )


def load_movielens_100k(directory: str | Path) -> Dataset:
    """``u.data`` (user, item, rating, timestamp; tab separated) and ``u.item`` (titles,
    genres), in time order. Item text is title, genres and year, as in the issue's protocol.
    Every line of ``u.data`` is checked before anything is replayed."""
    directory = Path(directory)
    for name in ("u.data", "u.item", "u.genre"):
        if not (directory / name).is_file():
            raise FileNotFoundError(
                f"{directory / name} not found: point at an unpacked ml-100k directory"
            )
    genres = [
        line.split("|")[0]
        for line in (directory / "u.genre").read_text(encoding="latin-1").splitlines()
        if line.strip()
    ]
    items = []
    for line in (directory / "u.item").read_text(encoding="latin-1").splitlines():
        fields = line.split("|")
        if len(fields) < 5 + len(genres):
            continue
        flags = fields[5 : 5 + len(genres)]
        item_genres = tuple(g for g, flag in zip(genres, flags, strict=True) if flag == "1")
        year = fields[2][-4:] if fields[2] else ""
        items.append(ReplayItem(fields[0], fields[1], year, item_genres))
    events = []
    path = directory / "u.data"
    names = ("user id", "item id", "kind", "rating", "timestamp")
    # Latin-1, as ml-100k's other files: its item ids must match u.item's.
    for number, line in enumerate(text_lines(path, "latin-1"), start=1):
        if not line.strip():
            continue
        fields = line.strip("\r\n").split("\t")
        if len(fields) != 4:
            raise DatasetError(
                path,
                number,
                "line",
                f"{len(fields)} tab-separated fields",
                "write user id, item id, rating and timestamp separated by tabs",
            )
        user, item, rating, ts = (f.strip() for f in fields)
        event_id = f"ml100k-{number - 1}"
        events.append(_event(path, number, user, item, "rating", rating, ts, event_id, names))
    return Dataset("movielens-100k", items, _sorted(events))


_RATINGS_COLUMNS = ("userId", "movieId", "rating", "timestamp")


def _csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Each row of the CSV file ``path`` with the line it ends on, its cells stripped; a
    missing column, a short or long row, or a line that is not CSV is a ``DatasetError``."""
    reader = csv.reader(text_lines(path))
    try:
        header = next(reader, None) or []
        missing = [c for c in required if c not in header]
        if missing:
            raise DatasetError(
                path,
                1,
                "header",
                f"no column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}",
                f"start the file with the header {','.join(required)}",
            )
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise DatasetError(
                    path,
                    reader.line_num,
                    "line",
                    f"{len(row)} fields, the header has {len(header)}",
                    f"write one value per column ({','.join(header)})",
                )
            yield reader.line_num, {k: v.strip() for k, v in zip(header, row, strict=True)}
    except csv.Error as error:
        raise DatasetError(
            path, reader.line_num, "line", f"not CSV ({error})", "write one row per line"
        ) from None


def load_movielens_csv(ratings: str | Path) -> Dataset:
    """MovieLens ``ratings.csv`` (userId, movieId, rating, timestamp) and, beside it,
    ``movies.csv`` (movieId, title, genres separated by '|') when present. Every row is
    checked before anything is replayed."""
    ratings = Path(ratings)
    items = []
    movies = ratings.with_name("movies.csv")
    if movies.is_file():
        for line, row in _csv_rows(movies, ("movieId", "title")):
            tags = tuple(g for g in row.get("genres", "").split("|") if g)
            movie = _identifier(row["movieId"], movies, line, "movieId")
            items.append(ReplayItem(movie, row["title"], "", tags))
    events = []
    for n, (line, row) in enumerate(_csv_rows(ratings, _RATINGS_COLUMNS)):
        user, movie, rating, ts = (row[c] for c in _RATINGS_COLUMNS)
        fields = ("userId", "movieId", "kind", "rating", "timestamp")
        events.append(
            _event(ratings, line, user, movie, "rating", rating, ts, f"ratings-{n}", fields)
        )
    return Dataset(ratings.stem, items, _sorted(events))


def _json_object(text: str, path: Path, line: int) -> dict[str, Any]:
    fix = "write one JSON object per line"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:  # its line and column are within this one line
        why = f"not JSON ({error.msg} at column {error.colno})"
        raise DatasetError(path, line, "line", why, fix) from None
    except ValueError as error:  # an integer over Python's digit limit
        why = f"a number is too long ({str(error).partition(':')[0]})"
        raise DatasetError(path, line, "line", why, "write it as a string") from None
    except RecursionError:
        raise DatasetError(path, line, "line", "nests too deep", fix) from None
    if not isinstance(record, dict):
        why = f"a JSON {type(record).__name__}, not an object"
        raise DatasetError(path, line, "line", why, fix)
    return record


def iter_jsonl_events(path: str | Path) -> Iterator[ReplayEvent]:
    """The project's Interaction events, one JSON object per line (as on the topic):
    ``user_id``, ``item_id``, ``kind``, ``ts`` (epoch seconds or ISO-8601), ``value``
    (a rating's) and ``event_id`` optional; each line is checked as it is read."""
    path = Path(path)
    for number, line in enumerate(text_lines(path), start=1):
        if not line.strip():
            continue
        record = _json_object(line, path, number)
        event_id = record.get("event_id", "")
        if not isinstance(event_id, str):
            raise DatasetError(
                path, number, "event_id", f"not a string ({_quoted(event_id)})", "write it as text"
            )
        yield _event(
            path,
            number,
            record.get("user_id"),
            record.get("item_id"),
            record.get("kind"),
            record.get("value"),
            record.get("ts"),
            event_id,
            iso=True,
        )


def load_dataset(path: str | Path) -> Dataset:
    """By layout: an ml-100k directory, a ``ratings.csv``, or a ``.jsonl`` of interactions."""
    path = Path(path)
    if path.is_dir():
        return load_movielens_100k(path)
    if path.suffix == ".csv":
        return load_movielens_csv(path)
    if path.suffix in (".jsonl", ".json"):
        return Dataset(path.stem, [], _sorted(list(iter_jsonl_events(path))))
    raise ValueError(
        f"cannot tell the layout of {path}: give an ml-100k directory, a ratings.csv "
        "or a .jsonl file of interactions"
    )
