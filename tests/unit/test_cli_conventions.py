"""Command-line conventions: version, settings from global options, help, exit codes."""

from __future__ import annotations

import io
import json

from click.testing import CliRunner

from streams.cli import main, read_records
from streams.settings import Settings
from tests.conftest import free_port

UNSET_BY_OPTIONS: dict[str, str | None] = {
    "STREAMREC_BOOTSTRAP_SERVERS": None,
    "STREAMREC_CONFIG": None,
}


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("streamrec, version ")


def test_global_options_reach_the_settings(tmp_path) -> None:
    config = tmp_path / "streamrec.toml"
    config.write_text('topic_items = "uploads"\n')
    seen: list[Settings] = []

    @main.command("_probe", hidden=True)
    def probe() -> None:
        seen.append(Settings())

    try:
        result = CliRunner().invoke(
            main,
            ["--config", str(config), "-b", "kafka-1:9092,kafka-2:9092", "_probe"],
            env=UNSET_BY_OPTIONS,  # restored afterwards: the options write the environment
        )
    finally:
        main.commands.pop("_probe")
    assert result.exit_code == 0, result.output
    assert seen[0].topic_items == "uploads"
    assert seen[0].bootstrap_servers == "kafka-1:9092,kafka-2:9092"


def test_stdin_is_read_as_json_lines(monkeypatch) -> None:
    # Read as bytes, as sys.stdin.buffer gives them, and decoded strictly.
    lines = io.BytesIO(b'{"item_id": "a"}\n\n{"item_id": "b"}\n')
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(lines))
    assert [r["item_id"] for r in read_records("-")] == ["a", "b"]


def test_broker_stop_with_nothing_running_says_so(tmp_path) -> None:
    result = CliRunner().invoke(
        main,
        ["broker", "stop"],
        env={"STREAMREC_LOCAL_BROKER_PORT": str(free_port()), "STREAMREC_DATA_DIR": str(tmp_path)},
    )
    assert result.exit_code == 1 and "no local broker runs on" in result.output


def test_examples_are_valid_events() -> None:
    from pathlib import Path

    from streams.events import Interaction, ItemUpload

    examples = Path(__file__).parents[2] / "examples"
    items = [ItemUpload.model_validate(r) for r in read_records(examples / "items.jsonl")]
    clicks = [Interaction.model_validate(r) for r in read_records(examples / "interactions.jsonl")]
    assert any(i.image for i in items) and {c.item_id for c in clicks} <= {i.item_id for i in items}
    assert json.loads(json.dumps([c.model_dump(mode="json") for c in clicks]))
