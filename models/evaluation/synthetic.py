"""A synthetic ratings log of a chosen shape, in MovieLens' ``ratings.csv`` layout.

No data set of MovieLens ``ml-latest-small``'s shape (about 100k ratings of 9.7k items
by 610 users) ships with the project, and none of 100k items exists at all; this makes
one of any size, to measure how the evaluation and the item side scale:

- item popularity follows a power law (Zipf, exponent ``popularity_exponent``): a few
  items get most ratings, most items a handful;
- users' activity is heavy-tailed too (every user rates at least ``min_per_user``);
- tastes: items carry one to three of ``genres`` genres, each user prefers two, and
  ``taste_share`` of a user's ratings fall in them (so item-item and CF have something
  to find), the rest follow popularity alone;
- every user rates an item at most once; users start on days spread over ``span_days``
  and rate over a burst of about ``active_days``.

    python -m models.evaluation.synthetic OUT_DIR --events 100000 --items 10000 --users 610

writes ``OUT_DIR/ratings.csv`` and ``OUT_DIR/movies.csv`` (titles and genres, for the
content source), which ``streamrec evaluate OUT_DIR/ratings.csv`` reads.
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GENRE_NAMES = [
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western", "IMAX", "Biography",
]  # fmt: skip


@dataclass(frozen=True)
class Shape:
    events: int = 100_000
    items: int = 10_000
    users: int = 610
    genres: int = len(GENRE_NAMES)
    popularity_exponent: float = 1.0
    taste_share: float = 0.7
    min_per_user: int = 20
    span_days: float = 3 * 365.0
    active_days: float = 60.0
    seed: int = 0


@dataclass(frozen=True)
class SyntheticRatings:
    #: (user, item, rating, timestamp) rows, in time order.
    ratings: list[tuple[int, int, float, int]]
    titles: list[str]
    genres: list[list[str]]


def generate(shape: Shape) -> SyntheticRatings:
    """Ratings of ``shape``: ``shape.events`` of them, or all a user can give when a
    user's quota exceeds the catalog."""
    rng = np.random.default_rng(shape.seed)
    n_genres = min(shape.genres, len(GENRE_NAMES))
    # Popularity by rank, ranks shuffled over item ids (ids say nothing).
    weight = 1.0 / np.arange(1, shape.items + 1) ** shape.popularity_exponent
    popularity = rng.permutation(weight / weight.sum())
    item_genres = [
        rng.choice(n_genres, size=rng.integers(1, 4), replace=False) for _ in range(shape.items)
    ]
    by_genre = [[] for _ in range(n_genres)]  # type: list[list[int]]
    for item, genres in enumerate(item_genres):
        for genre in genres:
            by_genre[genre].append(item)
    genre_items = [np.array(items, dtype=np.int64) for items in by_genre]
    # Heavy-tailed activity (Pareto, shape 1.2) above the minimum, scaled to the total.
    extra = rng.pareto(1.2, size=shape.users)
    spare = max(shape.events - shape.min_per_user * shape.users, 0)
    quotas = shape.min_per_user + np.floor(extra / extra.sum() * spare).astype(int)
    quotas[: shape.events - int(quotas.sum())] += 1  # the remainder, one each
    quotas = np.minimum(quotas, shape.items)
    start = 1_000_000_000.0
    rows: list[tuple[int, int, float, int]] = []
    for user, quota in enumerate(quotas):
        liked = rng.choice(n_genres, size=2, replace=False)
        pool = np.concatenate([genre_items[g] for g in liked])
        pool_weights = popularity[pool] / popularity[pool].sum()
        chosen: dict[int, None] = {}
        while len(chosen) < quota:
            wanted = quota - len(chosen)
            in_taste = rng.random(wanted) < shape.taste_share
            picks = np.where(
                in_taste,
                rng.choice(pool, size=wanted, p=pool_weights),
                rng.choice(shape.items, size=wanted, p=popularity),
            )
            chosen.update(dict.fromkeys(int(i) for i in picks))
        items = list(chosen)[:quota]
        first = start + rng.random() * shape.span_days * 86_400
        # A user rates in a burst of weeks (as MovieLens users do), not over years.
        active_days = rng.exponential(shape.active_days)
        days = rng.exponential(active_days / len(items), size=len(items)).cumsum()
        for item, day in zip(items, days, strict=True):
            taste = bool(np.isin(item_genres[item], liked).any())
            rating = float(
                np.clip(np.round(rng.normal(4.0 if taste else 3.0, 1.0) * 2) / 2, 0.5, 5)
            )
            rows.append((user + 1, item + 1, rating, int(first + day * 86_400)))
    rows.sort(key=lambda row: row[3])
    titles = [f"Synthetic film {i + 1} ({1950 + i % 70})" for i in range(shape.items)]
    genres = [[GENRE_NAMES[g] for g in sorted(gs)] for gs in item_genres]
    return SyntheticRatings(rows, titles, genres)


def write(data: SyntheticRatings, directory: Path) -> Path:
    """``ratings.csv`` and ``movies.csv`` in ``directory``; the path of the former."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "movies.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["movieId", "title", "genres"])
        for n, (title, genres) in enumerate(zip(data.titles, data.genres, strict=True)):
            writer.writerow([n + 1, title, "|".join(genres)])
    ratings = directory / "ratings.csv"
    with ratings.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["userId", "movieId", "rating", "timestamp"])
        writer.writerows(data.ratings)
    return ratings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="directory for ratings.csv and movies.csv")
    defaults = Shape()
    for name in ("events", "items", "users", "seed"):
        parser.add_argument(f"--{name}", type=int, default=getattr(defaults, name))
    parser.add_argument("--popularity-exponent", type=float, default=defaults.popularity_exponent)
    args = parser.parse_args()
    shape = Shape(
        events=args.events,
        items=args.items,
        users=args.users,
        seed=args.seed,
        popularity_exponent=args.popularity_exponent,
    )
    data = generate(shape)
    path = write(data, args.out)
    rated = len({item for _, item, _, _ in data.ratings})
    print(f"{len(data.ratings):,} ratings of {rated:,} items by {shape.users:,} users: {path}")


if __name__ == "__main__":
    main()
