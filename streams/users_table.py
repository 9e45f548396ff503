"""The users table: Faust's table whose changelog reads a record that is not JSON as no
entry.

A worker rebuilds the users table from its changelog at start. One record there that was
not JSON (a corrupted or crafted write to the internal topic) made Faust's recovery fail
on it, wait, and read it again, forever: the worker never became ready and served
nobody (``tests/integration/test_users_changelog.py``). Read as no entry, that user
starts afresh at their next event; what is JSON but not an entry this version can read
is handled where entries are read (``streams/interactions.py``). A record whose key is not
a user id is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import faust
from faust.serializers import codecs
from faust.types import EventT

from streams.bounds import clip

log = logging.getLogger(__name__)

#: The name the codec is registered under.
NAME = "streamrec-users-json"


class UsersJSON(codecs.json):
    """Faust's JSON codec, reading a value that is not JSON as None (no entry)."""

    def _loads(self, s: bytes) -> Any:
        try:
            return super()._loads(s)
        except (ValueError, RecursionError) as error:  # not JSON, not UTF-8, or too deep
            log.error(
                "users table: a changelog value that is not JSON read as none: %s", clip(error)
            )
            return None


codecs.register(NAME, UsersJSON())


class UsersTable(faust.Table):
    """``faust.Table`` with ``UsersJSON`` for its keys and values (JSON as before, so
    the changelog's bytes are unchanged). Faust takes a table's codec only from a
    model's options, and makes the changelog topic with it as the table is added."""

    def _serializer_from_type(self, typ: Any) -> str:
        return NAME

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        """Restore the batch but its records whose key is not a user id: a JSON object or
        list as a key could not be stored (not hashable), and Faust's recovery retried
        the failed batch forever."""
        super().apply_changelog_batch(event for event in batch if _user_key(event))


def _user_key(event: EventT) -> bool:
    if isinstance(event.key, str):
        return True
    log.error(
        "users table: a changelog record whose key is not a user id skipped: %s", clip(event.key)
    )
    return False


#: The table's name: its changelog topic and, on disk, its databases are named after it.
USERS_TABLE = "users"


def users_table(
    app: faust.App, partitions: int, options: Mapping[str, Any] | None = None
) -> UsersTable:
    """The users table (one entry per user: ``streams/interactions.py``), added to ``app``
    as ``app.Table`` adds one; ``options``: its store's (``streams/users_store.py``)."""
    table = UsersTable(
        app,
        name=USERS_TABLE,
        default=None,
        beacon=app.tables.beacon,
        partitions=partitions,
        options=dict(options or {}),
    )
    app.tables.add(table)
    return table
