"""Audio reading for every corpus: any libsndfile format (FLAC, WAV, MP3, OGG), mono, 16 kHz.

Stereo is downmixed by averaging channels. Higher sample rates are resampled with soxr.
Lower rates are refused unless ``allow_upsample``: telephone-band audio upsampled to 16 kHz
has an empty upper band that a 16 kHz model never saw in training, which is worth a decision.

soundfile and soxr are imported where audio is read, not with the module: the models import
``FRAME_SHIFT`` from here on machines without them (tools/gpu_check.sh).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtbi.errors import MtbiError

TARGET_SAMPLE_RATE = 16000
HOP_LENGTH = 160  # samples from one feature frame to the next (Whisper's front end)
FRAME_SHIFT = HOP_LENGTH / TARGET_SAMPLE_RATE  # seconds per stage-2 feature frame (10 ms)


class AudioError(MtbiError):
    """An audio file that cannot be used; the message names the file and what to do."""

    def __init__(self, path: Path, reason: str, advice: str = "") -> None:
        super().__init__(f"{path}: {reason}" + (f"; {advice}" if advice else ""))
        self.reason = reason


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file."""

    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def probe_audio(path: str | Path, target_sr: int = TARGET_SAMPLE_RATE,
                allow_upsample: bool = False) -> AudioInfo:
    """Read the header of ``path`` and check it is usable; raise :class:`AudioError` if not."""
    path = Path(path)
    info = _read(path, lambda sf, p: sf.info(p))
    # MP3 headers report no frame count until decoded; 0 there is not an empty file.
    if info.frames == 0 and info.format != "MP3":
        raise AudioError(path, "audio has no samples")
    _check_rate(path, info.samplerate, target_sr, allow_upsample)
    return AudioInfo(info.samplerate, info.channels, info.frames)


def resampled_length(frames: int, sample_rate: int, target_sr: int = TARGET_SAMPLE_RATE) -> int:
    """Samples at ``target_sr`` of ``frames`` samples at ``sample_rate`` (soxr's output length)."""
    return frames if sample_rate == target_sr else round(frames * target_sr / sample_rate)


def load_audio(path: str | Path, target_sr: int = TARGET_SAMPLE_RATE,
               allow_upsample: bool = False) -> np.ndarray:
    """Read ``path`` as float32 mono samples at ``target_sr``.

    Raises :class:`AudioError` for a missing, corrupt, empty or non-finite file, and for a
    sample rate below ``target_sr`` unless ``allow_upsample``.
    """
    path = Path(path)
    samples, sample_rate = _read(path, lambda sf, p: sf.read(p, dtype="float32", always_2d=True))
    return to_mono_16k(path, samples, sample_rate, allow_upsample, target_sr)


def to_mono_16k(source: str | Path, samples: np.ndarray, sample_rate: int, allow_upsample: bool = False,
                target_sr: int = TARGET_SAMPLE_RATE) -> np.ndarray:
    """Samples ``(N, channels)`` read from ``source`` as checked float32 mono at ``target_sr``
    (channels averaged, resampled with soxr); :class:`AudioError` for no samples, non-finite
    samples, or a rate below ``target_sr`` unless ``allow_upsample``."""
    path = Path(source)
    if samples.shape[0] == 0:
        raise AudioError(path, "audio has no samples")
    _check_rate(path, sample_rate, target_sr, allow_upsample)
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError(path, "NaN or infinite samples")
    if sample_rate != target_sr:
        import soxr

        mono = soxr.resample(mono, sample_rate, target_sr, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def _read(path: Path, reader):
    """Run ``reader(soundfile, path)`` on ``path``, turning its failures into :class:`AudioError`."""
    import soundfile as sf

    if not path.is_file():
        raise AudioError(path, "audio file not found")
    try:
        return reader(sf, str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(path, "unreadable audio", f"{err}; replace or remove the file") from None


def _check_rate(path: Path, sample_rate: int, target_sr: int, allow_upsample: bool) -> None:
    if sample_rate < target_sr and not allow_upsample:
        raise AudioError(path, f"sample rate {sample_rate} Hz below {target_sr} Hz",
                         "resample the corpus or pass --allow_upsample true")
