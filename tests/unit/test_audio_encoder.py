"""Log-mel / MFCC audio features and soundfile decoding, on tones and noise made in the test."""

from __future__ import annotations

import numpy as np
import pytest

from encoders.audio import LOSSY_PEAK, Clip, LogMelAudioEncoder, decode_audio
from encoders.media import CORRUPT, OVERSIZED, MediaError
from tests.media_samples import audio_file, noise, tone


@pytest.fixture(scope="module")
def encoder() -> LogMelAudioEncoder:
    return LogMelAudioEncoder(threads=1, window_s=2.0)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_shape_and_determinism(encoder) -> None:
    clips = [Clip(tone(440), 16_000), Clip(noise(), 16_000)]
    vectors = encoder.encode(clips)
    assert vectors.shape == (2, 168) and vectors.dtype == np.float32
    assert np.array_equal(vectors, encoder.encode(clips))
    assert encoder.encode([]).shape == (0, 168)
    assert np.isfinite(encoder.encode([Clip(np.zeros(10, np.float32), 8_000)])).all()


def test_a_tone_is_closer_to_a_near_tone_than_to_noise(encoder) -> None:
    a440, a466, hiss = encoder.encode(
        [Clip(tone(440), 16_000), Clip(tone(466, amplitude=0.4), 16_000), Clip(noise(), 16_000)]
    )
    assert cosine(a440, a466) > cosine(a440, hiss) + 0.2


def test_sample_rate_is_normalised(encoder) -> None:
    at_16k, at_44k, at_8k_noise = encoder.encode(
        [
            Clip(tone(440, rate=16_000), 16_000),
            Clip(tone(440, rate=44_100), 44_100),
            Clip(noise(rate=8_000), 8_000),
        ]
    )
    assert cosine(at_16k, at_44k) > 0.99 > cosine(at_16k, at_8k_noise)


def test_long_clips_are_pooled_over_windows(encoder) -> None:
    # 7 s at 2 s windows: the same tone throughout gives the statistics of one window.
    short, long = encoder.encode([Clip(tone(440, 2.0), 16_000), Clip(tone(440, 7.0), 16_000)])
    assert cosine(short, long) > 0.999
    half = np.concatenate([tone(440, 4.0), noise(4.0)])
    mixed = encoder.encode([Clip(half, 16_000)])[0]
    assert cosine(mixed, short) < 0.999


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "MP3"])
def test_formats_decode_to_mono(fmt: str, encoder) -> None:
    stereo = np.stack([tone(440), tone(440)], axis=1)
    clip = decode_audio(audio_file(stereo, fmt=fmt), max_seconds=5)
    assert clip.samples.ndim == 1 and clip.sample_rate == 16_000
    assert abs(clip.seconds - 1.0) < 0.1
    reference = encoder.encode([Clip(tone(440), 16_000)])[0]
    assert cosine(encoder.encode([clip])[0], reference) > 0.95


def test_truncated_garbage_and_overlong_audio_are_refused() -> None:
    wav = audio_file(tone(440, 2.0))
    for broken in (wav[:30], b"RIFF\x00\x00\x00\x00WAVE" + bytes(50), b"fLaC" + bytes(10)):
        with pytest.raises(MediaError) as refused:
            decode_audio(broken, max_seconds=10)
        assert refused.value.reason == CORRUPT
    with pytest.raises(MediaError) as too_long:
        decode_audio(wav, max_seconds=1.5)
    assert too_long.value.reason == OVERSIZED and "2.0 s" in too_long.value.message


@pytest.mark.parametrize("fmt", ["OGG", "MP3"])
def test_a_lossy_decoder_s_overshoot_of_a_full_scale_clip_is_decoded(fmt: str) -> None:
    """Lossy decoders overshoot a loud master's ±1 (here a full-scale square wave, to about
    1.3): such songs are genuine, and only float and PCM audio are held to ±1."""
    square = np.sign(tone(440, amplitude=1.0)).astype(np.float32)
    clip = decode_audio(audio_file(square, fmt=fmt), max_seconds=5)
    assert 1.0 < np.abs(clip.samples).max() <= LOSSY_PEAK
