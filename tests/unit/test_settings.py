"""The example configuration loads, and documents every setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streams.settings import CONFIG_FILE_ENV, Settings

EXAMPLE = Path(__file__).parents[2] / "deploy" / "streamrec.example.toml"


def test_example_config_loads_and_names_every_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_FILE_ENV, str(EXAMPLE))
    settings = Settings()
    assert settings.fusion == "average" and settings.media_allowed_dirs == []
    documented = set(re.findall(r"^#?\s*([a-z_0-9]+) =", EXAMPLE.read_text(), re.MULTILINE))
    missing = set(Settings.model_fields) - documented
    assert not missing, f"add these to {EXAMPLE.name}: {sorted(missing)}"


def test_bad_fusion_weights_name_the_field() -> None:
    with pytest.raises(ValueError, match="fusion_weights"):
        Settings(fusion_weights={"text": 0.0})


def test_every_setting_is_documented_in_the_generated_reference() -> None:
    from streams.settings_reference import BEGIN, END, documented_fields, reference_markdown

    undocumented = [name for _, name, meaning in documented_fields() if not meaning]
    assert not undocumented, f"give these a #: comment in streams/settings.py: {undocumented}"
    page = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    shown = page[page.index(BEGIN) : page.index(END) + len(END)]
    assert shown == reference_markdown(), (
        "docs/configuration.md is stale: python -m streams.settings_reference, and paste it"
    )


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        # Accepted before: every score -inf (fixed blend) or every event non-finite
        # (learned); a NaN weight turned its source off; a NaN fusion weight zeroed items.
        ("hybrid_weights", '{"item-item": Infinity, "trending": 1}'),
        ("hybrid_weights", '{"item-item": 1, "cf": NaN}'),
        ("fusion_weights", '{"text": Infinity}'),
        ("empty_fetch_backoff_ms", "inf"),  # slept forever after the first empty fetch
        ("consumer_session_timeout_s", "nan"),
        # Faust refuses it only as the consumer starts, naming its own setting.
        ("consumer_session_timeout_s", "100"),
        ("web_port", "70000"),
        ("local_broker_port", "-1"),
        # Finite but past any use, each accepted and failing later: every media fetch
        # overflowed, every click refused (weights 1e300), every list past the
        # producer's limit (a 1.1 MB model_version), the store's reset failing at start
        # ("..": the store's files beside the users database).
        ("media_connect_timeout_s", "1e300"),
        ("hybrid_weights", '{"item-item": 1e300, "trending": 1}'),
        ("fusion_weights", '{"text": 1e308}'),
        ("model_version", "v" * 1_100_000),
        ("collection", ".."),
        ("collection", "/elsewhere"),
    ],
)
def test_a_setting_no_worker_can_run_with_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, setting: str, value: str
) -> None:
    monkeypatch.setenv(f"STREAMREC_{setting.upper()}", value)
    with pytest.raises(ValueError, match=setting):
        Settings()


def test_a_collection_name_with_a_nul_from_a_config_file_is_refused() -> None:
    with pytest.raises(ValueError, match="collection"):
        Settings(collection="items\x00")


def test_every_numeric_setting_has_an_upper_bound() -> None:
    """A finite 1e300 passed and failed later, as each use of it overflowed."""
    unbounded = [
        name
        for name, field in Settings.model_fields.items()
        if field.annotation in (int, float)
        and not any(getattr(m, "le", None) is not None for m in field.metadata)
    ]
    assert not unbounded, f"give these an upper bound (le=): {unbounded}"


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        # Each was accepted: every dead letter was read back as an interaction and
        # dead-lettered again, forever...
        ({"TOPIC_DEAD_LETTERS": "interactions"}, "topic_dead_letters and topic_interactions"),
        # ...lists read as interactions, uploads folded as item records...
        ({"TOPIC_RECOMMENDATIONS": "interactions"}, "topic_recommendations"),
        ({"TOPIC_ITEM_UPDATES": "items"}, "topic_item_updates and topic_items"),
        # ...the users table's changelog taken for uploads.
        ({"TOPIC_ITEMS": "streamrec-users-changelog"}, "topic_items"),
        ({"CONSUMER_GROUP": "g", "TOPIC_ITEMS": "g-__assignor-__leader"}, "topic_items"),
        # Names Kafka refuses: a traceback from the admin client or the consumer.
        ({"TOPIC_ITEMS": ""}, "topic_items"),
        ({"TOPIC_INTERACTIONS": "click stream"}, "topic_interactions"),
        ({"TOPIC_DEAD_LETTERS": ".."}, "topic_dead_letters"),
        ({"TOPIC_RECOMMENDATIONS": "r" * 250}, "topic_recommendations"),
        ({"TOPIC_ITEMS": "artículos"}, "topic_items"),
        ({"CONSUMER_GROUP": "g" * 230}, "consumer_group"),  # its changelog over 249
        ({"CONSUMER_GROUP": "my/group"}, "consumer_group"),
    ],
)
def test_topics_kafka_refuses_or_that_share_a_name_are_refused_naming_them(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], named: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(f"STREAMREC_{name}", value)
    with pytest.raises(ValueError, match=re.escape(named)):
        Settings()


def test_a_data_dir_that_is_or_lies_under_a_file_is_refused(tmp_path: Path) -> None:
    """Before: ``streamrec worker`` ended with a traceback (``NotADirectoryError``) once it
    had started the broker."""
    (tmp_path / "file").write_text("")
    for data_dir in (tmp_path / "file", tmp_path / "file" / "below"):
        with pytest.raises(ValueError, match=r"data_dir.*is not a directory"):
            Settings(data_dir=data_dir)
    assert Settings(data_dir=tmp_path / "missing" / "below").data_dir.name == "below"


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("STREAMREC_TOP_K", "0", "top_k: Input should be greater than or equal to 1"),
        ("STREAMREC_DATA_DIR", "{file}", "data_dir: Value error"),
        ("STREAMREC_TOPIC_DEAD_LETTERS", "interactions", "give each topic its own name"),
        ("STREAMREC_HYBRID_WEIGHTS", "[1, 2]", "hybrid_weights: Input should be a valid dict"),
    ],
)
def test_a_command_with_bad_settings_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    from click.testing import CliRunner

    from streams.cli import main

    (tmp_path / "file").write_text("")
    monkeypatch.setenv(variable, value.format(file=tmp_path / "file"))
    result = CliRunner().invoke(main, ["topics"])
    assert result.exit_code == 1 and not isinstance(result.exception, ValueError)
    [line] = result.output.splitlines()
    assert line.startswith("Error: invalid settings") and named in line
