"""Kaldi/ESPnet audio entries (mtbi/data/wav_scp.py) and the raw feature type (stage 2 without a
dump, features computed when read: mtbi/data/speech_features.py)."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
from conftest import tone

from mtbi.data.audio import AudioError
from mtbi.data.corpus import check_audio_headers, write_listing
from mtbi.data.datadir import read_table, validate_data_dir, write_table
from mtbi.data.feature_dump import extract_shard, merge_shards
from mtbi.data.features import log_mel
from mtbi.data.librispeech import read_librispeech
from mtbi.data.speech_features import SpeechFeatures
from mtbi.data.wav_scp import AudioTable, entry_kind
from mtbi.errors import MtbiError

RATE = 16000


def _recording(seconds: float, freq: float) -> np.ndarray:
    return tone(seconds, RATE, freq)


def _int16(samples: np.ndarray) -> np.ndarray:
    """Samples as 16-bit audio stores them (every reader must give back the same floats)."""
    return (np.round(samples * 32767).astype(np.int16).astype(np.float32)) / 32768


def _espnet_dir(root: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A data dir with segments over three recordings read three ways (a FLAC path, a ``cat ... |``
    pipe of a WAV, an ark offset), and the samples each utterance must have."""
    audio = root / "audio"
    audio.mkdir(parents=True)
    recordings = {"recA": _int16(_recording(3.0, 300)), "recB": _int16(_recording(2.5, 500)),
                  "recC": _int16(_recording(2.0, 700))}
    sf.write(audio / "recA.flac", recordings["recA"], RATE, subtype="PCM_16")
    sf.write(audio / "recB.wav", recordings["recB"], RATE, subtype="PCM_16")
    with kaldiio.WriteHelper(f"ark,scp:{audio / 'recC.ark'},{audio / 'recC.scp'}") as writer:
        writer("recC", (RATE, (recordings["recC"] * 32768).astype(np.int16)))
    wav_scp = {"recA": str(audio / "recA.flac"), "recB": f"cat {shlex.quote(str(audio / 'recB.wav'))} |",
               "recC": read_table(audio / "recC.scp")["recC"]}
    # (speaker, recording, start, end): a segment starting at 0, one ending 0.2 s past its
    # recording (cut there, as Kaldi does), and two segments of one pipe (decoded once).
    segments = {"spk1-a1": ("spk1", "recA", 0.0, 1.25), "spk1-a2": ("spk1", "recA", 1.5, 3.2),
                "spk2-b1": ("spk2", "recB", 0.1, 1.0), "spk2-b2": ("spk2", "recB", 1.0, 2.5),
                "spk2-c1": ("spk2", "recC", 0.5, 1.5)}
    data = root / "data"
    write_table(data / "wav.scp", wav_scp)
    write_table(data / "segments", {u: f"{rec} {start:.3f} {end:.3f}" for u, (_, rec, start, end) in segments.items()})
    write_table(data / "text", {u: f"words of {u}" for u in segments})
    write_table(data / "utt2spk", {u: spk for u, (spk, *_) in segments.items()})
    write_table(data / "spk2utt", {"spk1": "spk1-a1 spk1-a2", "spk2": "spk2-b1 spk2-b2 spk2-c1"})
    expected = {u: recordings[rec][round(start * RATE):min(round(end * RATE), recordings[rec].size)]
                for u, (_, rec, start, end) in segments.items()}
    return data, expected


def test_entry_kinds() -> None:
    assert entry_kind("/data/a.flac") == "file"
    assert entry_kind("flac -c -d -s /data/a.flac |") == "pipe"
    assert entry_kind("/data/raw.ark:1234") == "ark"


def test_segments_of_files_pipes_and_arks_read_their_samples(tmp_path: Path) -> None:
    data, expected = _espnet_dir(tmp_path)
    assert not validate_data_dir(data)
    table = AudioTable(data)
    assert table.utts == sorted(expected)
    for utt, samples in expected.items():
        got = table.load(utt)
        assert got.dtype == np.float32 and got.shape == samples.shape, utt
        np.testing.assert_array_equal(got, samples)
        assert table.num_samples(utt) == samples.size


def test_whole_recordings_without_segments(tmp_path: Path) -> None:
    data, _ = _espnet_dir(tmp_path)
    (data / "segments").unlink()
    write_table(data / "text", {k: "hello" for k in ("recA", "recB", "recC")})
    table = AudioTable(data)
    assert table.utts == ["recA", "recB", "recC"]
    assert [table.num_samples(u) for u in table.utts] == [3 * RATE, int(2.5 * RATE), 2 * RATE]
    np.testing.assert_array_equal(table.load("recB"), _int16(_recording(2.5, 500)))


def test_bad_entries_are_clear_errors(tmp_path: Path) -> None:
    data, _ = _espnet_dir(tmp_path)
    segments = read_table(data / "segments")
    segments["spk1-a3"] = "recA 2.0 4.0"  # recA lasts 3 s: 1 s past its end
    write_table(data / "segments", segments)
    with pytest.raises(AudioError, match=r"segment past the end of its recording.*'spk1-a3' \(2.00-4.00 s\) of "
                                         r"'recA', which lasts 3.00 s; fix .*segments"):
        AudioTable(data).load("spk1-a3")
    wav_scp = read_table(data / "wav.scp")
    wav_scp["recB"] = f"{shlex.quote(sys.executable)} -c 'import sys; sys.exit(3)' |"
    write_table(data / "wav.scp", wav_scp)
    with pytest.raises(AudioError, match="command failed with exit status 3; its error output is above"):
        AudioTable(data).load("spk2-b1")
    wav_scp["recB"] = "echo not audio |"
    write_table(data / "wav.scp", wav_scp)
    with pytest.raises(AudioError, match="command output is not audio"):
        AudioTable(data).load("spk2-b1")
    wav_scp["recB"] = "no-such-decoder -d x.flac |"
    write_table(data / "wav.scp", wav_scp)
    with pytest.raises(MtbiError, match="'no-such-decoder -d x.flac': command not found .*install it"):
        AudioTable(data).load("spk2-b1")
    segments["spk2-x1"] = "recX 0 1"
    write_table(data / "segments", segments)
    with pytest.raises(MtbiError, match=r"segments: recording 'recX' \(and 0 more\) is not in .*wav.scp"):
        AudioTable(data)


def _stage2(data: Path, out: Path, feats_type: str, nj: int = 2) -> None:
    for shard in range(1, nj + 1):
        extract_shard(data, out, shard, nj, feats_type=feats_type)
    merge_shards(data, out, nj)


def test_raw_features_equal_the_dumped_ones(tmp_path: Path) -> None:
    data, expected = _espnet_dir(tmp_path)
    # A 22.05 kHz file is resampled when read: its length must be known without decoding it.
    sf.write(tmp_path / "audio" / "recD.flac", tone(1.3, 22050, 400), 22050)
    write_table(data / "wav.scp", {**read_table(data / "wav.scp"), "recD": str(tmp_path / "audio" / "recD.flac"),
                                   "recE": "false |"})
    write_table(data / "segments", {**read_table(data / "segments"), "spk2-d1": "recD 0 1.3",
                                    "spk2-e1": "recE 0 1"})
    write_table(data / "text", {**read_table(data / "text"), "spk2-d1": "d", "spk2-e1": "e"})
    write_table(data / "utt2spk", {**read_table(data / "utt2spk"), "spk2-d1": "spk2", "spk2-e1": "spk2"})
    write_table(data / "spk2utt", {"spk1": "spk1-a1 spk1-a2", "spk2": "spk2-b1 spk2-b2 spk2-c1 spk2-d1 spk2-e1"})
    _stage2(data, tmp_path / "raw", "raw")
    _stage2(data, tmp_path / "logmel", "logmel")
    raw, dumped = SpeechFeatures(tmp_path / "raw"), SpeechFeatures(tmp_path / "logmel")
    assert (raw.feats_type, raw.n_mels, dumped.feats_type) == ("raw", 80, "logmel")
    assert not (tmp_path / "raw" / "feats.scp").exists()
    assert raw.utts == dumped.utts == sorted([*expected, "spk2-d1"])  # the failing pipe is skipped
    assert (tmp_path / "raw" / "skipped.txt").read_text().startswith("spk2-e1\tcommand failed with exit status 1")
    assert raw.num_frames == dumped.num_frames
    samples = read_table(tmp_path / "raw" / "utt2num_samples")
    assert {u: int(n) for u, n in samples.items() if u in expected} == {u: s.size for u, s in expected.items()}
    for utt in raw.utts:
        computed, stored = raw.load(utt), dumped.load(utt)
        assert computed.shape == stored.shape == (raw.num_frames[utt], 80)
        np.testing.assert_allclose(computed, stored, atol=1e-6, rtol=0)
    np.testing.assert_allclose(raw.load("spk1-a2"), log_mel(expected["spk1-a2"]).numpy(), atol=1e-6, rtol=0)
    # The stage-2 dir keeps the data dir with its segments, less the skipped utterance and recording.
    assert "spk2-e1" not in read_table(tmp_path / "raw" / "segments")
    assert "recE" not in read_table(tmp_path / "raw" / "wav.scp")
    assert not validate_data_dir(tmp_path / "raw")
    # Batches from DataLoader workers equal reading one at a time.
    (utts, padded, lens), = list(raw.batches([raw.utts[:3]], num_workers=1))
    for k, utt in enumerate(utts):
        np.testing.assert_array_equal(padded[k, :lens[k]].numpy(), raw.load(utt))


def test_raw_audio_that_breaks_after_stage_2_names_the_utterance(tmp_path: Path) -> None:
    data, _ = _espnet_dir(tmp_path)
    _stage2(data, tmp_path / "raw", "raw", nj=1)
    (tmp_path / "audio" / "recA.flac").write_bytes(b"broken")
    with pytest.raises(MtbiError, match="audio of 'spk1-a1' in .*raw cannot be read .*re-run stage 2, or use "
                                        "--feats_type logmel"):
        SpeechFeatures(tmp_path / "raw").load("spk1-a1")


def test_stage_1_lengths_spare_stage_2_raw_a_second_read(tmp_path: Path, librispeech_root: Path) -> None:
    listing = check_audio_headers(read_librispeech(librispeech_root, ["dev-clean"]))
    write_listing(listing, tmp_path / "data")
    lengths = read_table(tmp_path / "data" / "utt2num_samples")
    wav_scp = read_table(tmp_path / "data" / "wav.scp")
    assert {u: int(n) for u, n in lengths.items()} == {u: sf.info(wav_scp[u]).frames for u in wav_scp}
    shutil.copytree(tmp_path / "data", tmp_path / "plain")
    (tmp_path / "plain" / "utt2num_samples").unlink()
    _stage2(tmp_path / "plain", tmp_path / "measured", "raw", nj=1)  # lengths from the headers
    for path in wav_scp.values():  # stage 2 raw takes the lengths stage 1 read: it opens no file
        Path(path).unlink()
    _stage2(tmp_path / "data", tmp_path / "raw", "raw", nj=1)
    assert read_table(tmp_path / "raw" / "utt2num_samples") == lengths
    assert read_table(tmp_path / "raw" / "utt2num_frames") == read_table(tmp_path / "measured" / "utt2num_frames")
