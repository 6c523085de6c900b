"""Stage 3: CTM and TextGrid import, checks against the transcript, CTC forced alignment."""

from __future__ import annotations

import argparse
import itertools
import logging
import os
from pathlib import Path
from typing import Iterable

import pytest
import soundfile as sf
import torch

from mtbi.bin import align_words, extract_feats, merge_feats, prepare_data
from mtbi.data.datadir import Utterance, read_table, validate_data_dir, write_data_dir
from mtbi.data.word_align import (
    AlignmentError,
    WordSpan,
    check_times,
    match_transcript,
    read_ctm,
    read_textgrid,
    read_word_align,
    write_word_align,
)
from mtbi.errors import MtbiError
from mtbi.mini.corpus import make_mini_corpus
from mtbi.models.ctc_align import forced_align, forced_align_batch, required_frames, word_spans

MINI_SIZES = {"train": 4, "dev": 2, "test": 2}


def _run(module, *argv: str) -> None:
    """Call a stage entry point in this process (so that caplog sees its log)."""
    parser: argparse.ArgumentParser = module.build_parser()
    module.main(parser.parse_args(list(argv)))


def _skipped(data_dir: Path) -> dict[str, str]:
    lines = (data_dir / "word_align.skipped").read_text().splitlines()
    return {line.split("\t")[0]: line.split("\t")[1] for line in lines}


# --- file formats ---

def test_ctm_read_sorts_by_start_and_keeps_milliseconds(tmp_path: Path) -> None:
    ctm = tmp_path / "a.ctm"
    ctm.write_text("u1 1 0.500 0.250 WORLD 0.9\nu1 1 0.100 0.300 HELLO\nu2 A 0.0 1.0 YES\n\n")
    spans = read_ctm(ctm)
    assert spans["u1"] == [WordSpan("u1", 0.1, 0.4, "HELLO"), WordSpan("u1", 0.5, 0.75, "WORLD")]
    assert spans["u2"] == [WordSpan("u2", 0.0, 1.0, "YES")]
    ctm.write_text("u1 1 0.1 0.3 HELLO\nu1 1 0.5 WORLD\n")
    with pytest.raises(MtbiError, match=r"a.ctm:2: expected '<recording> <channel> <start> <duration> <word>'"):
        read_ctm(ctm)
    ctm.write_text("u1 1 0.1 x HELLO\n")
    with pytest.raises(MtbiError, match=r"a.ctm:1: 'x' is not a number"):
        read_ctm(ctm)


def test_word_align_round_trip_is_grouped_by_sorted_utterance(tmp_path: Path) -> None:
    spans = {"b": [WordSpan("b", 0.0, 0.5, "one")],
             "a": [WordSpan("a", 0.2, 0.3, "z"), WordSpan("a", 0.3, 0.45, "y")]}
    write_word_align(tmp_path / "word_align", spans)
    assert (tmp_path / "word_align").read_text() == "a 0.200 0.300 z\na 0.300 0.450 y\nb 0.000 0.500 one\n"
    assert read_word_align(tmp_path / "word_align") == {"a": spans["a"], "b": spans["b"]}


TEXTGRID = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 1.5
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "spk1 - words"
        xmin = 0
        xmax = 1.5
        intervals: size = 5
        intervals [1]:
            xmin = 0
            xmax = 0.2
            text = ""
        intervals [2]:
            xmin = 0.2
            xmax = 0.5
            text = "don't"
        intervals [3]:
            xmin = 0.5
            xmax = 0.6
            text = "sp"
        intervals [4]:
            xmin = 0.6
            xmax = 1.1
            text = """hi"""
        intervals [5]:
            xmin = 1.1
            xmax = 1.5
            text = "sil"
    item [2]:
        class = "IntervalTier"
        name = "spk1 - phones"
        xmin = 0
        xmax = 1.5
        intervals: size = 1
        intervals [1]:
            xmin = 0.2
            xmax = 1.1
            text = "D"
'''


def test_textgrid_words_tier_without_silences(tmp_path: Path) -> None:
    path = tmp_path / "clip_1.TextGrid"
    path.write_text(TEXTGRID)
    assert read_textgrid(path) == [WordSpan("clip_1", 0.2, 0.5, "don't"), WordSpan("clip_1", 0.6, 1.1, '"hi"')]
    assert read_textgrid(path, tier="phones") == [WordSpan("clip_1", 0.2, 1.1, "D")]
    with pytest.raises(MtbiError, match="one interval tier named 'syllables'"):
        read_textgrid(path, tier="syllables")
    path.write_text('File type = "ooTextFile"\nObject class = "TextGrid"\n\n0\n1.5\n<exists>\n1\n')
    with pytest.raises(MtbiError, match="not a long-format TextGrid"):
        read_textgrid(path)


# --- checks ---

def test_match_transcript_ignores_case_and_punctuation_and_returns_the_transcript_tokens() -> None:
    spans = [WordSpan("u", 0.1, 0.4, "HELLO"), WordSpan("u", 0.5, 0.8, "dont"),
             WordSpan("u", 0.8, 1.0, "<unk>")]
    matched = match_transcript("u", spans, "Hello, don't Zyx.")
    assert [s.word for s in matched] == ["Hello,", "don't", "Zyx."]
    assert [(s.start, s.end) for s in matched] == [(0.1, 0.4), (0.5, 0.8), (0.8, 1.0)]
    with pytest.raises(AlignmentError, match="word count differs") as err:
        match_transcript("u", spans[:2], "hello don't go")
    assert err.value.reason == "word count differs from the transcript"
    with pytest.raises(AlignmentError, match="word 2 is 'dont', the transcript has 'do'"):
        match_transcript("u", spans, "hello do it")


def test_check_times_clips_a_little_past_the_end_and_skips_more() -> None:
    spans = [WordSpan("u", 0.0, 0.5, "a"), WordSpan("u", 0.5, 1.08, "b")]
    assert check_times("u", spans, duration=1.0)[-1] == WordSpan("u", 0.5, 1.0, "b")
    assert check_times("u", spans, duration=None) == spans
    with pytest.raises(AlignmentError, match="ends at 1.080 s, the audio at 0.900 s") as err:
        check_times("u", spans, duration=0.9)
    assert err.value.reason == "word ends past the audio end"
    with pytest.raises(AlignmentError, match="word 2 'b' has start 0.500, end 0.500"):
        check_times("u", [spans[0], WordSpan("u", 0.5, 0.5, "b")])
    with pytest.raises(AlignmentError, match="words overlap"):
        check_times("u", [spans[0], WordSpan("u", 0.4, 0.6, "b")])


def test_imported_alignments_are_checked_and_skips_listed(tmp_path: Path) -> None:
    """Recordings named by utt id or audio stem; every kind of skip, each with its reason."""
    data = tmp_path / "data" / "dev"
    write_data_dir(data, [
        Utterance("spkA-clip_1", "spkA", "/c/clip_1.mp3", "Don't, hi!"),
        Utterance("spkA-clip_2", "spkA", "/c/clip_2.mp3", "two words"),
        Utterance("spkB-clip_3", "spkB", "/c/clip_3.mp3", "not aligned"),
        Utterance("spkB-clip_4", "spkB", "/c/clip_4.mp3", "a bit long"),
        Utterance("spkB-clip_5", "spkB", "/c/clip_5.mp3", "far too long"),
        Utterance("spkB-clip_6", "spkB", "/c/clip_6.mp3", "no features"),
    ])
    feats = tmp_path / "dump" / "dev"
    feats.mkdir(parents=True)
    (feats / "utt2num_frames").write_text("spkA-clip_1 150\nspkA-clip_2 100\nspkB-clip_3 100\n"
                                          "spkB-clip_4 100\nspkB-clip_5 100\n")
    (feats / "feats.scp").write_text("")
    ctm = tmp_path / "mfa" / "dev.ctm"
    ctm.parent.mkdir()
    ctm.write_text("clip_2 1 0.1 0.2 two\nclip_2 1 0.3 0.2 birds\n"
                   "spkB-clip_4 1 0.1 0.3 a\nspkB-clip_4 1 0.4 0.3 bit\nspkB-clip_4 1 0.7 0.35 long\n"
                   "spkB-clip_5 1 0.1 0.3 far\nspkB-clip_5 1 0.4 0.3 too\nspkB-clip_5 1 0.7 0.5 long\n"
                   "clip_6 1 0.1 0.3 no\nclip_6 1 0.4 0.3 features\nclip_99 1 0.0 0.5 other\n")
    (tmp_path / "mfa" / "clip_1.TextGrid").write_text(TEXTGRID)

    with pytest.raises(MtbiError, match="--align_files needs --method ctm or textgrid"):
        _run(align_words, "--data_dir", str(data), "--method", "auto", "--align_files", str(ctm))
    _run(align_words, "--data_dir", str(data), "--feats_dir", str(feats), "--method", "ctm",
         "--align_files", str(ctm.parent))
    aligned = read_word_align(data / "word_align")
    assert list(aligned) == ["spkB-clip_4"]
    assert aligned["spkB-clip_4"][-1] == WordSpan("spkB-clip_4", 0.7, 1.0, "long")  # clipped from 1.05
    assert _skipped(data) == {
        "spkA-clip_1": "no alignment",
        "spkA-clip_2": "word differs from the transcript",
        "spkB-clip_3": "no alignment",
        "spkB-clip_5": "word ends past the audio end",
        "spkB-clip_6": "no features",
    }

    _run(align_words, "--data_dir", str(data), "--method", "textgrid", "--align_files", str(ctm.parent))
    assert read_word_align(data / "word_align") == {"spkA-clip_1": [
        WordSpan("spkA-clip_1", 0.2, 0.5, "Don't,"), WordSpan("spkA-clip_1", 0.6, 1.1, "hi!")]}


# --- CTC forced alignment ---

def _log_probs(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).log_softmax(dim=-1)


def test_forced_align_follows_the_best_path() -> None:
    # Frame-wise best: blank a a blank b b -> a at 1-2, b at 4-5.
    log_probs = _log_probs([[3, 0, 0], [0, 3, 0], [0, 3, 0], [3, 0, 0], [0, 0, 3], [0, 0, 3]])
    assert forced_align(log_probs, [1, 2]) == [(0, 1, 2), (1, 4, 5)]


def test_repeated_tokens_need_a_blank_between_them() -> None:
    # Frame-wise best is a a a, which would collapse to one a: the blank must go in the middle.
    log_probs = _log_probs([[0, 3, 0], [1, 3, 0], [0, 3, 0]])
    assert forced_align(log_probs, [1, 1]) == [(0, 0, 0), (1, 2, 2)]
    assert required_frames([1, 1]) == 3 and required_frames([1, 2]) == 2
    with pytest.raises(MtbiError, match="2 CTC targets need at least 3 frames, got 2"):
        forced_align(log_probs[:2], [1, 1])


def _brute_force(log_probs: torch.Tensor, targets: list[int]) -> tuple[int, ...] | None:
    """The best frame labelling that collapses to ``targets``, by trying all of them."""
    best, best_path = float("-inf"), None
    num_frames, vocab = log_probs.shape
    for path in itertools.product(range(vocab), repeat=num_frames):
        if [k for k, _ in itertools.groupby(path) if k != 0] == targets:
            score = sum(log_probs[t, k].item() for t, k in enumerate(path))
            if score > best:
                best, best_path = score, path
    return best_path


def test_forced_align_equals_brute_force_on_tiny_cases() -> None:
    generator = torch.Generator().manual_seed(0)
    checked: list[tuple[torch.Tensor, list[int]]] = []
    for _ in range(60):
        num_frames = int(torch.randint(2, 7, (1,), generator=generator))
        targets = torch.randint(1, 3, (int(torch.randint(1, 4, (1,), generator=generator)),),
                                generator=generator).tolist()
        log_probs = torch.randn(num_frames, 3, generator=generator, dtype=torch.float64).log_softmax(-1)
        expected = _brute_force(log_probs, targets)
        if expected is None:
            with pytest.raises(MtbiError, match="frames"):
                forced_align(log_probs, targets)
            continue
        path = [0] * num_frames
        for index, first, last in forced_align(log_probs, targets):
            path[first:last + 1] = [targets[index]] * (last + 1 - first)
        assert tuple(path) == expected, (targets, log_probs)
        checked.append((log_probs, targets))
    assert len(checked) > 30
    # All of them at once, padded with the most probable frames there are: the same paths.
    padded = torch.nn.utils.rnn.pad_sequence([lp for lp, _ in checked], batch_first=True, padding_value=0.0)
    alignments = forced_align_batch(padded, [lp.shape[0] for lp, _ in checked], [t for _, t in checked])
    for (log_probs, targets), alignment in zip(checked, alignments):
        assert alignment == forced_align(log_probs, targets)


def test_batched_viterbi_equals_each_utterance_alone() -> None:
    """Realistic lengths, repeated tokens, one utterance with exactly the frames it needs, and
    padding frames that favour every other path."""
    generator = torch.Generator().manual_seed(1)
    log_probs, targets = [], []
    for k in range(7):
        tokens = torch.randint(1, 4 if k % 2 else 30, (int(torch.randint(1, 60, (1,), generator=generator)),),
                               generator=generator).tolist()
        frames = required_frames(tokens) if k == 3 else required_frames(tokens) + int(
            torch.randint(0, 120, (1,), generator=generator))
        log_probs.append((3 * torch.randn(frames, 30, generator=generator)).log_softmax(-1))
        targets.append(tokens)
    assert any(a == b for t in targets for a, b in zip(t, t[1:]))
    padded = torch.nn.utils.rnn.pad_sequence(log_probs, batch_first=True, padding_value=0.0)
    lengths = [lp.shape[0] for lp in log_probs]
    expected = [forced_align(lp, t) for lp, t in zip(log_probs, targets)]
    assert forced_align_batch(padded, lengths, targets) == expected
    assert forced_align_batch(padded.flip(0), lengths[::-1], targets[::-1]) == expected[::-1]
    for alignment, tokens, frames in zip(expected, targets, lengths):
        assert [i for i, _, _ in alignment] == list(range(len(tokens)))
        assert all(0 <= a <= b < c for (_, a, b), (_, c, _) in zip(alignment, alignment[1:]))
        assert alignment[-1][2] < frames
    with pytest.raises(MtbiError, match="2 CTC targets need at least 3 frames, got 2"):
        forced_align_batch(padded, [*lengths[:-1], 2], [*targets[:-1], [1, 1]])


def test_word_spans_from_character_alignment() -> None:
    targets = [5, 6, 1, 7, 1, 5]  # "ab|c|a" with | = 1
    alignment = [(0, 2, 3), (1, 5, 5), (2, 6, 7), (3, 9, 10), (4, 11, 11), (5, 14, 14)]
    spans = word_spans(alignment, targets, separator=1, frame_shift=0.04)
    assert [(round(a, 6), round(b, 6)) for a, b in spans] == [(0.08, 0.24), (0.36, 0.44), (0.56, 0.6)]


# --- stages 1-3 on the mini corpus ---

@pytest.fixture(scope="module")
def mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny mini LibriSpeech."""
    return make_mini_corpus(tmp_path_factory.mktemp("mini") / "downloads", "librispeech", MINI_SIZES)


def _stages_1_2(root: Path, part: str, data: Path, feats: Path) -> tuple[Path, Path]:
    _run(prepare_data, "--corpus", "librispeech", "--root", str(root), "--parts", part, "--out_dir", str(data))
    _run(extract_feats, "--data_dir", str(data), "--out_dir", str(feats))
    _run(merge_feats, "--data_dir", str(data), "--out_dir", str(feats))
    return data, feats


@pytest.fixture(scope="module")
def mini_dev(mini_root: Path) -> tuple[Path, Path]:
    """data/dev_clean and its features."""
    top = mini_root.parent.parent
    return _stages_1_2(mini_root, "dev-clean", top / "data" / "dev_clean", top / "dump" / "dev_clean")


def test_stage1_writes_corpus_word_timings_as_ctm(mini_dev: tuple[Path, Path]) -> None:
    data, feats = mini_dev
    texts = read_table(data / "text")
    ctm = read_ctm(data / "ctm")
    assert sorted(ctm) == sorted(texts) and len(texts) == 2
    for utt, text in texts.items():
        assert [s.word for s in ctm[utt]] == text.split()
    assert validate_data_dir(data) == []
    assert (feats / "ctm").read_text() == (data / "ctm").read_text()  # stage 2's copy keeps it


def test_stage1_ctm_of_common_voice_is_keyed_by_utterance(tmp_path: Path) -> None:
    root = make_mini_corpus(tmp_path / "downloads", "commonvoice", MINI_SIZES)
    data = tmp_path / "data" / "dev"
    _run(prepare_data, "--corpus", "commonvoice", "--root", str(root), "--parts", "dev", "--out_dir", str(data))
    texts = read_table(data / "text")
    assert sorted(read_ctm(data / "ctm")) == sorted(texts)
    _run(align_words, "--data_dir", str(data))
    aligned = read_word_align(data / "word_align")
    assert {utt: [s.word for s in spans] for utt, spans in aligned.items()} == {
        utt: text.split() for utt, text in texts.items()}  # the transcript's tokens, "Period." included


def test_auto_uses_the_corpus_ctm_and_is_not_redone(mini_dev: tuple[Path, Path],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    data, feats = mini_dev
    with caplog.at_level(logging.INFO):
        _run(align_words, "--data_dir", str(data), "--feats_dir", str(feats), "--method", "auto")
    assert "--method auto uses ctm" in caplog.text
    durations = {u: int(n) / 100 for u, n in read_table(feats / "utt2num_frames").items()}
    aligned = read_word_align(data / "word_align")
    texts = read_table(data / "text")
    assert list(aligned) == sorted(texts)
    for utt, spans in aligned.items():
        assert [s.word for s in spans] == texts[utt].split()
        assert all(0 <= a.start < a.end <= b.start for a, b in zip(spans, spans[1:]))
        assert spans[-1].end <= durations[utt]
    assert (data / "word_align.skipped").read_text() == ""
    caplog.clear()
    with caplog.at_level(logging.INFO):
        _run(align_words, "--data_dir", str(data), "--feats_dir", str(feats), "--method", "auto")
    assert "already aligned" in caplog.text


def _random_ctc_model(texts: Iterable[str], out_dir: Path) -> Path:
    """A CTC model with random weights and the characters of ``texts``, saved to ``out_dir``."""
    from mtbi.models.ctc import CtcModel, build_vocabulary
    from mtbi.models.encoders import ConformerConfig, EncoderConfig, build_encoder

    torch.manual_seed(0)
    encoder = build_encoder(EncoderConfig(kind="conformer", conformer=ConformerConfig(
        output_size=32, attention_heads=2, linear_units=64, num_blocks=1, cnn_module_kernel=7)))
    CtcModel(encoder, build_vocabulary(texts)).save_pretrained(out_dir)
    return out_dir


def test_ctc_alignment_end_to_end_with_a_random_model(mini_dev: tuple[Path, Path], tmp_path: Path) -> None:
    data, feats = mini_dev
    texts = read_table(data / "text")
    _random_ctc_model(texts.values(), tmp_path / "encoder")
    ctc_data = tmp_path / "data"
    ctc_data.mkdir()
    for name in ("wav.scp", "text", "utt2spk", "spk2utt"):
        (ctc_data / name).write_text((data / name).read_text())

    with pytest.raises(MtbiError, match="needs --ctc_model"):
        _run(align_words, "--data_dir", str(ctc_data), "--feats_dir", str(feats))
    _run(align_words, "--data_dir", str(ctc_data), "--feats_dir", str(feats), "--method", "auto",
         "--ctc_model", str(tmp_path / "encoder"), "--batch_size", "1")
    aligned = read_word_align(ctc_data / "word_align")
    assert list(aligned) == sorted(texts)
    for utt, spans in aligned.items():
        duration = sf.info(read_table(data / "wav.scp")[utt]).duration
        assert [s.word for s in spans] == texts[utt].split()
        assert all(0 <= a.start < a.end <= b.start for a, b in zip(spans, spans[1:]))
        assert spans[-1].end <= duration + 0.01


@pytest.fixture(scope="module")
def ctc_set(mini_root: Path) -> tuple[Path, Path, Path]:
    """data/train_clean_100 (4 utterances), its features and a random CTC model, with text
    lines that the CTC aligner skips (a word of digits only, a transcript far too long for
    the audio) and an utterance without features (skipped at the merge)."""
    top = mini_root.parent.parent
    data, feats = _stages_1_2(mini_root, "train-clean-100", top / "data" / "train", top / "dump" / "train")
    texts = read_table(data / "text")
    model = _random_ctc_model(texts.values(), top / "exp" / "encoder")
    utts = sorted(texts)
    texts[utts[1]] += " 42"
    texts[utts[2]] = " ".join([texts[utts[2]]] * 40)
    texts[f"{utts[-1]}x"] = "no features"
    (data / "text").write_text("".join(f"{utt} {text}\n" for utt, text in sorted(texts.items())))
    return data, feats, model


def _copy_data_dir(data: Path, out: Path) -> Path:
    out.mkdir(parents=True)
    for name in ("wav.scp", "text", "utt2spk", "spk2utt"):
        (out / name).write_text((data / name).read_text())
    return out


def test_sharded_ctc_alignment_equals_one_process(ctc_set: tuple[Path, Path, Path], tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    data, feats, model = ctc_set
    ctc = ("--feats_dir", str(feats), "--method", "ctc", "--ctc_model", str(model))
    one, sharded = _copy_data_dir(data, tmp_path / "one"), _copy_data_dir(data, tmp_path / "sharded")
    with caplog.at_level(logging.INFO):
        _run(align_words, "--data_dir", str(one), *ctc)
    assert "utterances/s" in caplog.text
    utts = sorted(read_table(data / "text"))
    assert _skipped(one) == {utts[1]: "word without characters the CTC model knows",
                             utts[2]: "audio too short for the transcript", utts[4]: "no features"}
    assert len(read_word_align(one / "word_align")) == 2

    for shard in ("1", "2"):
        _run(align_words, "--data_dir", str(sharded), *ctc, "--shard", shard, "--num_shards", "2")
    shards = sharded / "align" / "shards"
    assert sorted(p.name for p in shards.iterdir()) == [".1.done", ".2.done", "word_align.1", "word_align.2",
                                                       "word_align.skipped.1", "word_align.skipped.2"]
    assert "42" in (shards / "word_align.skipped.2").read_text()
    _run(align_words, "--data_dir", str(sharded), *ctc, "--merge", "--num_shards", "2")
    for name in ("word_align", "word_align.skipped"):
        assert (sharded / name).read_bytes() == (one / name).read_bytes(), name

    made = {p: p.stat().st_mtime_ns for p in shards.iterdir()}
    caplog.clear()
    with caplog.at_level(logging.INFO):
        _run(align_words, "--data_dir", str(sharded), *ctc, "--shard", "2", "--num_shards", "2")
        _run(align_words, "--data_dir", str(sharded), *ctc, "--merge", "--num_shards", "2")
    assert "shard 2/2 already aligned" in caplog.text and "2 alignment shards already merged" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in shards.iterdir()} == made
    (sharded / "text").touch()  # a changed input: the shard is done again
    _run(align_words, "--data_dir", str(sharded), *ctc, "--shard", "2", "--num_shards", "2")
    assert (shards / ".2.done").stat().st_mtime_ns > made[shards / ".2.done"]


def test_merge_refuses_missing_or_other_shards(ctc_set: tuple[Path, Path, Path], tmp_path: Path) -> None:
    data, feats, model = ctc_set
    ctc = ("--feats_dir", str(feats), "--method", "ctc", "--ctc_model", str(model))
    sharded = _copy_data_dir(data, tmp_path / "sharded")
    _run(align_words, "--data_dir", str(sharded), *ctc, "--shard", "1", "--num_shards", "2")
    with pytest.raises(MtbiError, match=r"shards/\.2\.done: word alignment shard 2/2 is not finished; "
                                        r"re-run stage 3$"):
        _run(align_words, "--data_dir", str(sharded), *ctc, "--merge", "--num_shards", "2")
    assert not (sharded / "word_align").exists()
    _run(align_words, "--data_dir", str(sharded), *ctc, "--shard", "2", "--num_shards", "2", "--batch_size", "1")
    other = tmp_path / "other_model"
    other.mkdir()
    for path in model.iterdir():
        (other / path.name).write_bytes(path.read_bytes())
        os.utime(other / path.name, ns=(0, 0))  # older than the shards: only the stamps tell
    os.utime(other, ns=(0, 0))
    with pytest.raises(MtbiError, match="shard 1/2 was made with another ctc_model; re-run stage 3 with the same"):
        _run(align_words, "--data_dir", str(sharded), "--feats_dir", str(feats), "--method", "ctc",
             "--ctc_model", str(other), "--merge", "--num_shards", "2")


def test_auto_resolves_and_shards_only_ctc(mini_dev: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    data, feats = mini_dev
    _run(align_words, "--data_dir", str(data), "--method", "auto", "--print_method")
    _run(align_words, "--data_dir", str(data.parent), "--method", "auto", "--print_method")
    assert capsys.readouterr().out == "ctm\nctc\n"
    with pytest.raises(MtbiError, match="--shard and --merge are for --method ctc; ctm runs in one process"):
        _run(align_words, "--data_dir", str(data), "--feats_dir", str(feats), "--shard", "1", "--num_shards", "2")
