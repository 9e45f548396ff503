"""A user's table entry within the producer's limit as the users table writes it, whatever
the ids of the user's events and items.

An entry remembers ids: the items the user engaged with (never recommended again, up to
10,000), the user's last 512 event ids (duplicates) and the event id applied at each of
their last 512 positions (redeliveries). Ids are 1-256 characters of any text, and the
table's codec writes JSON with everything beyond ASCII escaped: an emoji is 12 bytes
(``\\ud83d\\ude00``), a 256-emoji id 3 KB. Counts alone did not bound the entry: one
user's clicks with emoji event ids passed the producer's 1 MB after about 170 events,
Faust's producer crashed on the changelog record, the worker exited, and the event,
redelivered at the restart, did it again (``tests/integration/test_user_entry_size.py``).

So each remembered list also has a share of the entry, in bytes as written, and past it
the oldest ids go, as past the count: an old item may be recommended again, an old
redelivery is ``undecidable-repeat``. Ids of up to 36 ASCII characters (UUIDs) never reach
a share before the count; 256 ASCII characters keep about 1,500 items and 380 events;
256 emoji about 130 items and 30 events. The whole entry is then measured as the codec
writes it (one encoding but for the items seen, measured apart: about 0.2 ms a click
for an entry of 300 items seen, 1.8 ms at 10,000).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from faust.serializers import codecs

from streams.users_table import NAME

#: Bytes, as the users table writes them, of the items seen: 10,000 UUIDs fit.
SEEN_SHARE = 400_000
#: Of the user's remembered event ids, and of the positions with their event ids: 512
#: UUIDs fit either.
EVENT_IDS_SHARE = 100_000
POSITIONS_SHARE = 110_000

_CODEC = codecs.get_codec(NAME)
#: What JSON escapes in ASCII text: control characters (DEL, 0x7f, too: Python's encoder
#: writes only the space to the tilde as themselves), the quote and the backslash.
_ESCAPED = bytes(range(32)) + b'"\\\x7f'


def written_size(value: Any) -> int:
    """Bytes of ``value`` as the users table's codec writes it (keys and values alike).

    >>> written_size("ann"), written_size("\\U0001f600"), written_size({"a": [1, 2]})
    (5, 14, 11)
    """
    return len(_CODEC.dumps(value))


def _size(value: Any) -> int:
    """``written_size`` of plain JSON values, without the codec's own encoder (for the
    parts: the same bytes)."""
    return len(json.dumps(value, separators=(",", ":")))


def _ids_size(ids: list[Any]) -> int:
    """``_size(ids)``, without encoding them when every id is printable ASCII holding no
    quote or backslash, as ids nearly always are (each is then written as itself, in
    quotes): 10,000 ids seen were 1.9 ms a click to encode.

    >>> cases = [], ["a"], ["ab", "c-1"], ["a\\\\", "q\\"", "\\x7f"], ["\\x7f"], [1]
    >>> all(_ids_size(ids) == _size(ids) for ids in cases)
    True
    """
    try:
        joined = "".join(ids).encode("ascii")
    except (TypeError, UnicodeEncodeError):  # not all text, or not all ASCII: as written
        return _size(ids)
    if len(joined.translate(None, _ESCAPED)) < len(joined):
        return _size(ids)
    return len(joined) + 3 * len(ids) + 1 if ids else 2


def within_shares(entry: Mapping[str, Any]) -> dict[str, Any]:
    """``entry`` with each remembered list cut, oldest first, to its share (a new dict;
    ``entry`` is not changed). An entry within its shares is returned as it is."""
    kept = dict(entry)
    state = kept.get("state")
    if isinstance(state, dict):
        state = dict(state)
        history = state.get("history")
        if isinstance(history, dict) and isinstance(history.get("seen"), list):
            history = dict(history, seen=_newest(history["seen"], SEEN_SHARE))
            state["history"] = history
        if isinstance(state.get("event_ids"), list):
            state["event_ids"] = _newest(state["event_ids"], EVENT_IDS_SHARE)
        kept["state"] = state
    positions = kept.get("positions")
    if isinstance(positions, dict):
        kept["positions"] = _newest_positions(positions, POSITIONS_SHARE)
    return kept


def entry_size(key: str, entry: Mapping[str, Any]) -> int:
    """The changelog record ``entry`` makes, key and value as written, counting its
    positions at their full share: an event refused later keeps this entry with one more
    position (``InteractionHandler.handle``), and must still fit. The items seen, most of
    a long history's entry, are measured apart (``_ids_size``)."""
    positions = entry.get("positions")
    held = _size(positions) if isinstance(positions, dict) else 0
    state = entry.get("state")
    history = state.get("history") if isinstance(state, dict) else None
    if isinstance(history, dict) and isinstance(history.get("seen"), list):
        seen = history["seen"]
        without = {**entry, "state": {**state, "history": {**history, "seen": []}}}
        rest = written_size(without) - 2  # the empty list's "[]"
        return written_size(key) + rest + _ids_size(seen) - held + POSITIONS_SHARE
    return written_size(key) + written_size(entry) - held + POSITIONS_SHARE


def _newest(ids: list[Any], share: int) -> list[Any]:
    size = _ids_size(ids)
    first = 0
    while size > share and first < len(ids):
        size -= _size(ids[first]) + 1  # and its comma
        first += 1
    return ids[first:] if first else ids


def _newest_positions(positions: dict[str, Any], share: int) -> dict[str, Any]:
    size = _size(positions)
    if size <= share:
        return positions
    items = list(positions.items())
    first = 0
    while size > share and first < len(items):
        key, value = items[first]
        size -= _size(key) + 1 + _size(value) + 1  # "key":value,
        first += 1
    return dict(items[first:])
