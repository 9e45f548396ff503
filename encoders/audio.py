"""Audio: decoding with soundfile, log-mel and MFCC with torchaudio, pooled statistics.

``torchaudio.load`` needs torchcodec, which is not usable here, so files are decoded
with soundfile (libsndfile: WAV, FLAC, OGG/Vorbis, MP3) and only torchaudio's resampler
and transforms are used.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import soundfile

from encoders.base import Encoder
from encoders.media import CORRUPT, OVERSIZED, MediaError


@dataclass(frozen=True)
class Clip:
    """Mono float32 samples in [-1, 1] (a lossy decoder's overshoot aside: ``LOSSY_PEAK``)
    and their rate."""

    samples: np.ndarray
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


#: The largest sample accepted from PCM and float audio. Integer PCM decodes within ±1;
#: float WAV writers store what they are given, and rounding a normalised float64 clip to
#: float32 can overshoot 1 by an ulp or so. Beyond this, a float file is not float audio's
#: [-1, 1] at all: 1e19 overflowed the log-mel features, 1e10 to 1e17 made them near 520.
FLOAT_PEAK = 1.0 + 1e-3
#: The largest sample accepted from lossy codecs, whose decoders overshoot a full-scale
#: source (a square wave reaches 1.5, clipped noise 3.4 through MP3 and Vorbis at low
#: bitrates): refusing at ``FLOAT_PEAK`` would refuse loud but genuine songs.
LOSSY_PEAK = 8.0
LOSSY_SUBTYPES = frozenset({"VORBIS", "OPUS", "MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III"})


def decode_audio(
    data: bytes,
    max_seconds: float,
    min_rate: int = 1_000,
    max_rate: int = 192_000,
    max_channels: int = 16,
) -> Clip:
    """A mono clip from encoded bytes; refuses corrupt, empty, over-long and over-loud audio.

    Every header field the decoder and the resampler size their work from (sample rate,
    channels, frames) is checked before any sample is decoded, and samples are decoded in
    blocks and mixed down as they come, so memory follows the mono samples actually present,
    never what a header claims.

    >>> buffer = io.BytesIO()
    >>> soundfile.write(buffer, np.zeros((800, 2)), 8000, format="WAV")
    >>> clip = decode_audio(buffer.getvalue(), max_seconds=1.0)
    >>> clip.samples.shape, clip.sample_rate
    ((800,), 8000)
    """
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as file:
            sample_rate, channels, frames = file.samplerate, file.channels, file.frames
            lossy = file.subtype in LOSSY_SUBTYPES
            if not min_rate <= sample_rate <= max_rate:
                raise MediaError(
                    CORRUPT,
                    f"audio sample rate {sample_rate} Hz is outside {min_rate}..{max_rate} Hz",
                )
            if not 1 <= channels <= max_channels:
                raise MediaError(
                    CORRUPT, f"audio with {channels} channels: at most {max_channels} are decoded"
                )
            seconds = frames / sample_rate
            if seconds > max_seconds:
                raise MediaError(
                    OVERSIZED,
                    f"audio of {seconds:.1f} s exceeds media_max_audio_seconds={max_seconds:g}",
                )
            blocks = [
                block.mean(axis=1)
                for block in file.blocks(blocksize=1 << 16, dtype="float32", always_2d=True)
            ]
    except MediaError:
        raise
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as error:
        raise MediaError(CORRUPT, f"audio cannot be decoded: {error}") from None
    samples = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    if samples.shape[0] == 0:
        raise MediaError(CORRUPT, "audio has no samples (truncated or empty file)")
    if not np.isfinite(samples).all():
        raise MediaError(CORRUPT, "audio contains NaN or infinite samples")
    peak = float(np.abs(samples).max())
    if peak > (LOSSY_PEAK if lossy else FLOAT_PEAK):
        beyond = (
            f"the ±{LOSSY_PEAK:g} a lossy decoder can overshoot to"
            if lossy
            else "the ±1 of float audio"
        )
        raise MediaError(
            CORRUPT, f"audio samples reach {peak:.3g}, beyond {beyond}: normalise the clip to ±1"
        )
    return Clip(samples.astype(np.float32, copy=False), sample_rate)


#: The largest sinc kernel the resampler may build (rows x taps, float32). torchaudio's
#: kernel has (target rate / gcd) rows of about (source rate / gcd) taps: two rates with a
#: small common divisor (44,101 Hz to 16 kHz) would need gigabytes.
MAX_RESAMPLE_KERNEL = 4_000_000


def resample_rate(rate: int, target: int) -> int:
    """The source rate the resampler is told: ``rate`` itself unless its kernel would be too
    large, else the nearest multiple of 25 Hz, or of a coarser step where 25 Hz is not
    enough (every common rate, 11,025 Hz included, is a multiple of 25; the pitch moves by
    under 1.3 % at 1 kHz and far less above).

    >>> resample_rate(44_100, 16_000), resample_rate(44_101, 16_000), resample_rate(8_000, 16_000)
    (44100, 44100, 8000)
    """
    for step in (1, 25, 50, 100, 200, 400, 800, 1600):
        told = max(step, round(rate / step) * step)
        divisor = math.gcd(told, target)
        if (target // divisor) * (told // divisor + 64) <= MAX_RESAMPLE_KERNEL:
            return told
    return target


class LogMelAudioEncoder(Encoder[Clip]):
    """Mean and standard deviation over time of 64 log-mel bands and 20 MFCCs (168-d).

    Clips are resampled to 16 kHz. Long clips are cut into ``window_s`` windows whose
    statistics are averaged, so memory stays bounded and every part of a long track counts
    the same. Deterministic: no randomness anywhere in the pipeline.
    """

    modality = "audio"
    N_MELS = 64
    N_MFCC = 20
    dim = 2 * (N_MELS + N_MFCC)
    SAMPLE_RATE = 16_000
    #: One STFT frame (25 ms); shorter clips are padded with silence.
    MIN_SAMPLES = 400

    def __init__(self, threads: int = 0, window_s: float = 10.0) -> None:
        import torch
        import torchaudio

        if threads:
            torch.set_num_threads(threads)
        self.window = int(window_s * self.SAMPLE_RATE)
        mel_options = {"n_fft": 400, "hop_length": 160, "n_mels": self.N_MELS}
        self.melspec = torchaudio.transforms.MelSpectrogram(self.SAMPLE_RATE, **mel_options)
        # MFCCs are the DCT of the log-mel bands (torchaudio's MFCC with log_mels=True);
        # applying the DCT to the log-mel already computed avoids a second spectrogram.
        self.dct = torchaudio.functional.create_dct(self.N_MFCC, self.N_MELS, norm="ortho")

    def encode(self, batch: Sequence[Clip]) -> np.ndarray:
        if not batch:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        with torch.inference_mode():
            return np.stack([self._encode_one(clip) for clip in batch]).astype(np.float32)

    def _encode_one(self, clip: Clip) -> np.ndarray:
        import torch
        import torchaudio.functional as F

        waveform = torch.from_numpy(np.ascontiguousarray(clip.samples, dtype=np.float32))
        if clip.sample_rate != self.SAMPLE_RATE:
            rate = resample_rate(clip.sample_rate, self.SAMPLE_RATE)
            waveform = F.resample(waveform, rate, self.SAMPLE_RATE)
        if len(waveform) < self.MIN_SAMPLES:  # a click-length clip: pad with silence
            waveform = torch.nn.functional.pad(waveform, (0, self.MIN_SAMPLES - len(waveform)))
        starts = range(0, len(waveform), self.window)
        # A tail shorter than one STFT frame carries nothing; it is dropped.
        windows = [
            waveform[s : s + self.window] for s in starts if len(waveform) - s >= self.MIN_SAMPLES
        ]
        stats = []
        for window in windows:
            log_mel = torch.log(self.melspec(window) + 1e-6)  # (bands, frames)
            mfcc = (log_mel.T @ self.dct).T
            features = torch.cat([log_mel, mfcc])
            stats.append(torch.cat([features.mean(dim=1), features.std(dim=1, correction=0)]))
        return torch.stack(stats).mean(dim=0).numpy()
