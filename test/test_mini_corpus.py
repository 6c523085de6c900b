"""The synthetic mini corpus: real layouts, word timings, determinism."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import soundfile as sf

from mtbi.data.commonvoice import read_commonvoice
from mtbi.data.librispeech import read_librispeech
from mtbi.errors import MtbiError
from mtbi.mini.corpus import CV_COLUMNS, make_mini_corpus

SIZES = {"train": 10, "dev": 3, "test": 3}


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _ctm(path: Path) -> dict[str, list[tuple[float, float, str]]]:
    words: dict[str, list[tuple[float, float, str]]] = {}
    for line in path.read_text().splitlines():
        rec, channel, start, dur, word = line.split()
        assert channel == "1"
        words.setdefault(rec, []).append((float(start), float(start) + float(dur), word))
    return words


def test_deterministic_for_a_seed_whatever_the_job_count(tmp_path: Path) -> None:
    one = make_mini_corpus(tmp_path / "a", "librispeech", SIZES, seed=3, nj=1)
    two = make_mini_corpus(tmp_path / "b", "librispeech", SIZES, seed=3, nj=2)
    other = make_mini_corpus(tmp_path / "c", "librispeech", SIZES, seed=4, nj=1)
    assert _tree_digest(one) == _tree_digest(two)
    assert _tree_digest(one) != _tree_digest(other)


def test_librispeech_layout_and_word_timings(tmp_path: Path) -> None:
    root = make_mini_corpus(tmp_path, "librispeech", SIZES, nj=2)
    listings = {part: read_librispeech(root, [part]) for part in ("train-clean-100", "dev-clean", "test-clean")}
    assert [len(listings[p].utterances) for p in listings] == [10, 3, 3]
    speakers = [{u.speaker for u in listing.utterances} for listing in listings.values()]
    assert len(speakers[0]) == 8 and not (speakers[0] & speakers[1]) and not (speakers[1] & speakers[2])
    texts = [u.text for listing in listings.values() for u in listing.utterances]
    assert len(set(texts)) == len(texts) and all(t == t.upper() for t in texts)

    ctm = _ctm(root / "alignments" / "train-clean-100.ctm")
    for utt in listings["train-clean-100"].utterances:
        info = sf.info(utt.audio)
        assert info.samplerate == 16000 and info.format == "FLAC"
        words = ctm[utt.utt_id]
        assert [w for _, _, w in words] == utt.text.split()
        assert all(0 <= s < e <= info.duration + 1e-3 for s, e, _ in words)
        assert all(a[1] <= b[0] + 1e-3 for a, b in zip(words, words[1:]))


def test_commonvoice_layout(tmp_path: Path) -> None:
    root = make_mini_corpus(tmp_path, "commonvoice", SIZES, nj=1)
    header = (root / "validated.tsv").read_text().splitlines()[0].split("\t")
    assert tuple(header) == CV_COLUMNS
    train = read_commonvoice(root, "train")
    assert len(train.utterances) == 10 and len(read_commonvoice(root, "dev").utterances) == 3
    utt = train.utterances[0]
    assert utt.text[0].isupper() and utt.text.endswith(".")
    info = sf.info(utt.audio)
    assert info.samplerate == 48000 and info.format == "MP3"
    ctm = _ctm(root / "alignments" / "train.ctm")
    assert [w for _, _, w in ctm[Path(utt.audio).stem]] == utt.text.split()


def test_rebuild_is_skipped_for_same_parameters(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_mini_corpus(tmp_path, "librispeech", SIZES)
    stamp = (root / "alignments" / "dev-clean.ctm").stat().st_mtime_ns
    with caplog.at_level("INFO"):
        make_mini_corpus(tmp_path, "librispeech", SIZES)
    assert "already built" in caplog.text
    assert (root / "alignments" / "dev-clean.ctm").stat().st_mtime_ns == stamp


def test_other_content_of_the_output_dir_is_kept(tmp_path: Path) -> None:
    (tmp_path / "my_real_corpus").mkdir()
    (tmp_path / "my_real_corpus" / "keep.txt").write_text("precious")
    make_mini_corpus(tmp_path, "librispeech", SIZES)
    assert (tmp_path / "my_real_corpus" / "keep.txt").read_text() == "precious"
    (tmp_path / "cv-corpus-mini").mkdir()
    with pytest.raises(MtbiError, match="cv-corpus-mini exists and is not a mini corpus"):
        make_mini_corpus(tmp_path, "commonvoice", SIZES)
