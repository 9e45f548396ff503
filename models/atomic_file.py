"""Files written whole or not at all, for state a worker reads back at its next start,
and what made one unreadable, in one line.

The content goes to a temporary name beside the target, is fsynced and renamed over it,
then the directory is fsynced: a crash at any point leaves the former file whole (or
none), never half of the new one, and the rename itself survives a power cut.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "state.bin"
>>> write_atomically(path, lambda file: file.write(b"whole"))
>>> path.read_bytes(), sorted(p.name for p in path.parent.iterdir())
(b'whole', ['state.bin'])
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def write_atomically(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """``write`` the file at ``path`` through a temporary file, fsynced and renamed."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read_failure(error: BaseException) -> str:
    """What reading a damaged file raised, as one line of at most about 250 characters
    (numpy's and torch's messages run over several lines)."""
    return f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"


def set_aside(path: Path) -> Path:
    """Move ``path``, a file or a directory, to ``<name>.unreadable`` (kept for a
    post-mortem) and return that path. Whatever was set aside there before goes first,
    file or directory alike: removing only a directory left a file in the way, and the
    rename then failed at every start.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> (folder / "db").write_text("a file first")
    12
    >>> set_aside(folder / "db").name
    'db.unreadable'
    >>> (folder / "db").mkdir()
    >>> set_aside(folder / "db").is_dir()
    True
    """
    aside = path.with_name(path.name + ".unreadable")
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside)
    elif aside.exists() or aside.is_symlink():
        aside.unlink()
    os.replace(path, aside)
    return aside
