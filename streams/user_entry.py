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
for an entry of 300 items seen, 1.8 ms at 10,000). Where the rest of the entry leaves the
lists less room than their shares, the shares shrink (``fitted``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from faust.serializers import codecs

from streams.bounds import PRODUCER_MAX_REQUEST_BYTES, RECORD_OVERHEAD_BYTES
from streams.users_table import NAME

#: Bytes, as the users table writes them, of the items seen: 10,000 UUIDs fit.
SEEN_SHARE = 400_000
#: Of the user's remembered event ids, and of the positions with their event ids: 512
#: UUIDs fit either.
EVENT_IDS_SHARE = 100_000
POSITIONS_SHARE = 110_000
#: The bytes an entry's changelog record may take, key and value: the worker's producer
#: limit less a record's framing (its changelog's ``max.message.bytes`` is checked at start
#: to allow as much).
ENTRY_ROOM = PRODUCER_MAX_REQUEST_BYTES - RECORD_OVERHEAD_BYTES
SHARES = (SEEN_SHARE, EVENT_IDS_SHARE, POSITIONS_SHARE)

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


def fitted(key: str, entry: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """``entry`` with its remembered lists cut to their shares (``within_shares``), and
    the size of its record (``entry_size``). Where that passes ``ENTRY_ROOM`` because the
    rest of the entry is large, the lists are cut again to shares shrunk in proportion
    (``shares``): the rest (its latest list, the item changes not yet durable, the
    user's recent items) is bounded by counts, not bytes, and with the longest ids and
    titles took 480 kB, so such a user's every click was refused.

    >>> entry = {"latest": {"items": ["x" * 900_000]}, "positions": {"0:1": "e" * 200_000}}
    >>> entry_size("ann", within_shares(entry)) > ENTRY_ROOM
    True
    >>> kept, size = fitted("ann", entry)
    >>> size <= ENTRY_ROOM, kept["positions"]
    (True, {})
    """
    kept = within_shares(entry)
    size = entry_size(key, kept)
    if size <= ENTRY_ROOM:
        return kept, size
    reduced = shares(key, entry)
    kept = within_shares(entry, reduced)
    return kept, entry_size(key, kept, reduced[2])


def shares(key: str, entry: Mapping[str, Any]) -> tuple[int, int, int]:
    """The bytes the items seen, the event ids and the positions may take in ``entry``:
    their shares, cut in proportion where the rest of the record leaves them less of
    ``ENTRY_ROOM``.

    >>> shares("ann", {"latest": {}}) == SHARES
    True
    >>> shares("ann", {"latest": {"items": ["x" * 700_000]}})
    (194015, 48503, 53354)
    """
    rest = written_size(key) + _size(within_shares(entry, (0, 0, 0)))  # the lists empty
    scale = min(1.0, max(ENTRY_ROOM - rest, 0) / sum(SHARES))
    seen, event_ids, positions = (int(share * scale) for share in SHARES)
    return seen, event_ids, positions


def within_shares(
    entry: Mapping[str, Any], share_bytes: tuple[int, int, int] = SHARES
) -> dict[str, Any]:
    """``entry`` with each remembered list cut, oldest first, to its share (a new dict;
    ``entry`` is not changed). An entry within its shares is returned as it is."""
    seen_share, event_ids_share, positions_share = share_bytes
    kept = dict(entry)
    state = kept.get("state")
    if isinstance(state, dict):
        state = dict(state)
        history = state.get("history")
        if isinstance(history, dict) and isinstance(history.get("seen"), list):
            history = dict(history, seen=_newest(history["seen"], seen_share))
            state["history"] = history
        if isinstance(state.get("event_ids"), list):
            state["event_ids"] = _newest(state["event_ids"], event_ids_share)
        kept["state"] = state
    positions = kept.get("positions")
    if isinstance(positions, dict):
        kept["positions"] = _newest_positions(positions, positions_share)
    return kept


def entry_size(key: str, entry: Mapping[str, Any], positions_share: int = POSITIONS_SHARE) -> int:
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
        return written_size(key) + rest + _ids_size(seen) - held + positions_share
    return written_size(key) + written_size(entry) - held + positions_share


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
