"""A worker whose text encoder dies by a genuine segmentation fault on one text: the item
"made to kill the process" of the poison-pill test (``test_poison.py``). Test-only: it is
started as ``python -m tests.integration.killer_worker`` and is no part of the package.

Everything but the text encoder is the production worker (``streams worker``): the same
settings, app, agents, media policy and poison guard. The text encoder is the real MiniLM
encoder, which reads address 0 through ctypes when a batch holds ``KILLER``: the kernel
ends the process with SIGSEGV, with no Python exception that any handler could catch,
which is how a native decoder's crash, or the OOM killer's SIGKILL, looks to the worker.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence

import faust
import numpy as np

from encoders.base import Encoder
from streams.admin import create_topics, message_limits
from streams.app import StreamrecApp
from streams.encoding import build_item_encoder
from streams.settings import Settings

KILLER = "an item made to kill the worker"
#: A text the encoder never finishes: a batch stuck in native code, as a SIGTERM finds it.
HANGER = "an item the encoder never finishes"


class SegfaultingText(Encoder[str]):
    def __init__(self, real: Encoder[str]) -> None:
        self.real = real
        self.modality = real.modality
        self.dim = real.dim

    def encode(self, batch: Sequence[str]) -> np.ndarray:
        if any(KILLER in text for text in batch):
            ctypes.string_at(0)  # SIGSEGV
        if any(HANGER in text for text in batch):
            threading.Event().wait()  # forever
        return self.real.encode(batch)


def main() -> None:
    settings = Settings()
    create_topics(settings)
    encoder = build_item_encoder(settings)
    encoder.encoders["text"] = SegfaultingText(encoder.encoders["text"])
    streamrec = StreamrecApp(settings, encoder, topic_limits=message_limits(settings))
    streamrec.start()
    try:
        faust.Worker(streamrec.app, loglevel="info").execute_from_commandline()
    finally:
        streamrec.stop()


if __name__ == "__main__":
    main()
