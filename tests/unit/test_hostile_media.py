"""Hostile media: every header field a decoder or the resampler sizes its work from is
bounded before decoding, only regular files are read, and a malformed URI fails its own
item with a MediaError (issue 16, classes 1 and 5)."""

from __future__ import annotations

import io
import math
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encoders.audio import MAX_RESAMPLE_KERNEL, LogMelAudioEncoder, decode_audio, resample_rate
from encoders.image import decode_image
from encoders.media import DISALLOWED, MediaError, MediaFetcher, MediaPolicy
from tests.media_samples import audio_file, encoded, stripes, tone

WAV = audio_file(tone(440, 0.2))
PNG = encoded(stripes(64))
MEDIA_REASONS = {
    "media-corrupt",
    "media-oversized",
    "media-unsupported-format",
    "media-mislabelled",
    "media-disallowed-uri",
    "media-unreachable",
}


def wav_with_header(rate: int, channels: int, bits: int) -> bytes:
    """The sample WAV with its 'fmt ' fields rewritten: what a hostile producer controls."""
    assert WAV[12:16] == b"fmt "
    block = max(channels * bits // 8, 0) & 0xFFFF
    fields = struct.pack("<HIIHH", channels, rate, (rate * block) & 0xFFFFFFFF, block, bits)
    return WAV[:22] + fields + WAV[36:]


def png_with_size(width: int, height: int) -> bytes:
    """The sample PNG with its IHDR width and height rewritten (and a valid CRC)."""
    assert PNG[12:16] == b"IHDR"
    ihdr = b"IHDR" + struct.pack(">II", width, height) + PNG[24:29]
    return PNG[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + PNG[33:]


@pytest.fixture(scope="module")
def audio_encoder() -> LogMelAudioEncoder:
    return LogMelAudioEncoder(threads=1)


def test_the_issue_s_absurd_sample_rate_is_refused_before_decoding() -> None:
    hostile = wav_with_header(rate=2_000_000_000, channels=1, bits=16)
    assert len(hostile) < 8_000
    with pytest.raises(MediaError) as error:
        decode_audio(hostile, max_seconds=600)
    assert error.value.reason == "media-corrupt" and "sample rate" in error.value.message


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rate=st.one_of(st.integers(0, 2**32 - 1), st.integers(900, 200_000)),
    channels=st.integers(0, 2**16 - 1),
    bits=st.sampled_from([0, 1, 8, 12, 16, 24, 32, 64, 255]),
)
def test_any_audio_header_is_refused_or_decodes_and_encodes_within_bounds(
    audio_encoder: LogMelAudioEncoder, rate: int, channels: int, bits: int
) -> None:
    """Without the bounds, a coprime rate such as 191,999 Hz made the resampler build a
    kernel of 12 GB and a rate of 2e9 Hz one of terabytes."""
    try:
        clip = decode_audio(wav_with_header(rate, channels, bits), max_seconds=10)
    except MediaError as error:
        assert error.reason in MEDIA_REASONS
        return
    assert 1_000 <= clip.sample_rate <= 192_000
    assert clip.seconds <= 10
    vector = audio_encoder.encode([clip])[0]
    assert vector.shape == (audio_encoder.dim,) and np.isfinite(vector).all()


@given(st.integers(1_000, 192_000))
def test_the_resampler_kernel_is_bounded_and_the_rate_barely_moves(rate: int) -> None:
    target = LogMelAudioEncoder.SAMPLE_RATE
    told = resample_rate(rate, target)
    divisor = math.gcd(told, target)
    assert (target // divisor) * (told // divisor + 64) <= MAX_RESAMPLE_KERNEL
    assert abs(told - rate) / rate < 0.013


def float_wav(peak: float) -> bytes:
    """One second of a tone in a 32-bit float WAV, reaching about ``peak``: float WAV
    stores whatever it is given, where integer PCM cannot leave [-1, 1]."""
    buffer = io.BytesIO()
    samples = (peak * np.sin(np.arange(16_000))).astype(np.float32)
    soundfile.write(buffer, samples, 16_000, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


@pytest.mark.parametrize("peak", [1e19, 1e12, 2.0])
def test_float_audio_beyond_full_scale_is_refused_naming_the_fix(peak: float) -> None:
    """Before: 1e19 passed the NaN check and overflowed the log-mel features (dead-lettered
    as an ``internal-error`` of the encoder); 1e10 to 1e17 were stored with features near
    520."""
    with pytest.raises(MediaError) as refused:
        decode_audio(float_wav(peak), max_seconds=10)
    assert refused.value.reason == "media-corrupt"
    assert refused.value.message.startswith(f"audio samples reach {peak:.3g}, beyond the ±1")
    assert "normalise the clip" in refused.value.message


def test_float_audio_within_full_scale_is_decoded_as_it_is() -> None:
    clip = decode_audio(float_wav(0.999), max_seconds=10)
    assert 0.99 < np.abs(clip.samples).max() <= 0.999


def test_audio_with_too_many_channels_is_refused() -> None:
    with pytest.raises(MediaError, match="channels"):
        decode_audio(audio_file(np.zeros((100, 20), dtype=np.float32)), max_seconds=10)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1))
def test_any_image_size_in_a_header_is_refused_or_decoded_within_bounds(
    width: int, height: int
) -> None:
    try:
        image = decode_image(png_with_size(width, height), max_pixels=10**7, max_side=20_000)
    except MediaError as error:
        assert error.reason in MEDIA_REASONS
        return
    assert image.size == (width, height) and width * height <= 10**7


def test_a_long_thin_image_is_refused_by_its_side() -> None:
    with pytest.raises(MediaError, match="each side"):
        decode_image(png_with_size(100_000, 1), max_pixels=10**7, max_side=20_000)


# -- files ------------------------------------------------------------------------------


def fetch_in_thread(fetcher: MediaFetcher, uri: str) -> MediaError | bytes:
    """Fetch in a thread joined with a timeout: a fetch that blocks fails the test instead
    of hanging it."""
    outcome: list[MediaError | bytes] = []

    def run() -> None:
        try:
            outcome.append(fetcher.fetch("image", uri=uri))
        except MediaError as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), f"fetching {uri} blocked"
    return outcome[0]


def test_a_fifo_in_an_allowed_directory_is_refused_without_blocking(tmp_path: Path) -> None:
    """Before: open() on a FIFO with no writer blocked the ingestion thread for good."""
    os.mkfifo(tmp_path / "pipe.png")
    fetcher = MediaFetcher(MediaPolicy(allowed_dirs=(tmp_path,)))
    outcome = fetch_in_thread(fetcher, f"file://{tmp_path}/pipe.png")
    assert isinstance(outcome, MediaError) and outcome.reason == DISALLOWED
    assert "regular file" in outcome.message


def test_a_device_is_never_read(tmp_path: Path) -> None:
    fetcher = MediaFetcher(MediaPolicy(allowed_dirs=(Path("/dev"),)))
    outcome = fetch_in_thread(fetcher, "file:///dev/zero")
    assert isinstance(outcome, MediaError) and outcome.reason == DISALLOWED


def test_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    fetcher = MediaFetcher(MediaPolicy(allowed_dirs=(tmp_path,)))
    outcome = fetch_in_thread(fetcher, f"file://{tmp_path}/sub")
    assert isinstance(outcome, MediaError)


def test_a_regular_file_is_still_read(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    fetcher = MediaFetcher(MediaPolicy(allowed_dirs=(tmp_path,)))
    assert fetch_in_thread(fetcher, f"file://{tmp_path}/a.png") == PNG


@pytest.mark.parametrize("tail", ["a\x00b.png", "a%00b.png", "%ff%fe.png", "\ud800.png", "%"])
def test_a_nul_byte_or_bad_escape_in_a_file_uri_is_a_media_error(tmp_path: Path, tail: str) -> None:
    """Before: a NUL byte raised ValueError inside the policy and lost the whole batch."""
    fetcher = MediaFetcher(MediaPolicy(allowed_dirs=(tmp_path,)))
    outcome = fetch_in_thread(fetcher, f"file://{tmp_path}/{tail}")
    assert isinstance(outcome, MediaError) and outcome.reason in MEDIA_REASONS


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=40), st.sampled_from(["file://{root}/", "file://{root}/../", "http://"]))
def test_any_uri_under_an_allowed_directory_only_ever_raises_media_errors(
    tmp_path_factory: pytest.TempPathFactory, tail: str, prefix: str
) -> None:
    root = tmp_path_factory.getbasetemp()
    fetcher = MediaFetcher(
        MediaPolicy(allowed_dirs=(root,), connect_timeout_s=0.2, read_timeout_s=0.2)
    )
    try:
        fetcher.fetch("image", uri=prefix.format(root=root) + tail)
    except MediaError as error:
        assert error.reason in MEDIA_REASONS
