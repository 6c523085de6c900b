"""LibriSpeech and Common Voice readers on small real-layout corpora, through prepare_data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from conftest import CV_HEADER, tone, write_cv_tsv

from mtbi.data.commonvoice import read_commonvoice
from mtbi.data.datadir import read_table, validate_data_dir
from mtbi.data.librispeech import read_librispeech
from mtbi.errors import MtbiError


def _prepare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtbi.bin.prepare_data", *args],
                          capture_output=True, text=True)


def test_librispeech_reader(librispeech_root: Path) -> None:
    listing = read_librispeech(librispeech_root, ["dev-clean"])
    assert [u.utt_id for u in listing.utterances] == [
        "174-50561-0000", "174-50561-0001", "84-121123-0000", "84-121123-0001"]
    first = listing.utterances[0]
    assert first.speaker == "174" and first.text == "HELLO WORLD NUMBER 0"
    assert Path(first.audio).is_file() and first.audio.endswith("174-50561-0000.flac")
    assert listing.skipped == []


def test_librispeech_bad_inputs_are_skipped_with_reasons(librispeech_root: Path, tmp_path: Path) -> None:
    chapter = librispeech_root / "dev-clean" / "84" / "121123"
    trans = chapter / "84-121123.trans.txt"
    trans.write_bytes(b"84-121123-0000 HELLO\n84-121123-0001 \xff\xfe BAD\n84-121123-0002 NO AUDIO\n"
                      b"84-121123-0003   \n")
    sf.write(chapter / "84-121123-0003.flac", tone(1.0, 16000), 16000)
    sf.write(chapter / "84-121123-0009.flac", tone(1.0, 16000), 16000)  # no transcript line
    other = librispeech_root / "dev-clean" / "174" / "50561"
    (other / "174-50561-0001.flac").write_bytes(b"not a flac file")
    sf.write(other / "174-50561-0000.flac", tone(1.0, 8000), 8000)

    out = tmp_path / "data" / "dev_clean"
    result = _prepare("--corpus", "librispeech", "--root", str(librispeech_root),
                      "--parts", "dev-clean", "--out_dir", str(out))
    assert result.returncode == 0, result.stderr
    assert list(read_table(out / "text")) == ["84-121123-0000"]
    reasons = {line.split("\t")[0]: line.split("\t")[1]
               for line in (out / "skipped.txt").read_text().splitlines()}
    assert reasons == {
        "84-121123-0001": "non-UTF-8 transcript",
        "84-121123-0002": "audio file missing",
        "84-121123-0003": "empty transcript",
        "84-121123-0009": "no transcript line",
        "174-50561-0000": "sample rate 8000 Hz below 16000 Hz",
        "174-50561-0001": "unreadable audio",
    }
    assert "1 utterances from 1 speakers, 6 skipped" in result.stderr
    assert validate_data_dir(out) == []


def test_librispeech_missing_part_is_one_line_error(librispeech_root: Path, tmp_path: Path) -> None:
    result = _prepare("--corpus", "librispeech", "--root", str(librispeech_root),
                      "--parts", "train-clean-100", "--out_dir", str(tmp_path / "x"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"ERROR: {librispeech_root}/train-clean-100: LibriSpeech part not found; "
        "check LIBRISPEECH in db.sh and the part names")


def test_prepare_is_skipped_when_done_and_redone_when_options_change(librispeech_root: Path,
                                                                     tmp_path: Path) -> None:
    args = ["--corpus", "librispeech", "--root", str(librispeech_root), "--parts", "dev-clean",
            "--out_dir", str(tmp_path / "d")]
    assert _prepare(*args).returncode == 0
    again = _prepare(*args)
    assert "already prepared" in again.stderr
    changed = _prepare(*args, "--allow_upsample", "true")
    assert "already prepared" not in changed.stderr and changed.returncode == 0


def test_commonvoice_train_is_validated_minus_dev_and_test(commonvoice_root: Path) -> None:
    train = read_commonvoice(commonvoice_root, "train")
    assert sorted(Path(u.audio).name for u in train.utterances) == [
        f"common_voice_en_{n}.mp3" for n in range(4)]
    assert train.utterances[0].utt_id == "spk0-common_voice_en_0"
    assert train.utterances[0].text == "Sentence number 0."
    dev = read_commonvoice(commonvoice_root, "dev")
    assert [u.utt_id for u in dev.utterances] == ["spk0-common_voice_en_4"]


def test_commonvoice_columns_found_by_header_name(commonvoice_root: Path) -> None:
    shuffled = ["sentence", "locale", "path", "up_votes", "client_id"]
    write_cv_tsv(commonvoice_root / "test.tsv",
                 [{"client_id": "spk1", "path": "common_voice_en_5.mp3", "sentence": "Five."}], shuffled)
    test = read_commonvoice(commonvoice_root, "test")
    assert [(u.utt_id, u.speaker, u.text) for u in test.utterances] == [
        ("spk1-common_voice_en_5", "spk1", "Five.")]


def test_commonvoice_missing_column(commonvoice_root: Path) -> None:
    write_cv_tsv(commonvoice_root / "dev.tsv", [], [c for c in CV_HEADER if c != "sentence"])
    with pytest.raises(MtbiError, match=r"dev.tsv: missing column\(s\) sentence"):
        read_commonvoice(commonvoice_root, "dev")


def test_commonvoice_prepare_and_bad_inputs(commonvoice_root: Path, tmp_path: Path) -> None:
    rows = [{"client_id": "spk9", "path": "common_voice_en_2.mp3", "sentence": ""},
            {"client_id": "spk9", "path": "missing.mp3", "sentence": "No clip."},
            {"client_id": "spk9", "path": "stereo.mp3", "sentence": "Two channels."}]
    sf.write(commonvoice_root / "clips" / "stereo.mp3", tone(1.0, 44100, channels=2), 44100)
    write_cv_tsv(commonvoice_root / "other.tsv", rows)
    out = tmp_path / "other"
    result = _prepare("--corpus", "commonvoice", "--root", str(commonvoice_root),
                      "--parts", "other", "--out_dir", str(out))
    assert result.returncode == 0, result.stderr
    assert list(read_table(out / "text")) == ["spk9-stereo"]
    skipped = dict(line.split("\t")[:2] for line in (out / "skipped.txt").read_text().splitlines())
    assert skipped == {"spk9-common_voice_en_2": "empty transcript", "spk9-missing": "audio file not found"}


def test_stage1_error_when_nothing_usable(commonvoice_root: Path, tmp_path: Path) -> None:
    write_cv_tsv(commonvoice_root / "other.tsv",
                 [{"client_id": "s", "path": "nope.mp3", "sentence": "Gone."}])
    result = _prepare("--corpus", "commonvoice", "--root", str(commonvoice_root),
                      "--parts", "other", "--out_dir", str(tmp_path / "o"))
    assert result.returncode == 1
    assert "no usable utterance in other; see the reasons in" in result.stderr
    assert (tmp_path / "o" / "skipped.txt").read_text().startswith("s-nope\taudio file not found")


def test_corpus_word_timings_go_to_the_data_dir_ctm(librispeech_root: Path, tmp_path: Path) -> None:
    alignments = librispeech_root / "alignments"
    alignments.mkdir()
    (alignments / "dev-clean.ctm").write_text(
        "84-121123-0001 1 0.10 0.20 HELLO\n84-121123-0001 1 0.30 0.20 WORLD\n"
        "174-50561-0000 1 0.0 0.5 HELLO\n9-9-0000 1 0.0 0.5 ELSEWHERE\n")
    (librispeech_root / "dev-clean" / "84" / "121123" / "84-121123-0000.flac").write_bytes(b"broken")
    out = tmp_path / "dev_clean"
    result = _prepare("--corpus", "librispeech", "--root", str(librispeech_root), "--parts", "dev-clean",
                      "--out_dir", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "ctm").read_text().splitlines() == [
        "174-50561-0000 1 0.000 0.500 HELLO", "84-121123-0001 1 0.100 0.200 HELLO",
        "84-121123-0001 1 0.300 0.200 WORLD"]
    assert "word timings for 2 of 3 utterances" in result.stderr
    assert validate_data_dir(out) == []
    (alignments / "dev-clean.ctm").write_text("84-121123-0001 1 0.10 0.20 HELLO\n")
    again = _prepare("--corpus", "librispeech", "--root", str(librispeech_root), "--parts", "dev-clean",
                     "--out_dir", str(out))
    assert "already prepared" not in again.stderr  # a changed alignment file redoes stage 1
    assert (out / "ctm").read_text() == "84-121123-0001 1 0.100 0.200 HELLO\n"


def test_commonvoice_word_timings_are_keyed_by_utterance_id(commonvoice_root: Path) -> None:
    (commonvoice_root / "alignments").mkdir()
    (commonvoice_root / "alignments" / "dev.ctm").write_text("common_voice_en_4 1 0.1 0.4 Sentence.\n")
    dev = read_commonvoice(commonvoice_root, "dev")
    assert list(dev.word_times) == ["spk0-common_voice_en_4"]
    assert dev.word_times["spk0-common_voice_en_4"][0].word == "Sentence."
    assert read_commonvoice(commonvoice_root, "test").word_times == {}
