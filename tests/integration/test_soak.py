"""A short soak in CI: a worker at a steady rate answers every click and its memory levels
off (the full-length run is tests/bench/bench_soak.py)."""

from __future__ import annotations

import pytest

from streams.broker import LocalBroker
from tests.bench.bench_soak import soak

pytestmark = pytest.mark.integration


def test_short_soak_answers_every_click_without_memory_growth(
    broker: LocalBroker, tmp_path
) -> None:
    figures = soak(broker, tmp_path, seconds=24, rate=10, round_seconds=6, items=60, users=30)
    assert figures["recommendations_received"] == figures["events_sent"] == 240
    # State grows with distinct users and items (all seen in the first rounds), not with
    # events: the second half may not add more than allocator noise.
    assert figures["rss_growth_mb_second_half"] < 50, figures
