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
