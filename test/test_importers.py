"""Importing data dirs made elsewhere (mtbi/data/importers.py, python -m mtbi.bin.import_data_dir):
Kaldi/ESPnet data dirs and lhotse manifests, checked by reading every imported utterance back."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO_ROOT, tone

from mtbi.bin.import_data_dir import build_parser, main
from mtbi.cli import run_main
from mtbi.data.datadir import read_table, validate_data_dir, write_table
from mtbi.data.importers import import_kaldi_dir, import_lhotse
from mtbi.data.wav_scp import AudioTable
from mtbi.errors import MtbiError

RATE = 16000


def _write_audio(audio: Path) -> dict[str, np.ndarray]:
    """recA.flac (3 s) and recB.wav (2.5 s), 16-bit at 16 kHz; the samples as read back."""
    audio.mkdir(parents=True, exist_ok=True)
    recordings = {}
    for name, seconds, freq in (("recA.flac", 3.0, 300), ("recB.wav", 2.5, 500)):
        samples = np.round(tone(seconds, RATE, freq) * 32767).astype(np.int16).astype(np.float32) / 32768
        sf.write(audio / name, samples, RATE, subtype="PCM_16")
        recordings[name.split(".")[0]] = samples
    return recordings


def _span(samples: np.ndarray, start: float, end: float) -> np.ndarray:
    return samples[round(start * RATE):round(end * RATE)]


def _kaldi_dir(root: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A data dir as other toolkits leave it: segments over a FLAC path and a ``cat x.wav |`` pipe,
    utterance ids not prefixed by their speaker, a recording no segment uses, an utterance without
    a transcript, unsorted lines, utt2dur and reco2file_and_channel. Returns it and the samples each
    imported utterance must have."""
    recordings = _write_audio(root / "audio")
    src = root / "src"
    src.mkdir()
    (src / "wav.scp").write_text(f"recB cat {shlex.quote(str(root / 'audio' / 'recB.wav'))} |\n"
                                 f"recA {root / 'audio' / 'recA.flac'}\nrecZ {root / 'audio' / 'unused.flac'}\n")
    segments = {"a1": ("spkA", "recA", 0.0, 1.25), "a2": ("spkA", "recA", 1.5, 3.0),
                "b1": ("spkB", "recB", 0.1, 1.0), "spkB-b2": ("spkB", "recB", 1.0, 2.5),
                "c1": ("spkC", "recB", 0.5, 1.5)}
    (src / "segments").write_text("".join(f"{u} {rec} {start} {end}\n" for u, (_, rec, start, end)
                                          in reversed(segments.items())))
    (src / "utt2spk").write_text("".join(f"{u} {spk}\n" for u, (spk, *_) in segments.items()))
    (src / "text").write_text("".join(f"{u} words of {u}\n" for u in segments if u != "c1"))
    (src / "utt2dur").write_text("".join(f"{u} {end - start}\n" for u, (_, _, start, end) in segments.items()))
    (src / "reco2file_and_channel").write_text("recA recA A\nrecB recB A\n")
    expected = {("spkB-b2" if u == "spkB-b2" else f"{spk}-{u}"): _span(recordings[rec], start, end)
                for u, (spk, rec, start, end) in segments.items() if u != "c1"}
    return src, expected


def _check_audio(data: Path, expected: dict[str, np.ndarray]) -> None:
    """The data dir validates, and every utterance reads back with its expected samples."""
    assert validate_data_dir(data) == []
    table = AudioTable(data)
    assert table.utts == sorted(expected)
    for utt, samples in expected.items():
        got = table.load(utt)
        assert got.shape == samples.shape, utt
        np.testing.assert_array_equal(got, samples)


def _import(*args: str) -> None:
    run_main(build_parser, main, list(args))


def test_kaldi_dir_with_segments_and_pipes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src, expected = _kaldi_dir(tmp_path)
    out = tmp_path / "data" / "train"
    _import("--src", str(src), "--out_dir", str(out))
    log = capsys.readouterr().err
    _check_audio(out, expected)
    renamed = {"spkA-a1": "a1", "spkA-a2": "a2", "spkB-b1": "b1"}
    assert read_table(out / "utt_map") == renamed
    assert "3 of 4 utterance ids are not prefixed by their speaker id" in log
    assert "text: 1 utterances of the other files are missing here (first: 'c1')" in log
    assert "not imported: reco2file_and_channel, utt2dur" in log
    assert "unused.flac" not in (out / "wav.scp").read_text() and "1 recordings of wav.scp have no kept segment" in log
    # The same segments, renamed consistently in every file; spk2utt written from utt2spk.
    assert read_table(out / "segments") == {"spkA-a1": "recA 0.0 1.25", "spkA-a2": "recA 1.5 3.0",
                                            "spkB-b1": "recB 0.1 1.0", "spkB-b2": "recB 1.0 2.5"}
    assert read_table(out / "text")["spkA-a2"] == "words of a2"
    assert read_table(out / "utt2spk") == {u: u[:4] for u in expected}
    assert read_table(out / "spk2utt") == {"spkA": "spkA-a1 spkA-a2", "spkB": "spkB-b1 spkB-b2"}
    assert not (out / "utt2dur").exists()
    _import("--src", str(src), "--out_dir", str(out))
    assert "already imported" in capsys.readouterr().err


def test_kaldi_dir_without_segments(tmp_path: Path) -> None:
    recordings = _write_audio(tmp_path / "audio")
    src = tmp_path / "src"
    write_table(src / "wav.scp", {"u1": str(tmp_path / "audio" / "recA.flac"),
                                  "u2": f"cat {shlex.quote(str(tmp_path / 'audio' / 'recB.wav'))} |"})
    write_table(src / "text", {"u1": "one", "u2": "two"})
    write_table(src / "utt2spk", {"u1": "s1", "u2": "s2"})
    out = tmp_path / "out"
    out.mkdir()
    (out / "segments").write_text("stale 1 2\n")  # left by an earlier import: it would no longer match
    assert import_kaldi_dir(src, out) == 2
    assert read_table(out / "wav.scp") == {"s1-u1": str(tmp_path / "audio" / "recA.flac"),
                                           "s2-u2": f"cat {shlex.quote(str(tmp_path / 'audio' / 'recB.wav'))} |"}
    _check_audio(out, {"s1-u1": recordings["recA"], "s2-u2": recordings["recB"]})


def _broken(src: Path, name: str, content: str | None) -> None:
    if content is None:
        (src / name).unlink()
    else:
        (src / name).write_text(content)


@pytest.mark.parametrize("name, content, message", [
    ("text", None, r"src/text: required file missing"),
    ("segments", "a1 recA 0 1\nb1 recX 0 1\n", r"src/segments:2: recording 'recX' of segment 'b1' is not in .*src/wav.scp"),
    ("utt2spk", "a1 spkA\na/2 spkA\n", r"src/utt2spk:2: id 'a/2' has characters outside"),
    ("utt2spk", "a1 spk A\n", r"src/utt2spk:1: id 'spk A' has characters outside"),
    ("text", "a1 hi\na1 again\n", r"src/text:2: duplicate key 'a1'"),
])
def test_bad_kaldi_dir_is_one_line_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture, name: str,
                                                   content: str | None, message: str) -> None:
    src, _ = _kaldi_dir(tmp_path)
    _broken(src, name, content)
    with pytest.raises(MtbiError, match=message) as raised:
        import_kaldi_dir(src, tmp_path / "out")
    assert "\n" not in str(raised.value)
    with pytest.raises(SystemExit):
        _import("--src", str(src), "--out_dir", str(tmp_path / "out"))
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("ERROR: ")


def _lhotse_manifests(root: Path) -> tuple[object, object, dict[str, np.ndarray]]:
    """A RecordingSet of recA.flac and recB.wav and a SupervisionSet on them: one supervision without
    a speaker, one without text. Returns them and the samples each imported utterance must have."""
    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet

    recordings = _write_audio(root / "audio")
    recording_set = RecordingSet.from_recordings(
        Recording.from_file(root / "audio" / name, recording_id=name.split(".")[0]) for name in ("recA.flac", "recB.wav"))
    sups = [SupervisionSegment("s1", "recA", 0.0, 1.25, text="hello  there\n", speaker="spkA"),
            SupervisionSegment("s2", "recA", 1.5, 1.5, text="no speaker"),
            SupervisionSegment("s3", "recB", 0.25, 2.0, text="on the wav", speaker="spkB"),
            SupervisionSegment("s4", "recB", 0.5, 1.0, text=None, speaker="spkB")]
    expected = {"spkA-s1": _span(recordings["recA"], 0.0, 1.25), "recA-s2": _span(recordings["recA"], 1.5, 3.0),
                "spkB-s3": _span(recordings["recB"], 0.25, 2.25)}
    return recording_set, SupervisionSet.from_segments(sups), expected


@pytest.mark.parametrize("manifests", ["cuts", "recordings+supervisions"])
def test_lhotse_manifests(tmp_path: Path, capsys: pytest.CaptureFixture, manifests: str) -> None:
    from lhotse import CutSet

    recording_set, supervision_set, expected = _lhotse_manifests(tmp_path)
    if manifests == "cuts":  # cut per supervision: their times are relative to the cut
        cuts = CutSet.from_manifests(recordings=recording_set, supervisions=supervision_set).trim_to_supervisions()
        cuts.to_file(tmp_path / "cuts.jsonl.gz")
        args = ["--lhotse_cuts", str(tmp_path / "cuts.jsonl.gz")]
    else:
        recording_set.to_file(tmp_path / "recordings.jsonl.gz")
        supervision_set.to_file(tmp_path / "supervisions.jsonl.gz")
        args = ["--lhotse_recordings", str(tmp_path / "recordings.jsonl.gz"),
                "--lhotse_supervisions", str(tmp_path / "supervisions.jsonl.gz")]
    out = tmp_path / "data" / "train"
    _import(*args, "--out_dir", str(out))
    log = capsys.readouterr().err
    _check_audio(out, expected)
    assert "1 supervisions without text; left out" in log
    assert "1 supervisions without a speaker take their recording id as speaker" in log
    # lhotse writes an ffmpeg command for a FLAC file; the import points at the file itself.
    assert read_table(out / "wav.scp") == {"recA": str(tmp_path / "audio" / "recA.flac"),
                                           "recB": str(tmp_path / "audio" / "recB.wav")}
    assert read_table(out / "text")["spkA-s1"] == "hello there"
    assert read_table(out / "utt_map") == {"spkA-s1": "s1", "recA-s2": "s2", "spkB-s3": "s3"}
    assert [p.name for p in out.parent.iterdir()] == ["train"]  # lhotse's export is gone
    _import(*args, "--out_dir", str(out))
    assert "already imported" in capsys.readouterr().err


def test_lhotse_channels_of_separate_files(tmp_path: Path) -> None:
    """A two-channel recording stored as one file per channel: lhotse exports each channel as its
    own recording ``<rec>_<channel>``; each points at its own file."""
    from lhotse import AudioSource, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    recordings = _write_audio(tmp_path / "audio")
    sf.write(tmp_path / "audio" / "recA1.flac", recordings["recA"][::-1], RATE, subtype="PCM_16")
    sources = [AudioSource("file", [0], str(tmp_path / "audio" / "recA.flac")),
               AudioSource("file", [1], str(tmp_path / "audio" / "recA1.flac"))]
    call = Recording("call", sources, RATE, recordings["recA"].size, 3.0)
    RecordingSet.from_recordings([call]).to_file(tmp_path / "recordings.jsonl")
    SupervisionSet.from_segments([SupervisionSegment("call-x", "call", 0.5, 1.0, channel=0, text="x", speaker="call"),
                                  SupervisionSegment("call-y", "call", 1.0, 1.5, channel=1, text="y", speaker="call")]
                                 ).to_file(tmp_path / "supervisions.jsonl")
    import_lhotse(tmp_path / "out", recordings=tmp_path / "recordings.jsonl",
                  supervisions=tmp_path / "supervisions.jsonl")
    assert read_table(tmp_path / "out" / "wav.scp") == {"call_0": str(tmp_path / "audio" / "recA.flac"),
                                                        "call_1": str(tmp_path / "audio" / "recA1.flac")}
    _check_audio(tmp_path / "out", {"call-x-0": _span(recordings["recA"], 0.5, 1.5),
                                    "call-y-1": _span(recordings["recA"][::-1], 1.0, 2.5)})


@pytest.mark.parametrize("change, message", [
    ("url", r"recordings.jsonl: recording 'recA' has url audio"),
    ("speed", r"recordings.jsonl: recording 'recA_sp1.1' is transformed \(Speed\)"),
    ("bad id", r"supervisions.jsonl: supervision id 's 1' has characters outside"),
    ("no recording", r"supervisions.jsonl: supervision 's1' is on recording 'recX'"),
])
def test_bad_lhotse_manifest_is_one_line_naming_it(tmp_path: Path, change: str, message: str) -> None:
    from lhotse import AudioSource, RecordingSet, SupervisionSet
    from lhotse.utils import fastcopy

    recording_set, supervision_set, _ = _lhotse_manifests(tmp_path)
    sups = list(supervision_set)
    if change == "url":
        url = [AudioSource("url", [0], "https://example.org/a.flac")]
        recording_set = RecordingSet.from_recordings(fastcopy(r, sources=url) for r in recording_set)
    elif change == "speed":
        recording_set = recording_set.perturb_speed(1.1)
    elif change == "bad id":
        sups[0] = fastcopy(sups[0], id="s 1")
    else:
        sups[0] = fastcopy(sups[0], recording_id="recX")
    recording_set.to_file(tmp_path / "recordings.jsonl")
    SupervisionSet.from_segments(sups).to_file(tmp_path / "supervisions.jsonl")
    with pytest.raises(MtbiError, match=message) as raised:
        import_lhotse(tmp_path / "out", recordings=tmp_path / "recordings.jsonl",
                      supervisions=tmp_path / "supervisions.jsonl")
    assert "\n" not in str(raised.value)


def _recipe(tmp_path: Path) -> Path:
    """A recipe made by setup.sh whose local/data.sh is a link to TEMPLATE's local/import_data.sh."""
    recipe = tmp_path / "egs" / "toy_mtbi"
    subprocess.run([str(REPO_ROOT / "egs" / "TEMPLATE" / "setup.sh"), str(recipe)], check=True, capture_output=True)
    (recipe / "local" / "data.sh").unlink()
    (recipe / "local" / "data.sh").symlink_to(os.readlink(recipe / "local" / "import_data.sh"))
    return recipe


def _stage1(recipe: Path, *args: str) -> subprocess.CompletedProcess:
    """local/data.sh as mtbi.sh calls it, with the venv's python on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["local/data.sh", "--sets", "train dev", "--nj", "2", "--allow_upsample", "false", *args],
                          cwd=recipe, env=env, capture_output=True, text=True)


def test_import_data_sh_as_local_data_sh(tmp_path: Path) -> None:
    src, expected = _kaldi_dir(tmp_path)
    recipe = _recipe(tmp_path)
    (recipe / "conf" / "import_data.conf").write_text(f"--src_dirs {src} {src}\n")
    result = _stage1(recipe, "--config", "conf/import_data.conf")
    assert result.returncode == 0, result.stderr[-3000:]
    for dset in ("train", "dev"):
        _check_audio(recipe / "data" / dset, expected)
    one = _stage1(recipe, "--src_dirs", str(src))
    assert one.returncode == 1 and "1 sources for the 2 sets 'train dev': give one per set" in one.stderr


def test_import_data_sh_finds_lhotse_recordings_beside_supervisions(tmp_path: Path) -> None:
    from lhotse import CutSet

    recording_set, supervision_set, expected = _lhotse_manifests(tmp_path)
    recording_set.to_file(tmp_path / "toy_recordings_train.jsonl.gz")
    supervision_set.to_file(tmp_path / "toy_supervisions_train.jsonl.gz")
    CutSet.from_manifests(recordings=recording_set, supervisions=supervision_set).to_file(tmp_path / "cuts_dev.jsonl.gz")
    recipe = _recipe(tmp_path)
    result = _stage1(recipe, "--lhotse_manifests",
                     f"{tmp_path / 'toy_supervisions_train.jsonl.gz'} {tmp_path / 'cuts_dev.jsonl.gz'}")
    assert result.returncode == 0, result.stderr[-3000:]
    for dset in ("train", "dev"):
        _check_audio(recipe / "data" / dset, expected)
