"""Datasets for replay: MovieLens 100k (``u.data`` + ``u.item``), MovieLens ``ratings.csv``
(+ ``movies.csv``), and the project's own JSON-lines events.

Nothing here is bundled: MovieLens' licence forbids redistribution, so users point at
their own copy.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


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


def load_movielens_100k(directory: str | Path) -> Dataset:
    """``u.data`` (user, item, rating, timestamp; tab separated) and ``u.item`` (titles,
    genres), in time order. Item text is title, genres and year, as in the issue's protocol."""
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
    with (directory / "u.data").open() as handle:
        for n, line in enumerate(handle):
            user, item, rating, ts = line.split("\t")
            events.append(
                ReplayEvent(user, item, "rating", float(rating), float(ts), f"ml100k-{n}")
            )
    return Dataset("movielens-100k", items, _sorted(events))


def load_movielens_csv(ratings: str | Path) -> Dataset:
    """MovieLens ``ratings.csv`` (userId, movieId, rating, timestamp) and, beside it,
    ``movies.csv`` (movieId, title, genres separated by '|') when present."""
    ratings = Path(ratings)
    items = []
    movies = ratings.with_name("movies.csv")
    if movies.is_file():
        with movies.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                tags = tuple(g for g in row.get("genres", "").split("|") if g)
                items.append(ReplayItem(row["movieId"], row["title"], "", tags))
    with ratings.open(newline="") as handle:
        events = [
            ReplayEvent(
                row["userId"],
                row["movieId"],
                "rating",
                float(row["rating"]),
                float(row["timestamp"]),
                f"ratings-{n}",
            )
            for n, row in enumerate(csv.DictReader(handle))
        ]
    return Dataset(ratings.stem, items, _sorted(events))


def iter_jsonl_events(path: str | Path) -> Iterator[ReplayEvent]:
    """The project's Interaction events, one JSON object per line (as on the topic)."""
    with Path(path).open() as handle:
        for line in handle:
            if not line.strip():
                continue
            record = json.loads(line)
            ts = record["ts"]
            if isinstance(ts, str):
                ts = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
            yield ReplayEvent(
                record["user_id"],
                record["item_id"],
                record["kind"],
                record.get("value"),
                float(ts),
                record.get("event_id", ""),
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
