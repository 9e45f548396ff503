"""A checkpoint of the hybrid's item side: one versioned ``.npz`` file, written atomically.

What every ranking reads about items (the catalog's ids and titles, each source's item
arrays: co-engagement counts, trending masses, CF factors and biases, content vectors)
is captured as numeric arrays plus a JSON header, and restored into an empty
``HybridRecommender``. No pickle: the file is read with ``allow_pickle=False``, so a
file from elsewhere can at worst be refused, never run code.

The file is written to a temporary name beside the target, fsynced, and renamed over it
(then the directory is fsynced): a crash mid-write leaves the previous snapshot whole.
A snapshot that cannot be used (missing, truncated, another format version, another
set of sources or dimensions) raises ``SnapshotError``; the caller rebuilds instead.
"""

from __future__ import annotations

import json
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.atomic_file import write_atomically
from models.hybrid import HybridRecommender
from models.sources.changes import MAX_ID_CHARS, MAX_TITLE_CHARS
from models.user_state import UserState

#: Bumped whenever what a snapshot holds or means changes: older files are then ignored.
FORMAT_VERSION = 1
_HEADER = "header"
#: The archive's members: the header, the hybrid's marks, each source's and the learned
#: blend's arrays.
_MEMBER = re.compile(
    r"(header|recorded|cf_changed|source/[\w-]{1,64}/\w{1,64}|learned/\w{1,64})\.npy"
)
#: The largest magnitude any array may hold: each is loaded as float32 where its source
#: keeps float32 (1e39 in a float64 file became infinity there).
_LARGEST = float(np.finfo(np.float32).max)


class SnapshotError(Exception):
    """The snapshot cannot be used: the caller rebuilds the item side from its log."""


@dataclass
class ItemSideSnapshot:
    """The arrays and the JSON-ready header (``extra``: what the caller adds, e.g. the
    log offsets the item side reflects)."""

    arrays: dict[str, np.ndarray]
    header: dict[str, Any]


def capture(
    hybrid: HybridRecommender, extra: dict[str, Any], uploads_held: bool = False
) -> ItemSideSnapshot:
    """The hybrid's item side now, as copies (the hybrid may change while it is written).

    ``uploads_held``: the caller adds no item to the hybrid until the snapshot is written,
    so the arrays only uploads write (the content and modality vectors) are read in place:
    at 100k items the copy of 154 MB of content vectors is what held the worker's loop.
    Raises SnapshotError when a source has no item-side checkpoint.
    """
    arrays: dict[str, np.ndarray] = {}
    for name, source in hybrid.sources.items():
        try:
            item_arrays = source.item_arrays_until_upload if uploads_held else source.item_arrays
            for key, value in item_arrays().items():
                arrays[f"source/{name}/{key}"] = value
        except NotImplementedError as error:
            raise SnapshotError(str(error)) from error
    # The learned blend is item-side state too: a restart that reads only the log's tail
    # would otherwise start its weights and item counts from the prior.
    if hybrid.learned is not None:
        for key, value in hybrid.learned.item_arrays().items():
            arrays[f"learned/{key}"] = value
    # The hybrid's own item bookkeeping: which items the store holds, which CF vectors
    # are still to be published to it.
    arrays["recorded"] = np.flatnonzero(hybrid.uploaded[: len(hybrid)]).astype(np.int64)
    arrays["cf_changed"] = np.fromiter(hybrid._cf_changed, dtype=np.int64)
    header = {
        "format": FORMAT_VERSION,
        "sources": {name: type(source).__name__ for name, source in hybrid.sources.items()},
        "learned": hybrid.learned is not None,
        "ids": list(hybrid.catalog.ids),
        "titles": list(hybrid.titles),
        "extra": extra,
    }
    return ItemSideSnapshot(arrays, header)


def write(snapshot: ItemSideSnapshot, path: Path) -> int:
    """Write ``snapshot`` to ``path`` atomically; its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = np.frombuffer(json.dumps(snapshot.header).encode(), dtype=np.uint8)
    write_atomically(path, lambda handle: np.savez(handle, **snapshot.arrays, **{_HEADER: header}))
    return path.stat().st_size


def read(path: Path) -> ItemSideSnapshot:
    """The snapshot at ``path``; SnapshotError if there is none or it cannot be read."""
    if not path.exists():
        raise SnapshotError(f"no snapshot at {path}")
    try:
        _check_members(path)
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        header = json.loads(arrays.pop(_HEADER).tobytes().decode())
    except (
        OSError,
        ValueError,
        KeyError,
        zipfile.BadZipFile,
        EOFError,
        RecursionError,  # a header nested past the parser's depth
        MemoryError,  # an array member declaring more numbers than the file holds
    ) as error:
        raise SnapshotError(
            f"unreadable snapshot {path}: {type(error).__name__}: {error}"
        ) from error
    if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
        found = header.get("format") if isinstance(header, dict) else None
        raise SnapshotError(f"snapshot {path} has format {found!r}, not {FORMAT_VERSION}")
    return ItemSideSnapshot(arrays, header)


def _check_members(path: Path) -> None:
    """Raise SnapshotError unless every member of the archive is one ``write`` makes:
    stored, not compressed (a crafted 1.1 MB file inflated to 1.1 GB as it was read, so
    a 25 MB one would have killed every start), and named as an array of ours."""
    with zipfile.ZipFile(path) as archive:
        for member in archive.infolist():
            if member.compress_type != zipfile.ZIP_STORED or not _MEMBER.fullmatch(member.filename):
                raise SnapshotError(f"snapshot member {member.filename[:80]!r}: not one we write")


def restore(hybrid: HybridRecommender, snapshot: ItemSideSnapshot) -> None:
    """Load ``snapshot`` into ``hybrid``, which must hold no items yet.

    Raises SnapshotError, leaving ``hybrid`` as it was, when the snapshot was taken with
    other sources or dimensions.
    """
    if len(hybrid):
        raise SnapshotError("the item side already holds items: a snapshot restores an empty one")
    header, arrays = snapshot.header, snapshot.arrays
    expected = {name: type(source).__name__ for name, source in hybrid.sources.items()}
    # In order too: the learned blend's weights are rows in its sources' order, so a
    # snapshot of the same sources in another order would load each row into another's.
    if header.get("sources") != expected or list(header["sources"]) != list(expected):
        raise SnapshotError(
            f"snapshot of sources {header.get('sources')}, the hybrid has {expected}"
        )
    if bool(header.get("learned")) != (hybrid.learned is not None):
        raise SnapshotError(
            f"snapshot {'with' if header.get('learned') else 'without'} the learned blend, "
            f"the hybrid {'has' if hybrid.learned is not None else 'has not'} one"
        )
    ids, titles = header.get("ids"), header.get("titles")
    _check_contents(ids, titles, arrays)
    by_source: dict[str, dict[str, np.ndarray]] = {name: {} for name in hybrid.sources}
    for key, value in arrays.items():
        if key.startswith("source/"):
            _, name, field = key.split("/", 2)
            by_source.setdefault(name, {})[field] = value
    # Load every source into a fresh copy first: a source refusing its arrays (another
    # dimension) must leave the hybrid untouched.
    learned = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("learned/")}
    fresh = type(hybrid)(
        weights=hybrid.blend.weights,
        content_dim=hybrid.content.vectors.shape[1],
        learned=hybrid.learned is not None,
    )
    try:
        for name, source in fresh.sources.items():
            source.load_item_arrays(by_source[name])
        if fresh.learned is not None:
            fresh.learned.load_item_arrays(learned)
        held = {name: source.items_held() for name, source in fresh.sources.items()}
        if fresh.learned is not None:
            held["learned blend"] = fresh.learned.items_held()
        beyond = {name: n for name, n in held.items() if n > len(ids)}
        if beyond:
            raise ValueError(f"items past the catalog's {len(ids)} in {beyond}")
        _try_out(fresh, ids)
    except Exception as error:  # whatever arrays that do not fit together raise
        raise SnapshotError(
            f"snapshot arrays do not fit: {type(error).__name__}: {error}"
        ) from error
    for name in fresh.sources:
        hybrid.sources[name].load_item_arrays(by_source[name])
    if hybrid.learned is not None:
        hybrid.learned.load_item_arrays(learned)
    for item_id, title in zip(ids, titles, strict=True):
        hybrid.titles[hybrid._index(item_id)] = title
    hybrid.uploaded[arrays["recorded"]] = True
    hybrid._cf_changed.update(int(i) for i in arrays["cf_changed"])


def _check_contents(ids: Any, titles: Any, arrays: dict[str, np.ndarray]) -> None:
    """Raise SnapshotError unless the header's catalog and every array are what
    ``capture`` writes: a crafted file had loaded NaN weights (every later event refused
    as non-finite) or a repeated id (every later item reading another's row)."""
    if not (isinstance(ids, list) and isinstance(titles, list) and len(ids) == len(titles)):
        raise SnapshotError("snapshot ids and titles: not two lists of one length")
    if not all(isinstance(i, str) and 0 < len(i) <= MAX_ID_CHARS for i in ids):
        raise SnapshotError("snapshot ids: not all item ids")
    if len(set(ids)) != len(ids):
        raise SnapshotError("snapshot ids: an id named twice")
    if not all(isinstance(title, str) and len(title) <= MAX_TITLE_CHARS for title in titles):
        raise SnapshotError(f"snapshot titles: not all text of at most {MAX_TITLE_CHARS} chars")
    for key, array in arrays.items():
        if array.dtype.kind not in "biuf":
            raise SnapshotError(f"snapshot array {key!r} holds {array.dtype}, not numbers")
        if array.dtype.kind == "f":
            # -inf is trending's "no mass yet"; nothing else holds a non-finite number.
            allowed = np.isneginf(array) if key.endswith("/log_mass") else False
            if not ((np.abs(array) <= _LARGEST) | allowed).all():
                raise SnapshotError(f"snapshot array {key!r} holds a non-finite or huge number")
    for key in ("recorded", "cf_changed"):
        marks = arrays.get(key)
        if marks is None or marks.dtype.kind not in "iu" or marks.ndim != 1:
            raise SnapshotError(f"snapshot array {key!r}: not item indexes")
        if marks.size and (marks.min() < 0 or marks.max() >= len(ids)):
            raise SnapshotError(f"snapshot array {key!r}: indexes outside the catalog")


def _try_out(fresh: HybridRecommender, ids: list[str]) -> None:
    """Rank and learn once on the restored copy, on its first and last items: arrays
    that load but do not fit the catalog or each other (a factor matrix shorter than its
    biases) raise here, not at a user's click."""
    for item_id in ids:
        fresh._index(item_id)
    if not ids:
        return
    fresh.uploaded[: len(ids)] = True  # a throwaway copy: its extremes may be clicked
    now = time.time()
    state = UserState()
    fresh.recommend("snapshot-check", state, 10, now)
    for n, item_id in enumerate(dict.fromkeys([ids[0], ids[-1]])):
        fresh.learn_one("snapshot-check", state, f"check-{n}", item_id, 1.0, now)
    fresh.recommend("snapshot-check", state, 10, now)
