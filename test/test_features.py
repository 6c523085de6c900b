"""Whisper log-mel parity with transformers, and the sharded, resumable feature dump."""

from __future__ import annotations

from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
from conftest import tone
from transformers import WhisperFeatureExtractor

from mtbi.data.datadir import Utterance, read_table, write_data_dir
from mtbi.data.feature_dump import extract_shard, merge_shards
from mtbi.data.features import log_mel
from mtbi.errors import MtbiError


def _speechlike(seconds: float) -> np.ndarray:
    """Amplitude-modulated harmonics with pauses: a wide, changing spectrum like speech."""
    t = np.arange(int(seconds * 16000)) / 16000
    voiced = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 20))
    envelope = np.clip(np.sin(2 * np.pi * 3 * t), 0, None)
    noise = 0.02 * np.random.default_rng(1).standard_normal(t.size)
    return (0.2 * voiced * envelope + noise).astype(np.float32)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_parity_with_whisper_feature_extractor(n_mels: int) -> None:
    audio = _speechlike(4.3)
    reference = WhisperFeatureExtractor(feature_size=n_mels)(
        audio, sampling_rate=16000, return_tensors="np").input_features[0].T
    padded = log_mel(audio, n_mels, pad_to_30s=True).numpy()
    assert padded.shape == reference.shape == (3000, n_mels)
    assert np.abs(padded - reference).max() < 1e-3
    trimmed = log_mel(audio, n_mels).numpy()
    assert trimmed.shape == (audio.size // 160, n_mels)
    # Only the frames whose window reaches past the end of the audio differ.
    assert np.abs(trimmed[:-2] - reference[: trimmed.shape[0] - 2]).max() < 1e-3


def _data_dir(tmp_path: Path, n: int, corrupt: set[int] = frozenset()) -> Path:
    utts = []
    for i in range(n):
        audio = tmp_path / "audio" / f"u{i}.flac"
        audio.parent.mkdir(exist_ok=True)
        if i in corrupt:
            audio.write_bytes(b"broken")
        else:
            sf.write(audio, tone(0.5 + 0.1 * i, 16000, 200 + 20 * i), 16000)
        utts.append(Utterance(f"spk{i % 2}-u{i:02d}", f"spk{i % 2}", str(audio), f"words {i}"))
    write_data_dir(tmp_path / "data", utts)
    return tmp_path / "data"


def _dump(data_dir: Path, out: Path, nj: int) -> None:
    for shard in range(1, nj + 1):
        extract_shard(data_dir, out, shard, nj)
    merge_shards(data_dir, out, nj)


def test_sharded_dump_equals_single_job_and_skips_bad_audio(tmp_path: Path) -> None:
    data_dir = _data_dir(tmp_path, 7, corrupt={3})
    _dump(data_dir, tmp_path / "one", 1)
    _dump(data_dir, tmp_path / "three", 3)
    one = dict(kaldiio.load_scp(str(tmp_path / "one" / "feats.scp")))
    three = dict(kaldiio.load_scp(str(tmp_path / "three" / "feats.scp")))
    assert sorted(one) == sorted(three) == sorted(f"spk{i % 2}-u{i:02d}" for i in range(7) if i != 3)
    for utt in one:
        np.testing.assert_array_equal(one[utt], three[utt])
        assert one[utt].shape[1] == 80
    frames = read_table(tmp_path / "three" / "utt2num_frames")
    assert frames["spk0-u00"] == "50" and frames["spk0-u02"] == "70"
    assert (tmp_path / "three" / "skipped.txt").read_text().startswith("spk1-u03\tunreadable audio\t")
    assert sorted(read_table(tmp_path / "three" / "text")) == sorted(one)  # data dir less the skipped
    audio = sf.read(read_table(data_dir / "wav.scp")["spk0-u04"])[0].astype(np.float32)
    np.testing.assert_allclose(one["spk0-u04"], log_mel(audio).numpy(), atol=1e-6)


def test_done_shards_are_not_recomputed_and_merge_needs_all(tmp_path: Path) -> None:
    data_dir = _data_dir(tmp_path, 4)
    out = tmp_path / "feats"
    extract_shard(data_dir, out, 1, 2)
    with pytest.raises(MtbiError, match=r"feature shard 2/2 is not finished; re-run stage 2"):
        merge_shards(data_dir, out, 2)
    ark = out / "shards" / "feats.1.ark"
    stamp = ark.stat().st_mtime_ns
    extract_shard(data_dir, out, 1, 2)
    assert ark.stat().st_mtime_ns == stamp
    extract_shard(data_dir, out, 2, 2)
    merge_shards(data_dir, out, 2)
    assert len(read_table(out / "feats.scp")) == 4
    # A newer data dir makes the shards stale.
    write_data_dir(data_dir, [Utterance("spk0-u00", "spk0", read_table(data_dir / "wav.scp")["spk0-u00"], "x")])
    extract_shard(data_dir, out, 1, 2)
    assert ark.stat().st_mtime_ns != stamp


def test_changing_the_job_count_redoes_the_shards(tmp_path: Path) -> None:
    data_dir = _data_dir(tmp_path, 6)
    out = tmp_path / "feats"
    extract_shard(data_dir, out, 1, 2)
    extract_shard(data_dir, out, 2, 2)
    merge_shards(data_dir, out, 2)
    (out / ".done").unlink()  # as after a kill during the merge
    extract_shard(data_dir, out, 1, 1)
    merge_shards(data_dir, out, 1)
    assert len(read_table(out / "feats.scp")) == 6
