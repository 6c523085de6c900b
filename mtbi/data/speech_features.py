"""The log-mel features of a stage-2 dir, dumped (``--feats_type logmel``) or computed on the fly (``raw``),
or of audio files named per utterance (an external benchmark's items).

Both kinds of dir hold the data dir (less skipped utterances), ``utt2num_frames`` (10 ms frames)
and ``feats.yaml`` (``feats_type``, ``n_mels``). A ``logmel`` dir adds ``feats.scp`` and its arks;
a ``raw`` dir keeps the audio where ``wav.scp`` (and ``segments``) point and adds
``utt2num_samples`` (16 kHz samples), and its features are computed when read, equal to the
dumped ones. Readers of features take a :class:`FeatureSource` and need not know which.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import yaml

from mtbi.data.audio import HOP_LENGTH, AudioError, load_audio, probe_audio, resampled_length
from mtbi.data.datadir import read_table
from mtbi.data.feature_dump import FEATS_INFO, FEATS_TYPES, load_features, pad_features
from mtbi.data.features import log_mel, speech_log_mel
from mtbi.data.wav_scp import AudioTable
from mtbi.errors import MtbiError


class FeatureSource(abc.ABC):
    """Log-mel features per utterance: ``utts`` are those with features (sorted), ``num_frames``
    their lengths in 10 ms frames."""

    utts: list[str]
    num_frames: dict[str, int]
    _utt_set: set[str]

    def __contains__(self, utt: str) -> bool:
        return utt in self._utt_set

    @abc.abstractmethod
    def load(self, utt: str) -> np.ndarray:
        """The float32 features ``(T, n_mels)`` of ``utt``; unusable input is a one-line error."""

    def batch(self, utts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The features of ``utts`` as a zero-padded float32 batch ``(B, T, n_mels)`` and lengths ``(B,)``."""
        return pad_features([self.load(u) for u in utts])

    def batches(self, utt_batches: Iterable[Sequence[str]], num_workers: int | None = None
                ) -> Iterator[tuple[list[str], torch.Tensor, torch.Tensor]]:
        """``(utts, padded, lens)`` for each list of ``utt_batches``, in order, read (and where
        computed from audio, computed) by ``num_workers`` DataLoader workers ahead of the consumer
        (None: one where features come from audio, none for dumped features)."""
        batches = [list(b) for b in utt_batches]
        if num_workers is None:
            num_workers = 1 if self.computed else 0
        loader = torch.utils.data.DataLoader(
            _Batches(self, batches), batch_size=None, num_workers=num_workers,
            prefetch_factor=4 if num_workers else None)
        for utts, (padded, lens) in zip(batches, loader):
            yield utts, padded, lens

    @property
    def computed(self) -> bool:
        """Whether features are computed from audio when read (not read from arks)."""
        return True


class SpeechFeatures(FeatureSource):
    """The features of the utterances of a stage-2 dir (``dump/<feats>/<set>``)."""

    def __init__(self, feats_dir: str | Path, allow_upsample: bool = True) -> None:
        self.dir = Path(feats_dir)
        if not self.dir.is_dir():
            raise MtbiError(f"{self.dir} is missing; it is made by stage 2")
        info_file = self.dir / FEATS_INFO
        if info_file.is_file():
            info = yaml.safe_load(info_file.read_text(encoding="utf-8")) or {}
            self.feats_type, self.n_mels = info.get("feats_type"), int(info.get("n_mels", 0))
            if self.feats_type not in FEATS_TYPES or self.n_mels <= 0:
                raise MtbiError(f"{info_file}: expected feats_type (raw or logmel) and n_mels; re-run stage 2")
        else:  # a logmel dir of an earlier version
            self.feats_type, self.n_mels = "logmel", 0
        needed = ("feats.scp", "utt2num_frames") if self.feats_type == "logmel" else ("wav.scp", "utt2num_frames")
        for name in needed:
            if not (self.dir / name).is_file():
                raise MtbiError(f"{self.dir / name} is missing; it is made by stage 2")
        self.num_frames = {u: int(n) for u, n in read_table(self.dir / "utt2num_frames").items()}
        if self.feats_type == "logmel":
            self.feats_scp = read_table(self.dir / "feats.scp")
            self.utts = sorted(set(self.feats_scp) & set(self.num_frames))
        else:
            # Stage 2 checked the rates; upsampling is allowed here so that a dir made with
            # --allow_upsample true reads back.
            self.audio = AudioTable(self.dir, allow_upsample=allow_upsample)
            self.utts = sorted(set(self.audio.utts) & set(self.num_frames))
        self._utt_set = set(self.utts)

    def load(self, utt: str) -> np.ndarray:
        """The float32 features ``(T, n_mels)`` of ``utt``; unusable audio or arks are a one-line error."""
        if self.feats_type == "logmel":
            return load_features(utt, self.feats_scp[utt])
        try:
            samples = self.audio.load(utt)
        except AudioError as err:
            raise MtbiError(f"audio of '{utt}' in {self.dir} cannot be read ({err}); remove it from "
                            f"{self.dir.name}'s data dir and re-run stage 2, or use --feats_type logmel") from None
        return log_mel(samples, self.n_mels).numpy()

    @property
    def computed(self) -> bool:
        return self.feats_type == "raw"


class AudioFileFeatures(FeatureSource):
    """The features of audio files, one per utterance (``{utt: path}``), computed when read with
    ``n_mels`` bins as a raw stage-2 dir computes them; any sample rate is resampled to 16 kHz."""

    def __init__(self, paths: dict[str, str], n_mels: int) -> None:
        self.paths, self.n_mels = paths, n_mels
        self.utts = sorted(paths)
        self._utt_set = set(self.utts)
        self.num_frames = {}
        for utt in self.utts:  # headers only; MP3 headers give no length (0: sorted last)
            info = probe_audio(paths[utt], allow_upsample=True)
            self.num_frames[utt] = resampled_length(info.frames, info.sample_rate) // HOP_LENGTH

    def load(self, utt: str) -> np.ndarray:
        path = self.paths[utt]
        try:
            return audio_file_log_mel(path, self.n_mels, f"item '{utt}' ({path})").numpy()
        except AudioError as err:  # a plain MtbiError: it crosses from a DataLoader worker as one line
            raise MtbiError(f"item '{utt}': {err}; fix or remove the item") from None


def audio_file_log_mel(path: str | Path, n_mels: int, source: str) -> torch.Tensor:
    """The log-mel features ``(T, n_mels)`` of an audio file to answer about, at any sample rate
    and channel count (averaged, resampled to 16 kHz), as a raw stage-2 dir computes them;
    unreadable or too short audio is a one-line error (naming ``source``)."""
    return speech_log_mel(load_audio(path, allow_upsample=True), n_mels, source)


class _Batches(torch.utils.data.Dataset):
    def __init__(self, features: FeatureSource, batches: list[list[str]]) -> None:
        self.features, self.utt_batches = features, batches

    def __len__(self) -> int:
        return len(self.utt_batches)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features.batch(self.utt_batches[index])
