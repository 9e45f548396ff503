"""The users table on disk (``users_store = "rocksdb"``), and its damage set aside.

In memory (Faust's ``memory://``, the default) every user's entry stays in RAM, about
21 KB a user (``docs/scale.md``), and each start reads the table's whole changelog back.
On disk (Faust's RocksDB store, through ``rocksdict``) the entries live under data_dir
with a bounded cache, and a start reads only the changelog records written since.

Faust opens a partition's database when it first needs it and has no answer to one it
cannot read: with its ``CURRENT`` file overwritten, a restarted worker answered no click.
The table is derived from its changelog, as the vector store is from ``item-updates``,
so before the worker starts each database is opened and read whole once in a child
process (a native abort or a hang ends only the child), and one that fails is moved
aside (``<name>.db.unreadable``, the last one kept for a post-mortem): Faust then
recovers that partition from the changelog.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

from models.atomic_file import set_aside

log = logging.getLogger(__name__)

#: What Faust's RocksDB store is given per partition: a bounded cache and write buffers
#: (its defaults are a 2 GB block cache and three 64 MB buffers, per partition).
ROCKSDB_OPTIONS = {
    "block_cache_size": 64 * 2**20,
    "write_buffer_size": 16 * 2**20,
    "max_write_buffer_number": 2,
}

#: Open read-only, checksums checked, every entry read. A RocksDB iterator stops at damage
#: without raising (``items()`` just ends early): its ``status()`` raises it. A read-only
#: open takes no lock, so the lock file is looked at first.
_READ_WHOLE = """
import os, sys, rocksdict
lock = os.path.join(sys.argv[1], "LOCK")
if os.path.lexists(lock) and not os.path.isfile(lock):  # a read-only open takes no lock
    sys.exit("its LOCK is not a file: a read-write open cannot lock it")
options = rocksdict.Options(raw_mode=True)
options.set_paranoid_checks(True)
db = rocksdict.Rdict(sys.argv[1], options=options, access_type=rocksdict.AccessType.read_only())
read = rocksdict.ReadOptions()
read.set_verify_checksums(True)
entries = db.iter(read)
entries.seek_to_first()
while entries.valid():
    entries.value()
    entries.next()
entries.status()
del entries
db.close()
"""


def has_room(path: Path, min_free_bytes: int) -> bool:
    """Whether ``path``'s disk has ``min_free_bytes`` free: a RocksDB write to a full disk
    fails, and the database then refuses every write until it is opened again."""
    try:
        return shutil.disk_usage(path).free >= min_free_bytes
    except OSError:  # not there yet: the write will say what is wrong
        return True


def unreadable(database: Path, timeout_s: float) -> str | None:
    """Why ``database`` cannot be read whole, or None when it can."""
    try:
        child = subprocess.run(
            [sys.executable, "-c", _READ_WHOLE, str(database)],
            capture_output=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return f"not read within {timeout_s:.0f} s"
    if child.returncode == 0:
        return None
    said = child.stderr.decode(errors="replace").strip().splitlines()
    return f"exit {child.returncode}: {said[-1][:300] if said else 'no message'}"


def set_aside_unreadable(tabledir: Path, table: str, timeout_s: float = 300.0) -> list[Path]:
    """Move aside each of ``table``'s partition databases under ``tabledir`` that cannot be
    read whole; the paths moved."""
    moved = []
    for database in sorted(tabledir.glob(f"{table}-*.db")):
        why = unreadable(database, timeout_s)
        if why is None:
            continue
        aside = set_aside(database)
        moved.append(database)
        log.warning(
            "the users table's database %s cannot be read (%s): moved to %s; the partition "
            "is recovered from the table's changelog",
            database,
            why,
            aside.name,
        )
    return moved
