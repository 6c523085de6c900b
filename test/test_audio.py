"""Audio loading: formats, resampling, downmix and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import tone

from mtbi.data.audio import AudioError, load_audio, probe_audio


def _dominant_freq(samples: np.ndarray, sample_rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(samples.size, 1 / sample_rate)[spectrum.argmax()])


@pytest.mark.parametrize("suffix, sample_rate, channels", [
    ("flac", 16000, 1), ("wav", 44100, 2), ("mp3", 48000, 1), ("ogg", 22050, 1)])
def test_load_resamples_and_downmixes(tmp_path: Path, suffix: str, sample_rate: int, channels: int) -> None:
    path = tmp_path / f"a.{suffix}"
    sf.write(path, tone(2.0, sample_rate, 500, channels), sample_rate)
    samples = load_audio(path)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(samples.size - 32000) <= 1200  # mp3 and ogg frames pad the end a little
    assert abs(_dominant_freq(samples) - 500) < 5
    info = probe_audio(path)
    assert (info.sample_rate, info.channels) == (sample_rate, channels)


def test_downmix_is_channel_mean(tmp_path: Path) -> None:
    left, right = tone(1.0, 16000, 300), tone(1.0, 16000, 700)
    sf.write(tmp_path / "s.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "s.wav"), (left + right) / 2, atol=1e-6)


def test_low_sample_rate_refused_unless_allowed(tmp_path: Path) -> None:
    sf.write(tmp_path / "tel.wav", tone(1.0, 8000), 8000)
    with pytest.raises(AudioError, match="tel.wav: sample rate 8000 Hz below 16000 Hz; resample"):
        load_audio(tmp_path / "tel.wav")
    assert load_audio(tmp_path / "tel.wav", allow_upsample=True).size == 16000


@pytest.mark.parametrize("content, reason", [(b"", "unreadable audio"), (b"RIFF0000garbage", "unreadable audio")])
def test_corrupt_audio(tmp_path: Path, content: bytes, reason: str) -> None:
    (tmp_path / "bad.flac").write_bytes(content)
    with pytest.raises(AudioError) as err:
        load_audio(tmp_path / "bad.flac")
    assert err.value.reason == reason and str(tmp_path / "bad.flac") in str(err.value)


def test_truncated_flac_reads_what_is_there_or_fails_clearly(tmp_path: Path) -> None:
    sf.write(tmp_path / "full.flac", tone(2.0, 16000), 16000)
    data = (tmp_path / "full.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) // 2])
    try:
        samples = load_audio(tmp_path / "cut.flac")
    except AudioError as err:
        assert err.reason == "unreadable audio"
    else:
        assert 0 < samples.size < 32000


def test_empty_and_missing(tmp_path: Path) -> None:
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="audio has no samples"):
        load_audio(tmp_path / "empty.wav")
    with pytest.raises(AudioError, match="audio has no samples"):
        probe_audio(tmp_path / "empty.wav")
    with pytest.raises(AudioError, match="nothere.flac: audio file not found"):
        probe_audio(tmp_path / "nothere.flac")


def test_non_finite_samples(tmp_path: Path) -> None:
    samples = tone(1.0, 16000)
    samples[100] = np.nan
    sf.write(tmp_path / "nan.wav", samples, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite samples"):
        load_audio(tmp_path / "nan.wav")
