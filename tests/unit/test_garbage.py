"""Generated garbage at the schema layer and the media decoders: nothing escapes but a
rejection with a known reason."""

from __future__ import annotations

import base64
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encoders.audio import decode_audio
from encoders.image import decode_image
from encoders.media import MediaError, MediaFetcher, MediaPolicy
from streams.events import Interaction, ItemUpload
from streams.records import Rejected, parse
from tests.media_samples import audio_file, encoded, stripes, tone

REASONS = {"invalid-json", "schema", "key-mismatch"}
MEDIA_REASONS = {
    "media-corrupt",
    "media-oversized",
    "media-unsupported-format",
    "media-mislabelled",
    "media-disallowed-uri",
    "media-unreachable",
}

json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)

GOOD = {
    "event_id": "e1",
    "user_id": "u1",
    "item_id": "i1",
    "kind": "click",
    "ts": "2026-01-01T00:00:00+00:00",
}


def mutated(field: str, value: object) -> bytes:
    return json.dumps({**GOOD, field: value}, allow_nan=True).encode()


def check(model: type, raw: bytes, key: str | None) -> None:
    try:
        parsed = parse(model, raw, key)
    except Rejected as rejected:
        assert rejected.reason in REASONS and rejected.error
    else:
        assert isinstance(parsed, model)


@given(st.binary(max_size=300), st.sampled_from([None, "u1", "x"]))
def test_random_bytes_are_rejected_or_parsed(raw: bytes, key: str | None) -> None:
    check(Interaction, raw, key)
    check(ItemUpload, raw, key)


@given(st.sampled_from([*sorted(GOOD), "value", "extra"]), json_values)
def test_mutated_interactions_are_rejected_or_parsed(field: str, value: object) -> None:
    check(Interaction, mutated(field, value), "u1")


@given(json_values)
def test_random_json_uploads_are_rejected_or_parsed(value: object) -> None:
    check(ItemUpload, json.dumps(value).encode(), None)


PNG = encoded(stripes(64))
WAV = audio_file(tone(440, 0.2))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(PNG) - 1), st.binary(min_size=1, max_size=8))
def test_corrupted_images_only_ever_raise_media_errors(position: int, noise: bytes) -> None:
    damaged = PNG[:position] + noise + PNG[position + len(noise) :]
    try:
        decode_image(damaged, max_pixels=10**7)
    except MediaError as error:
        assert error.reason in MEDIA_REASONS


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(WAV) - 1), st.binary(min_size=1, max_size=8))
def test_corrupted_audio_only_ever_raises_media_errors(position: int, noise: bytes) -> None:
    damaged = WAV[:position] + noise + WAV[position + len(noise) :]
    try:
        decode_audio(damaged, max_seconds=10)
    except MediaError as error:
        assert error.reason in MEDIA_REASONS


@given(st.text(max_size=60), st.text(max_size=60), st.sampled_from(["image", "audio"]))
def test_garbage_references_only_ever_raise_media_errors(
    uri: str, data: str, modality: str
) -> None:
    fetcher = MediaFetcher(MediaPolicy(connect_timeout_s=0.2, read_timeout_s=0.2))
    for source in ({"uri": "ftp://" + uri}, {"uri": "file:///" + uri}, {"data": data}):
        try:
            fetcher.fetch(modality, **source, mime=None)
        except MediaError as error:
            assert error.reason in MEDIA_REASONS
    try:
        fetcher.fetch(modality, data=base64.b64encode(data.encode()).decode())
    except MediaError as error:
        assert error.reason in MEDIA_REASONS
