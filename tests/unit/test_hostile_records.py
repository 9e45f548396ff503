"""Records that are valid events but carry what the worker must not take at face value:
found by sending them through a real worker on a real broker (the fifth hostile-input
pass), held here where the cause is reached without one."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from streams.cli import format_recommendations
from streams.events import Recommendations
from streams.inspection import describe_dead_letter, printable
from streams.metrics import click_latency
from tests.unit.interaction_handler import Handler


def test_a_broker_timestamp_that_cannot_be_a_latency_is_not_measured(tmp_path: Path) -> None:
    """The producer sets a record's timestamp. Before: one record stamped 1 ms after the
    epoch put 1.7e9 s into the click-to-list histogram's sum and made the stats' p99
    1.3e12 ms for the next 1,000 lists; Kafka's -1 ("no timestamp") did the same, and one
    stamped in the year 2100 counted as a list sent at once."""
    handler = Handler(tmp_path)
    now = time.time()
    crafted = [-0.001, 0.001, 1.0, now - 30 * 86_400, now + 3_600, 2**62 / 1000]
    for offset, stamp in enumerate(crafted):
        assert handler.deliver(offset, f"c-{offset}", "item-1", timestamp=stamp)  # listed
    handler.deliver(len(crafted), "genuine", "item-2", timestamp=time.time() - 0.25)
    metrics = handler.handler.metrics
    percentiles = metrics.latency_percentiles()
    assert percentiles["count"] == 1
    assert 250 <= percentiles["p99_ms"] < 60_000
    total = metrics.registry.get_sample_value("streamrec_click_to_recommendation_seconds_sum")
    count = metrics.registry.get_sample_value("streamrec_click_to_recommendation_seconds_count")
    assert count == 1 and total is not None and math.isfinite(total) and 0.25 <= total < 60


def test_click_latency_measures_a_plausible_timestamp_and_nothing_else() -> None:
    now = 1e9
    assert click_latency(now - 10, now) == 10.0
    assert click_latency(now + 30, now) == 0.0  # a producer's clock a little ahead
    refused = [None, -1.0, 0.0, math.nan, math.inf, -math.inf, now + 61, now - 8 * 86_400]
    assert [click_latency(stamp, now) for stamp in refused] == [None] * len(refused)


#: Characters that reorder or hide what a terminal shows (``streams/inspection.py``).
REORDERING = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
#: Line separators, and characters that print as nothing (soft hyphen, invisible
#: separator, Mongolian vowel separator, Hangul filler, a tag character among them).
HIDING = "\u2028\u2029\u200b\u2060\ufeff\xad\u2063\u180e\u3164\U000e0041"


def test_ids_and_titles_cannot_reorder_or_hide_what_a_command_prints() -> None:
    """Ids are any 1-256 characters and titles any text. Before: a title holding U+202E
    (right-to-left override) reached the operator's terminal as it was, and a terminal
    that honours it showed the rest of the line reversed (another score, another id);
    a BOM or zero width space made two users print alike."""
    user = "\ufeffann"
    listed = Recommendations.model_validate(
        {
            "user_id": user,
            "trigger_event_id": "e\u2028-1",
            "based_on_events": 1,
            "model_version": "v",
            "generated_at": "2026-01-01T00:00:00Z",
            "items": [
                {
                    "item_id": "jazz\u200b-1",
                    "score": 0.5,
                    "title": "Blue \u202e9.99 :erocs\u202c and " + REORDERING + HIDING,
                    "reasons": [{"source": "content", "because_of": "x\u2067y", "score": 0.5}],
                }
            ],
        }
    )
    shown = format_recommendations(listed)
    assert not set(REORDERING + HIDING) & set(shown)
    assert "\\ufeffann" in shown and "Blue \\u202e9.99" in shown and "jazz\\u200b-1" in shown
    letter = describe_dead_letter(
        json.dumps({"key": user, "reason": "schema", "error": "\u202e", "raw": HIDING}).encode()
    )
    assert not set(REORDERING + HIDING) & set(letter)
    # Text in any script, emoji sequences (zero width joiners) and combining marks stay.
    assert printable("café e\u0301 שלום 👩\u200d💻 日本") == "café e\u0301 שלום 👩\u200d💻 日本"
