"""Benchmarks: each prints one JSON line (docs/benchmarks.md)."""

from __future__ import annotations

import signal
import sys


def stop_children_on_sigterm() -> None:
    """Make SIGTERM end the benchmark through its ``finally`` blocks: the brokers and
    workers it starts run in sessions of their own, so a benchmark killed by the default
    handler left them running."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
