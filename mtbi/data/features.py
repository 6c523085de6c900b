"""Log-mel features computed exactly as Whisper's front end, in torch.

Same recipe as ``transformers.WhisperFeatureExtractor``: 25 ms Hann window, 10 ms hop,
power spectrum, Slaney mel filters up to 8 kHz, log10, floor at (max - 8), then (x + 4) / 4.
Whisper itself pads every input to 30 s; ``pad_to_30s=False`` (the default for stage 2)
keeps the utterance's own length, which equals the padded features up to the last two frames
(where the STFT window reaches past the end) and the (max - 8) floor.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from transformers.audio_utils import mel_filter_bank

from mtbi.data.audio import HOP_LENGTH
from mtbi.data.audio import TARGET_SAMPLE_RATE as SAMPLE_RATE
from mtbi.errors import MtbiError

N_FFT = 400
MIN_SAMPLES = N_FFT  # one 25 ms analysis window: shorter audio has no log-mel frame to speak of
WHISPER_INPUT_SAMPLES = 30 * SAMPLE_RATE


@functools.lru_cache(maxsize=4)
def mel_filters(n_mels: int) -> torch.Tensor:
    """Whisper's mel filter bank, shape ``(n_mels, N_FFT // 2 + 1)``."""
    bank = mel_filter_bank(num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=n_mels,
                           min_frequency=0.0, max_frequency=SAMPLE_RATE / 2,
                           sampling_rate=SAMPLE_RATE, norm="slaney", mel_scale="slaney")
    return torch.from_numpy(np.asarray(bank, dtype=np.float32)).T.contiguous()


def speech_log_mel(samples: np.ndarray, n_mels: int, source: str) -> torch.Tensor:
    """The log-mel features ``(T, n_mels)`` of audio to answer about (16 kHz mono ``samples``), as
    stage 2 computes them; audio too short for a frame is a one-line error naming ``source``."""
    if len(samples) < MIN_SAMPLES:
        raise MtbiError(f"{source}: {len(samples)} samples at {SAMPLE_RATE} Hz is too short to answer about "
                        f"(at least {MIN_SAMPLES}, {1000 * MIN_SAMPLES // SAMPLE_RATE} ms)")
    return log_mel(samples, n_mels)


def log_mel(samples: np.ndarray | torch.Tensor, n_mels: int = 80, pad_to_30s: bool = False) -> torch.Tensor:
    """Whisper log-mel features of 16 kHz mono ``samples`` (shape ``(T,)``).

    Returns a float32 tensor of shape ``(T // 160, n_mels)`` (``(3000, n_mels)`` when
    ``pad_to_30s``), frames first as Kaldi ark files store them.
    """
    wave = torch.as_tensor(samples, dtype=torch.float32)
    if pad_to_30s:
        wave = torch.nn.functional.pad(wave[:WHISPER_INPUT_SAMPLES],
                                       (0, max(0, WHISPER_INPUT_SAMPLES - wave.shape[0])))
    stft = torch.stft(wave, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = mel_filters(n_mels) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).T.contiguous()
