"""The CLI's file readers and the settings it builds."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from streams.cli import main, read_records
from streams.settings import Settings


def test_reads_json_lines_and_csv(tmp_path) -> None:
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text(json.dumps({"item_id": "a", "title": "A"}) + "\n\n")
    csv_file = tmp_path / "clicks.csv"
    csv_file.write_text("event_id,user_id,item_id,kind,value,tags\ne1,u,a,rating,4,x|y\n")
    assert list(read_records(jsonl)) == [{"item_id": "a", "title": "A"}]
    assert list(read_records(csv_file)) == [
        {
            "event_id": "e1",
            "user_id": "u",
            "item_id": "a",
            "kind": "rating",
            "value": 4.0,
            "tags": ["x", "y"],
        }
    ]


def test_bad_json_line_names_the_line(tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"item_id": "a"}\n{oops\n')
    with pytest.raises(click.ClickException, match=r"bad\.jsonl:2"):
        list(read_records(path))


def test_settings_from_environment_and_toml(tmp_path, monkeypatch) -> None:
    config = tmp_path / "streamrec.toml"
    config.write_text('topic_items = "uploads"\npartitions = 6\n')
    monkeypatch.setenv("STREAMREC_CONFIG", str(config))
    monkeypatch.setenv("STREAMREC_PARTITIONS", "4")
    settings = Settings()
    assert settings.topic_items == "uploads" and settings.partitions == 4
    assert settings.uses_local_broker and settings.effective_bootstrap_servers.endswith(":19092")


def test_secrets_are_passed_to_clients_but_not_printed(monkeypatch) -> None:
    monkeypatch.setenv("STREAMREC_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("STREAMREC_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("STREAMREC_SASL_PASSWORD", "hunter2")
    settings = Settings()
    assert settings.kafka_client_options()["sasl_plain_password"] == "hunter2"
    assert "hunter2" not in repr(settings)


def test_evaluate_writes_a_table_and_reports(tmp_path) -> None:
    events = tmp_path / "interactions.jsonl"
    lines = []
    for n in range(300):
        user, item = f"u{n % 9}", f"item-{(n * 7 + n // 9) % 23}"
        ts = f"2026-01-01T00:{n // 60:02d}:{n % 60:02d}+00:00"
        lines.append(
            json.dumps(
                {"event_id": f"e{n}", "user_id": user, "item_id": item, "kind": "click", "ts": ts}
            )
        )
    events.write_text("\n".join(lines))
    result = CliRunner().invoke(
        main, ["evaluate", str(events), "-k", "5", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    table = result.output[result.output.index("configuration") :]
    assert "hybrid" in table and "random" in table and "HitRate@5" in table
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["events"] == 300 and report["k"] == 5
    assert (tmp_path / "r" / "hit_rate_over_time.png").stat().st_size > 1000


def test_evaluate_names_the_layout_it_expects(tmp_path) -> None:
    odd = tmp_path / "ratings.parquet"
    odd.write_bytes(b"")
    result = CliRunner().invoke(main, ["evaluate", str(odd)])
    assert result.exit_code != 0 and "ml-100k directory" in result.output
