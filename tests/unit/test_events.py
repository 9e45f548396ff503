"""Event schemas: what is accepted, and errors that name the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

import pytest
from pydantic import ValidationError

from streams import events
from streams.events import Interaction, ItemUpload, MediaRef, describe_validation_error

NOW = datetime.now(UTC)


def interaction(**overrides) -> dict:
    return {
        "event_id": "e1",
        "user_id": "u1",
        "item_id": "i1",
        "kind": "click",
        "ts": NOW.isoformat(),
        **overrides,
    }


def error_for(model, data) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return describe_validation_error(info.value)


def test_valid_interaction_round_trips() -> None:
    event = Interaction.model_validate(interaction(kind="rating", value=4))
    assert Interaction.model_validate_json(event.to_bytes()) == event


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"kind": "teleport"}, "kind"),
        ({"user_id": ""}, "user_id"),
        ({"value": float("nan")}, "value"),
        ({"ts": (NOW + timedelta(days=3)).isoformat()}, "ts"),
        ({"ts": "1960-01-01T00:00:00Z"}, "ts"),
        ({"colour": "red"}, "colour"),
        ({"event_id": 5}, "event_id"),
    ],
)
def test_invalid_interactions_name_the_field(overrides: dict, field: str) -> None:
    assert error_for(Interaction, interaction(**overrides)).startswith(field)


def test_an_interaction_after_2100_is_refused_whatever_the_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Interactions were held to a day past the clock, the item changes they make to
    2100: within a day of it, every click was dead-lettered `invalid-changes`."""

    class LastDayOf2099(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> datetime:
            return datetime(2099, 12, 31, 12, tzinfo=UTC)

    monkeypatch.setattr(events, "datetime", LastDayOf2099)
    assert error_for(Interaction, interaction(ts="2100-01-01T06:00:00Z")).startswith("ts")
    Interaction.model_validate(interaction(ts="2099-12-31T23:00:00Z"))


def test_rating_needs_a_value() -> None:
    assert "value" in error_for(Interaction, interaction(kind="rating"))


def test_items_need_something_to_encode() -> None:
    assert "empty item" in error_for(ItemUpload, {"item_id": "x"})
    assert ItemUpload.model_validate({"item_id": "x", "tags": ["jazz"]}).tags == ["jazz"]


def test_media_reference_is_uri_or_inline_data_with_mime() -> None:
    assert MediaRef(uri="file:///tmp/a.png").uri
    assert "exactly one" in error_for(MediaRef, {})
    assert "mime" in error_for(MediaRef, {"data": "aGVsbG8="})
