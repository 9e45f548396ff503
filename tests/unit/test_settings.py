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
    ],
)
def test_a_setting_no_worker_can_run_with_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, setting: str, value: str
) -> None:
    monkeypatch.setenv(f"STREAMREC_{setting.upper()}", value)
    with pytest.raises(ValueError, match=setting):
        Settings()
