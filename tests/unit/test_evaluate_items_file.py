"""``streamrec evaluate --items``: items with images and audio, encoded as the worker
encodes them, each a candidate from its upload time on."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from streams.cli import main
from tests.media_samples import audio_file, circles, encoded, inline, tone

T0 = 1_700_000_000.0


def _items(path: Path) -> None:
    def at(seconds: float) -> str:
        from datetime import UTC, datetime

        return datetime.fromtimestamp(T0 + seconds, UTC).isoformat()

    uploads = [
        {"item_id": "a", "title": "Jazz night", "tags": ["jazz"], "created_at": at(0)},
        {
            "item_id": "b",
            "title": "Red circles",
            "image": inline(encoded(circles()), "image/png"),
            "created_at": at(0),
        },
        {
            "item_id": "c",
            "title": "A tone",
            "audio": inline(audio_file(tone(440.0)), "audio/wav"),
            "created_at": at(150),  # uploaded during the replay
        },
    ]
    path.write_text("".join(json.dumps(u) + "\n" for u in uploads))


def test_an_items_file_with_media_is_encoded_and_added_at_upload_time(tmp_path: Path) -> None:
    items, events = tmp_path / "items.jsonl", tmp_path / "events.jsonl"
    _items(items)
    log = [("u1", "a", 0), ("u2", "a", 50), ("u2", "b", 100), ("u1", "c", 200), ("u3", "c", 210)]
    events.write_text(
        "".join(
            json.dumps({"user_id": u, "item_id": i, "kind": "click", "ts": T0 + s}) + "\n"
            for u, i, s in log
        )
    )

    def evaluate() -> str:
        result = CliRunner().invoke(
            main,
            [
                "evaluate",
                str(events),
                "--items",
                str(items),
                "--only",
                "hybrid,hybrid (learned),content",
                "--cold-threshold",
                "2",
                "--out",
                str(tmp_path / "out"),
            ],
            env={"STREAMREC_DATA_DIR": str(tmp_path / "data")},
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        return result.output

    output = evaluate()
    assert "encoding the 3 items" in output and "over 3 items" in output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["cold_threshold"] == 2
    details = report["details"]["content"]
    assert details["uploaded_during"]["events"] == 2  # the two clicks on c
    assert details["zero_click"]["events"] == 3  # a, b and c, each once
    by_modalities = {group: m["events"] for group, m in details["by_modalities"].items()}
    assert by_modalities == {"text": 2, "text+image": 1, "text+audio": 2}
    assert "| text | text+audio | text+image |" in (tmp_path / "out" / "report.md").read_text()

    again = evaluate()  # the same items: read from the cache, the same report
    assert "encodings read from the cache" in again and "encoding the" not in again
    assert json.loads((tmp_path / "out" / "report.json").read_text())["table"] == report["table"]

    edited = items.read_text().replace("Jazz night", "Jazz at night")
    items.write_text(edited)
    assert "encoding the 3 items" in evaluate()  # an item changed: encoded again
