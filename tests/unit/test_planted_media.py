"""The planted multimodal stream as real media (``tests/planted.py: write_planted_media``),
evaluated through the worker's own encoders: tastes carried by words, pictures and
sounds reach never-clicked items through the learned blend, and not through the fixed
one."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from streams.cli import main
from tests.planted import write_planted_media


def test_the_worker_encoders_find_the_planted_tastes_and_the_learned_blend_uses_them(
    tmp_path: Path,
) -> None:
    items, events = write_planted_media(
        tmp_path / "set", seed=3, n_items=160, new_items=60, n_users=60, n_events=2_500
    )
    uploads = [json.loads(line) for line in items.read_text().splitlines()]
    assert sum("image" in u for u in uploads) > 100 and sum("audio" in u for u in uploads) > 100
    result = _evaluate(tmp_path, items, events, "hybrid,hybrid (learned),content,random")
    assert "not encoded" not in result  # every image and sound decoded
    details = json.loads((tmp_path / "out" / "report.json").read_text())["details"]
    zero_click = {name: d["zero_click"]["hit_rate@10"] for name, d in details.items()}
    overall = {name: d["overall"]["hit_rate@10"] for name, d in details.items()}
    # Content from real encoders ranks never-clicked items of the user's taste well above
    # chance; the fixed blend leaves them out (no clicks, no collaborative score), the
    # learned blend learns to trust content on them.
    assert zero_click["content"] > 3 * zero_click["random"]
    assert zero_click["hybrid"] < 0.02
    assert zero_click["hybrid (learned)"] > 0.08
    assert overall["hybrid (learned)"] > overall["hybrid"]
    groups = details["content"]["by_modalities"]
    assert "text+image+audio" in groups and "text" in groups

    # The learned fusion, refitted during the replay on the worker's schedule (every
    # fusion_refresh_pairs co-engaged pairs), moves the content vectors: another report.
    learned = _evaluate(tmp_path, items, events, "content", STREAMREC_FUSION="learned")
    refits = int(learned.split("learned fusion: refitted ")[1].split()[0])
    assert refits >= 3
    moved = json.loads((tmp_path / "out" / "report.json").read_text())["details"]["content"]
    assert moved["overall"] != details["content"]["overall"]
    assert moved["zero_click"]["hit_rate@10"] > 3 * zero_click["random"]


def _evaluate(tmp_path: Path, items: Path, events: Path, only: str, **env: str) -> str:
    result = CliRunner().invoke(
        main,
        [
            "evaluate",
            str(events),
            "--items",
            str(items),
            "--only",
            only,
            "--out",
            str(tmp_path / "out"),
        ],
        env={
            "STREAMREC_DATA_DIR": str(tmp_path / "data"),
            "STREAMREC_MEDIA_ALLOWED_DIRS": json.dumps([str(tmp_path / "set")]),
            "STREAMREC_FUSION_REFRESH_PAIRS": "300",
            **env,
        },
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return result.output
