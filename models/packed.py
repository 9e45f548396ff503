"""Float arrays as packed text: the JSON-ready form of the vectors in user state and
item changes.

A worker writes a user's state to its table's changelog at every event, and sends the
event's item changes to item-updates (and keeps a copy in the state until the broker
acknowledges it). Written by ``json``, a float64 takes about 20 characters: a 384-wide
content profile was 8 KB of the 10 KB state, and a click's changes about 5 KB, so each
click put some 25 KB through the broker where the list it serves is 2 KB. Packed, a
float64 is its 8 bytes in base64 (10.7 characters) and comes back bit for bit, so a
state read back, or changes applied from the log, rank exactly as those never written.

``pack`` refuses a NaN or an infinity (``NonFiniteError``, naming what and where): no
such number can reach stored state inside the text, where a check of the stored value
would no longer see it. ``unpack`` also reads the lists of floats written before.
Item vectors (content, image, audio) travel to item-updates as float32 (``FLOAT32``):
the vector store keeps them at that precision anyway.

>>> text = pack(np.array([0.1, -2.5, 3.0]), "a profile")
>>> text
'mpmZmZmZuT8AAAAAAAAEwAAAAAAAAAhA'
>>> unpack(text, "a profile").tolist(), unpack([0.1, -2.5, 3.0], "a profile").tolist()
([0.1, -2.5, 3.0], [0.1, -2.5, 3.0])
>>> pack([1.0, float("nan")], "the cf factor")
Traceback (most recent call last):
...
models.packed.NonFiniteError: the cf factor holds a non-finite number at [1]
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

import numpy as np

#: Little-endian float64: exact for the float64 state the models compute in.
FLOAT64 = np.dtype("<f8")
#: Little-endian float32: the item vectors the encoders publish.
FLOAT32 = np.dtype("<f4")


class NonFiniteError(ValueError):
    """A NaN or an infinity where state must hold finite numbers."""


def pack(values: np.ndarray | Sequence[float], what: str, dtype: np.dtype = FLOAT64) -> str:
    """``values`` (one dimension) as base64 text of their little-endian ``dtype`` bytes."""
    array = np.ascontiguousarray(values, dtype=dtype)
    _require_finite(array, what)  # after the conversion: a float64 too large for float32
    return base64.b64encode(array.tobytes()).decode("ascii")


def unpack(data: str | Sequence[float], what: str, dtype: np.dtype = FLOAT64) -> np.ndarray:
    """The array ``pack`` wrote (in native byte order), or one from a list of numbers
    (state stored before); ``ValueError`` naming ``what`` for text that is not such an
    array."""
    native = dtype.newbyteorder("=")
    if isinstance(data, str):
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{what} is not packed floats (not base64)") from None
        if len(raw) % dtype.itemsize:
            raise ValueError(f"{what} is not packed floats ({len(raw)} bytes)")
        array = np.frombuffer(raw, dtype=dtype).astype(native)
    else:
        try:
            array = np.asarray(data, dtype=native)
        except OverflowError:  # a JSON integer past any float
            raise ValueError(f"{what} holds a number too large for a float") from None
    _require_finite(array, what)
    return array


def _require_finite(array: np.ndarray, what: str) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        where = np.flatnonzero(~finite.ravel())[0]
        raise NonFiniteError(f"{what} holds a non-finite number at [{where}]")
