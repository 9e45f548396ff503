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


#: The largest shape the command line makes: a log is held whole before it is written
#: (about 350 bytes an event), and the evaluation replays a few hundred events a second.
MAX_EVENTS = 2_000_000
MAX_ITEMS = 1_000_000
MAX_POPULARITY_EXPONENT = 10.0
#: A user's quota is drawn by rejection (distinct items, popularity-weighted); a quota
#: near the catalog's size, or a steep popularity, needs ever more rounds for its last,
#: rarest items (an exponent of 10 never finished 50 items). Past this many item draws
#: (or rounds) the rest are drawn at once, without replacement, from the same weights.
_MAX_DRAWS_PER_USER = 20_000_000
_MAX_ROUNDS = 2_000


def shape_problem(shape: Shape) -> str | None:
    """Why ``generate`` cannot make ``shape`` as asked, naming the option and the fix,
    or None: each count at least 1 and bounded, finite weights, every user's minimum
    within the events asked for."""
    if not 1 <= shape.items <= MAX_ITEMS:
        return f"--items {shape.items}: give 1 to {MAX_ITEMS:,}"
    floor = max(min(shape.min_per_user, shape.items), 1)  # each user rates at least this
    if not floor <= shape.events <= MAX_EVENTS:
        return (
            f"--events {shape.events}: give {floor} to {MAX_EVENTS:,} "
            f"(each user rates at least {floor})"
        )
    if shape.users < 1 or shape.users * floor > shape.events:
        most = shape.events // floor
        return (
            f"--users {shape.users}: give 1 to {most:,} (each user rates at least {floor}, "
            f"and --events is {shape.events:,}), or raise --events"
        )
    if not 0 <= shape.popularity_exponent <= MAX_POPULARITY_EXPONENT:  # False for NaN
        return (
            f"--popularity-exponent {shape.popularity_exponent}: give a number from 0 "
            f"(uniform) to {MAX_POPULARITY_EXPONENT:g} (1 is Zipf's law)"
        )
    if shape.seed < 0:
        return f"--seed {shape.seed}: give 0 or more"
    return None


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
    quotas[: max(shape.events - int(quotas.sum()), 0)] += 1  # the remainder, one each
    quotas = np.minimum(quotas, shape.items)
    start = 1_000_000_000.0
    rows: list[tuple[int, int, float, int]] = []
    max_rounds = min(_MAX_ROUNDS, max(64, _MAX_DRAWS_PER_USER // shape.items))
    for user, quota in enumerate(quotas):
        liked = rng.choice(n_genres, size=min(2, n_genres), replace=False)
        pool = np.concatenate([genre_items[g] for g in liked])
        if not len(pool):  # fewer items than genres: the liked ones may have none
            pool = np.arange(shape.items)
        pool_weights = popularity[pool] / popularity[pool].sum()
        chosen: dict[int, None] = {}
        rounds = 0
        while len(chosen) < quota:
            wanted = quota - len(chosen)
            rounds += 1
            if rounds > max_rounds:
                chosen.update(
                    dict.fromkeys(
                        _rest(
                            rng, chosen, wanted, pool, pool_weights, popularity, shape.taste_share
                        )
                    )
                )
                break
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


def _rest(
    rng: np.random.Generator,
    chosen: dict[int, None],
    wanted: int,
    pool: np.ndarray,
    pool_weights: np.ndarray,
    popularity: np.ndarray,
    taste_share: float,
) -> list[int]:
    """``wanted`` items not in ``chosen``, drawn without replacement in proportion to the
    weights the rejection rounds draw with (Efraimidis and Spirakis' keys): the items
    those rounds would add, in distribution, in one pass however rare they are."""
    weights = (1 - taste_share) * popularity
    np.add.at(weights, pool, taste_share * pool_weights)
    left = np.setdiff1d(np.arange(len(popularity)), np.fromiter(chosen, dtype=np.int64))
    left = rng.permutation(left)  # ties (weights that underflowed to 0) in random order
    with np.errstate(divide="ignore"):
        keys = np.log(rng.random(len(left))) / weights[left]
    return [int(i) for i in left[np.argsort(-keys, kind="stable")[:wanted]]]


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
    problem = shape_problem(shape)
    if problem is not None:
        parser.error(problem)  # the usage and one line, exit status 2
    data = generate(shape)
    try:
        path = write(data, args.out)
    except OSError as error:
        parser.exit(
            1,
            f"{parser.prog}: error: {args.out}: cannot write there "
            f"({error.strerror or error}): give a directory you can create and write to\n",
        )
    rated = len({item for _, item, _, _ in data.ratings})
    print(f"{len(data.ratings):,} ratings of {rated:,} items by {shape.users:,} users: {path}")


if __name__ == "__main__":
    main()
