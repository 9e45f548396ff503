"""Poison-pill recovery for item ingestion: an item that kills the process is found and
dead-lettered, so the worker cannot crash-loop on it.

A record whose encoding kills the worker (out of memory, a segfault in a native decoder,
the kernel's OOM killer) is never committed, so a restarted worker reads it again and
would die again, forever. Before a batch is encoded, its records' positions are written
to a small marker file in the data directory (fsynced, then renamed into place). If the
process dies, the marker is still there at the next start: those records are *suspects*,
and are encoded again one at a time, each marked as *the* record in progress before its
encoding starts. A record that was in progress alone when the process died is the
*poison*: when it arrives again it is dead-lettered with reason ``poison``, not encoded.

The cost is one small fsynced write before and after each batch. A worker killed from
outside (``kill -9``, a host reboot) while encoding an innocent suspect alone would
dead-letter that item too; that takes two deaths in a row during one item's encoding.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from models.atomic_file import write_atomically

log = logging.getLogger(__name__)

#: (topic, partition, offset) of one source record.
Position = tuple[str, int, int]

MARKER_NAME = "ingest-in-progress.json"


class PoisonGuard:
    """The in-progress marker of one worker's item ingestion (``data_dir/MARKER_NAME``)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / MARKER_NAME
        #: Records of a batch in progress when the process died: encoded one at a time.
        self.suspects: set[Position] = set()
        #: Records in progress alone when the process died: dead-lettered, not encoded.
        self.poison: set[Position] = set()
        self._load()

    def _load(self) -> None:
        try:
            marker = json.loads(self.path.read_text())
            self.suspects = {_position(p) for p in marker.get("suspects", [])}
            self.poison = {_position(p) for p in marker.get("poison", [])}
            if marker.get("alone") is not None:
                alone = _position(marker["alone"])
                self.poison.add(alone)
                self.suspects.discard(alone)
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError, IndexError) as error:
            # A marker cut short by the crash itself: nothing in it can be trusted.
            log.warning("unreadable %s (%s): ignored", self.path, error)
            self.path.unlink(missing_ok=True)
            return
        if self.suspects or self.poison:
            log.warning(
                "the worker died while encoding items: %d to retry one at a time, %d poison",
                len(self.suspects),
                len(self.poison),
            )
        self._write(None)

    @property
    def active(self) -> bool:
        return bool(self.suspects or self.poison)

    def is_poison(self, position: Position) -> bool:
        return position in self.poison

    def is_suspect(self, position: Position) -> bool:
        return position in self.suspects

    def dismiss(self, position: Position) -> None:
        """A poison record was dead-lettered: forget it."""
        self.poison.discard(position)
        self.suspects.discard(position)
        self._write(None)

    @contextmanager
    def batch(self, positions: Iterable[Position]) -> Iterator[None]:
        """Mark ``positions`` in progress while the block runs."""
        self._write(None, in_batch=positions)
        try:
            yield
        finally:
            self._write(None)

    @contextmanager
    def alone(self, position: Position) -> Iterator[None]:
        """Mark ``position`` in progress alone while the block runs; it is no longer a
        suspect once the block has run (whatever its outcome, the process survived it)."""
        self._write(position)
        try:
            yield
        finally:
            self.suspects.discard(position)
            self._write(None)

    def _write(self, alone: Position | None, in_batch: Iterable[Position] = ()) -> None:
        suspects = sorted(self.suspects | set(in_batch))
        try:
            if not suspects and not self.poison and alone is None:
                self.path.unlink(missing_ok=True)
                return
            marker = {"suspects": suspects, "poison": sorted(self.poison), "alone": alone}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, lambda file: file.write(json.dumps(marker).encode()))
        except OSError as error:
            # A full or read-only disk must not stop ingestion (an exception here would
            # lose the batch): it runs on without the guard until the marker can be written.
            log.error("cannot write %s (%s): poison-pill recovery is off", self.path, error)


def _position(value: object) -> Position:
    topic, partition, offset = value  # type: ignore[misc]
    return str(topic), int(partition), int(offset)
