"""Bad inputs, stage by stage, through the stages' own entry points (``python -m mtbi.bin.*``,
run in this process): each case asserts a clear one-line error (exit 1, no traceback) or a
logged, counted skip, and that what was already computed is kept."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import yaml
from conftest import CV_HEADER, tone, write_cv_tsv
from recipe_fixtures import to_recordings_and_segments
from sllm_fixtures import make_imitation_data, make_model_dirs

from mtbi.cli import run_main
from mtbi.data.datadir import read_table, write_table


def run_stage(module: str, *argv: str | Path) -> tuple[int, str]:
    """``python -m mtbi.bin.<module> <argv>`` in this process: (exit status, stdout + stderr)."""
    entry = importlib.import_module(f"mtbi.bin.{module}")
    stderr = io.StringIO()
    status = 0
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stderr):
        try:
            run_main(entry.build_parser, entry.main, [str(a) for a in argv], getattr(entry, "CONFIG", None))
        except SystemExit as exit_:
            status = int(exit_.code or 0)
    return status, stderr.getvalue()


def assert_one_line_error(result: tuple[int, str], pattern: str) -> str:
    """Exit 1 with exactly one ``ERROR:`` line matching ``pattern`` and no traceback."""
    status, stderr = result
    errors = [line for line in stderr.splitlines() if line.startswith("ERROR: ")]
    assert status == 1 and len(errors) == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert re.search(pattern, errors[0]), errors[0]
    return errors[0]


def digest(*paths: Path) -> str:
    """The contents of ``paths`` (files, or every file under a dir): to show nothing changed."""
    sha = hashlib.sha256()
    for path in paths:
        for file in sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()):
            sha.update(str(file.relative_to(path.parent)).encode() + file.read_bytes())
    return sha.hexdigest()


def skip_reasons(data_dir: Path) -> dict[str, str]:
    lines = (data_dir / "skipped.txt").read_text(encoding="utf-8").splitlines()
    return {line.split("\t")[0]: line.split("\t")[1] for line in lines}


# -- stage 1: corpus readers -------------------------------------------------------------------

LS_CHAPTER = ("dev-clean", "84", "121123")


def _break_librispeech(root: Path, case: str) -> str:
    """Break utterance 84-121123-0001 of the fixture corpus as ``case`` says; return its id."""
    chapter = root.joinpath(*LS_CHAPTER)
    utt = "84-121123-0001"
    audio, trans = chapter / f"{utt}.flac", chapter / "84-121123.trans.txt"
    if case == "missing audio":
        audio.unlink()
    elif case == "corrupt audio":
        audio.write_bytes(b"fLaC" + bytes(range(256)) * 4)
    elif case == "zero-length audio":
        sf.write(audio, np.zeros(0, dtype=np.float32), 16000)
    elif case == "8 kHz audio":
        sf.write(audio, tone(1.0, 8000), 8000)
    elif case == "empty transcript":
        trans.write_text(trans.read_text().replace(f"{utt} HELLO WORLD NUMBER 1", utt))
    elif case == "non-UTF-8 transcript":
        trans.write_bytes(trans.read_bytes().replace(b"NUMBER 1", b"NUMB\xe9R 1"))
    elif case == "duplicate id":
        trans.write_text(trans.read_text() + f"{utt} THE SAME ID AGAIN\n")
    elif case == "unsafe id":
        utt = "84-121123-0001;touch"
        shutil.copy(audio, chapter / f"{utt}.flac")
        audio.unlink()
        trans.write_text(trans.read_text().replace("84-121123-0001 ", f"{utt} "))
    return utt


@pytest.mark.parametrize("case, reason", [
    ("missing audio", "audio file missing"),
    ("corrupt audio", "unreadable audio"),
    ("zero-length audio", "unreadable audio"),  # libsndfile refuses a FLAC stream without samples
    ("8 kHz audio", "sample rate 8000 Hz below 16000 Hz"),
    ("empty transcript", "empty transcript"),
    ("non-UTF-8 transcript", "non-UTF-8 transcript"),
    ("duplicate id", "duplicate id"),
    ("unsafe id", "unsafe id"),
])
def test_stage1_librispeech_skips_and_counts(librispeech_root: Path, tmp_path: Path, case: str, reason: str) -> None:
    utt = _break_librispeech(librispeech_root, case)
    out = tmp_path / "dev_clean"
    status, stderr = run_stage("prepare_data", "--corpus", "librispeech", "--root", librispeech_root,
                               "--parts", "dev-clean", "--out_dir", out)
    assert status == 0, stderr
    assert skip_reasons(out) == {utt: reason}
    assert f"1 skipped (see {out / 'skipped.txt'})" in stderr and f"skipped 1: {reason}" in stderr
    kept = 4 if case == "duplicate id" else 3  # a duplicate keeps its first line
    assert len(read_table(out / "wav.scp")) == kept


def test_stage1_commonvoice_missing_column_is_one_line(commonvoice_root: Path, tmp_path: Path) -> None:
    write_cv_tsv(commonvoice_root / "dev.tsv", [{"path": "x.mp3"}], [c for c in CV_HEADER if c != "sentence"])
    assert_one_line_error(run_stage("prepare_data", "--corpus", "commonvoice", "--root", commonvoice_root,
                                    "--parts", "dev", "--out_dir", tmp_path / "dev"),
                          r"dev\.tsv: missing column\(s\) sentence")


def test_stage1_commonvoice_hostile_clip_name_and_short_row(commonvoice_root: Path, tmp_path: Path) -> None:
    hostile = "x $(touch pwned); rm -rf y.mp3"
    sf.write(commonvoice_root / "clips" / hostile, tone(1.0, 48000), 48000)
    rows = [{"client_id": "spk0", "path": "common_voice_en_4.mp3", "sentence": "Fine.", "locale": "en"},
            {"client_id": "spk0", "path": hostile, "sentence": "Hostile.", "locale": "en"}]
    write_cv_tsv(commonvoice_root / "dev.tsv", rows)
    with open(commonvoice_root / "dev.tsv", "a", encoding="utf-8") as f:
        f.write("spk1\tcommon_voice_en_3.mp3\n")  # a row cut short
    status, stderr = run_stage("prepare_data", "--corpus", "commonvoice", "--root", commonvoice_root,
                               "--parts", "dev", "--out_dir", tmp_path / "dev", "--allow_upsample", "false")
    assert status == 0, stderr
    reasons = skip_reasons(tmp_path / "dev")
    assert sorted(reasons.values()) == ["short tsv row", "unsafe id"]
    assert list(read_table(tmp_path / "dev" / "wav.scp")) == ["spk0-common_voice_en_4"]
    assert not (Path.cwd() / "pwned").exists()


def test_stage1_no_usable_utterance_is_one_line(librispeech_root: Path, tmp_path: Path) -> None:
    for flac in librispeech_root.rglob("*.flac"):
        flac.write_bytes(b"garbage")
    assert_one_line_error(run_stage("prepare_data", "--corpus", "librispeech", "--root", librispeech_root,
                                    "--parts", "dev-clean", "--out_dir", tmp_path / "dev"),
                          r"no usable utterance in dev-clean; see the reasons in .*skipped\.txt")


# -- stage 2: features -------------------------------------------------------------------------

@pytest.fixture
def data_dir(librispeech_root: Path, tmp_path: Path) -> Path:
    out = tmp_path / "data" / "dev_clean"
    status, stderr = run_stage("prepare_data", "--corpus", "librispeech", "--root", librispeech_root,
                               "--parts", "dev-clean", "--out_dir", out)
    assert status == 0, stderr
    return out


def _extract(data_dir: Path, out: Path, shard: int = 1, num_shards: int = 1) -> tuple[int, str]:
    return run_stage("extract_feats", "--data_dir", data_dir, "--out_dir", out,
                     "--shard", shard, "--num_shards", num_shards)


def _wav(data_dir: Path, utt: str) -> Path:
    return Path(read_table(data_dir / "wav.scp")[utt])


@pytest.mark.parametrize("case, reason", [
    ("truncated audio", "unreadable audio|bad features"),
    ("NaN samples", "NaN or infinite samples"),
    ("audio removed after stage 1", "audio file not found"),
])
def test_stage2_skips_and_counts_and_keeps_the_other_shard(data_dir: Path, tmp_path: Path, case: str,
                                                            reason: str) -> None:
    out = tmp_path / "feats"
    assert _extract(data_dir, out, 1, 2)[0] == 0  # shard 1 done before the audio goes bad
    shard1 = digest(out / "shards")
    utt = sorted(read_table(data_dir / "wav.scp"))[1]  # shard 2's first utterance
    wav = _wav(data_dir, utt)
    if case == "truncated audio":
        wav.write_bytes(wav.read_bytes()[:200])
    elif case == "NaN samples":
        wav.unlink()
        samples = tone(1.0, 16000)
        samples[100] = np.nan
        sf.write(wav.with_suffix(".flac"), samples, 16000, format="WAV", subtype="FLOAT")
    else:
        wav.unlink()
    status, stderr = _extract(data_dir, out, 2, 2)
    assert status == 0, stderr
    assert digest(out / "shards") != shard1 and "shard 2/2: 1 utterances, 1 skipped" in stderr
    status, stderr = run_stage("merge_feats", "--data_dir", data_dir, "--out_dir", out, "--num_shards", "2")
    assert status == 0, stderr
    assert re.fullmatch(reason, skip_reasons(out)[utt]) and len(read_table(out / "feats.scp")) == 3


def test_stage2_stereo_is_downmixed_not_skipped(data_dir: Path, tmp_path: Path) -> None:
    utt = sorted(read_table(data_dir / "wav.scp"))[0]
    assert _extract(data_dir, tmp_path / "mono")[0] == 0
    mono, rate = sf.read(_wav(data_dir, utt), dtype="float32")
    sf.write(_wav(data_dir, utt), np.stack([mono, mono], axis=1), rate)
    assert _extract(data_dir, tmp_path / "stereo")[0] == 0
    feats = [dict(kaldiio.load_scp(str(tmp_path / d / "shards" / "feats.1.scp")))[utt] for d in ("mono", "stereo")]
    np.testing.assert_allclose(feats[0], feats[1], atol=1e-5)


def test_stage2_mismatched_data_dir_is_reported_per_line(data_dir: Path) -> None:
    text = data_dir / "text"
    text.write_text("".join(line + "\n" for line in text.read_text().splitlines()[1:]))  # one utterance lost
    (data_dir / "utt2spk").write_text((data_dir / "utt2spk").read_text() + "ghost-utt 84\n")
    status, stderr = run_stage("validate_data_dir", data_dir)
    assert status == 1 and "Traceback" not in stderr
    problems = [line for line in stderr.splitlines() if str(data_dir) in line]
    assert any("text" in p and "missing" in p for p in problems), stderr
    assert any("ghost-utt" in p for p in problems), stderr


def _limit_file_size() -> None:
    """In the child: files may grow to 100 kB, then writes fail with EFBIG (as on a full disk)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_stage2_disk_full_is_one_line_and_a_rerun_completes(data_dir: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    for shard in (1, 2):
        assert _extract(data_dir, reference, shard, 2)[0] == 0
    out = tmp_path / "feats"
    assert _extract(data_dir, out, 1, 2)[0] == 0
    shard1 = digest(*sorted((out / "shards").glob("*.1*")))
    command = [sys.executable, "-m", "mtbi.bin.extract_feats", "--data_dir", str(data_dir), "--out_dir", str(out),
               "--shard", "2", "--num_shards", "2"]
    full = subprocess.run(command, capture_output=True, text=True, preexec_fn=_limit_file_size)
    assert_one_line_error((full.returncode, full.stderr), r"File too large; free disk space .* re-run the stage")
    assert not (out / "shards" / ".2.done").exists() and not list((out / "shards").glob(".*.tmp"))
    assert digest(*sorted((out / "shards").glob("*.1*"))) == shard1
    assert _extract(data_dir, out, 2, 2)[0] == 0
    for name in ("feats.2.scp", "utt2num_frames.2", "skipped.2"):
        assert (out / "shards" / name).read_text() == (reference / "shards" / name).read_text().replace(
            str(reference), str(out))
    assert (out / "shards" / "feats.2.ark").read_bytes() == (reference / "shards" / "feats.2.ark").read_bytes()


def test_stage2_shard_outside_the_range_is_one_line(data_dir: Path, tmp_path: Path) -> None:
    assert_one_line_error(_extract(data_dir, tmp_path / "feats", 3, 2), r"shard 3 is outside 1\.\.2")


@pytest.mark.parametrize("feats_type", ["raw", "logmel"])
def test_stage2_failing_pipe_and_overlong_segment_are_counted_skips(data_dir: Path, tmp_path: Path,
                                                                   feats_type: str) -> None:
    to_recordings_and_segments(data_dir, tmp_path / "recordings")  # 2 recordings, the second a pipe
    wav_scp = read_table(data_dir / "wav.scp")
    piped = next(rec for rec, entry in wav_scp.items() if entry.endswith("|"))
    wav_scp[piped] = f"{sys.executable} -c 'import sys; sys.exit(2)' |"
    write_table(data_dir / "wav.scp", wav_scp)
    segments = read_table(data_dir / "segments")
    first = sorted(u for u, seg in segments.items() if seg.split()[0] != piped)[0]
    rec, start, end = segments[first].split()
    segments[first] = f"{rec} {start} {float(end) + 60:.3f}"  # a minute past its recording
    write_table(data_dir / "segments", segments)
    out = tmp_path / "feats"
    status, stderr = run_stage("extract_feats", "--data_dir", data_dir, "--out_dir", out, "--feats_type", feats_type)
    assert status == 0 and "Traceback" not in stderr, stderr
    status, stderr = run_stage("merge_feats", "--data_dir", data_dir, "--out_dir", out, "--num_shards", "1")
    assert status == 0, stderr
    reasons = skip_reasons(out)
    assert reasons[first] == "segment past the end of its recording"
    assert {reasons[u] for u, seg in segments.items() if seg.split()[0] == piped} == \
        {"command failed with exit status 2"}
    assert "skipped (command failed with exit status 2, segment past the end of its recording)" in stderr
    assert sorted(read_table(out / "utt2num_frames")) == sorted(set(segments) - set(reasons))


def test_stage2_decoder_not_installed_is_one_line(data_dir: Path, tmp_path: Path) -> None:
    wav_scp = read_table(data_dir / "wav.scp")
    utt = sorted(wav_scp)[0]
    wav_scp[utt] = f"no-such-flac-decoder -d {wav_scp[utt]} |"
    write_table(data_dir / "wav.scp", wav_scp)
    assert_one_line_error(run_stage("extract_feats", "--data_dir", data_dir, "--out_dir", tmp_path / "feats",
                                    "--feats_type", "raw"),
                          r"wav\.scp command 'no-such-flac-decoder -d .*': command not found \(exit 127\); install it")


# -- stage 3: word alignment -------------------------------------------------------------------

@pytest.fixture
def aligned(data_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The data dir with a CTM of its words (1 s apart... inside the audio) and its features."""
    feats = tmp_path / "feats"
    assert _extract(data_dir, feats)[0] == 0
    assert run_stage("merge_feats", "--data_dir", data_dir, "--out_dir", feats, "--num_shards", "1")[0] == 0
    lines = []
    for utt, text in read_table(data_dir / "text").items():
        for i, word in enumerate(text.split()):
            lines.append(f"{utt} 1 {0.1 + 0.2 * i:.2f} 0.15 {word}\n")
    (data_dir / "ctm").write_text("".join(lines))
    return data_dir, feats


def _align(data_dir: Path, feats: Path, *extra: str) -> tuple[int, str]:
    return run_stage("align_words", "--data_dir", data_dir, "--feats_dir", feats, "--method", "ctm", *extra)


def test_stage3_missing_word_alignments_is_one_line(aligned: tuple[Path, Path]) -> None:
    data_dir, feats = aligned
    (data_dir / "ctm").unlink()
    assert_one_line_error(_align(data_dir, feats), r"ctm: file not found")


def _push_last_word_past_the_end(lines: list[str], utt: str, seconds: float) -> None:
    last = max(i for i, line in enumerate(lines) if line.startswith(f"{utt} "))
    fields = lines[last].split()
    fields[3] = f"{seconds + 5:.2f}"  # its duration
    lines[last] = " ".join(fields)


def _misspell_first_word(lines: list[str], utt: str, seconds: float) -> None:
    first = next(i for i, line in enumerate(lines) if line.startswith(f"{utt} "))
    lines[first] = " ".join(lines[first].split()[:4] + ["STRANGER"])


@pytest.mark.parametrize("edit, reason", [
    (_push_last_word_past_the_end, "word ends past the audio end"),
    (_misspell_first_word, "word differs from the transcript"),
])
def test_stage3_bad_word_times_are_counted_skips(aligned: tuple[Path, Path], edit, reason: str) -> None:
    data_dir, feats = aligned
    lines = (data_dir / "ctm").read_text().splitlines()
    utt = lines[0].split()[0]
    edit(lines, utt, int(read_table(feats / "utt2num_frames")[utt]) / 100)
    (data_dir / "ctm").write_text("".join(line + "\n" for line in lines))
    status, stderr = _align(data_dir, feats)
    assert status == 0, stderr
    aligned_utts = {line.split()[0] for line in (data_dir / "word_align").read_text().splitlines()}
    assert utt not in aligned_utts and len(aligned_utts) == 3
    assert f"skipped 1: {reason}" in stderr


# -- stages 4-5: teacher, task bank, targets ---------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    data = make_imitation_data(root / "data", num_utts=6)
    encoder, teacher = make_model_dirs(root)
    conf = root / "teacher.yaml"
    conf.write_text(yaml.safe_dump({"kind": "hf", "name": "random", "model_dir": str(teacher),
                                    "generation": {"max_new_tokens": 4, "batch_size": 4}}))
    text_dir = root / "text_dir"
    text_dir.mkdir()
    targets = [json.loads(line) for line in data["targets"].read_text().splitlines()]
    (text_dir / "text").write_text("".join(sorted({f"{r['utt']} {r['transcript']}\n" for r in targets})))
    return {**data, "encoder": encoder, "teacher": teacher, "teacher_conf": conf, "text_dir": text_dir,
            "root": root}


def _targets(models: dict[str, Path], out: Path, *extra: str | Path) -> tuple[int, str]:
    return run_stage("make_targets", "--data_dir", models["text_dir"], "--out_dir", out,
                     "--teacher_conf", models["teacher_conf"], "--tasks", "transcription", *extra)


def test_stage5_unknown_task_is_one_line(models: dict[str, Path], tmp_path: Path) -> None:
    assert_one_line_error(_targets(models, tmp_path / "t", "--tasks", "transcription,poetry"),
                          r"task 'poetry' is not in the task bank; tasks: transcription, ")


def test_stage5_unknown_heldout_task_in_the_task_config_is_one_line(models: dict[str, Path], tmp_path: Path) -> None:
    conf = tmp_path / "tasks.yaml"
    conf.write_text("heldout_tasks: [qa_place, poetry]\n")
    assert_one_line_error(_targets(models, tmp_path / "t", "--task_conf", conf),
                          r"held-out task 'poetry' is not in the task bank")


def test_stage5_teacher_dir_without_tokenizer_is_one_line(models: dict[str, Path], tmp_path: Path) -> None:
    teacher = tmp_path / "teacher"
    shutil.copytree(models["teacher"], teacher)
    for name in ("tokenizer.json", "tokenizer.model", "vocab.json"):
        (teacher / name).unlink(missing_ok=True)
    assert_one_line_error(run_stage("make_targets", "--data_dir", models["text_dir"], "--out_dir", tmp_path / "t",
                                    "--teacher_conf", models["teacher_conf"], "--set", f"model_dir={teacher}"),
                          r"teacher: no tokenizer .*save the tokenizer")


@pytest.mark.parametrize("content, pattern", [
    ("kind: hf\nname: x\nmodel_dir: /m\nbatchsize: 4\n", r"teacher\.yaml: unknown key 'batchsize'; valid keys: "),
    ("kind: hf\nname: x\nmodel_dir: /m\ngeneration: {max_new_tokens: many}\n",
     r"generation: max_new_tokens: expected int, got 'many'"),
    ("kind: hf\nname: [x\n", r"teacher\.yaml: not valid YAML"),
    ("kind: !!python/object/apply:os.system ['touch pwned']\n", r"teacher\.yaml: not valid YAML"),
])
def test_stage5_bad_teacher_config_is_one_line(models: dict[str, Path], tmp_path: Path, content: str,
                                               pattern: str) -> None:
    conf = tmp_path / "teacher.yaml"
    conf.write_text(content)
    assert_one_line_error(run_stage("make_targets", "--data_dir", models["text_dir"], "--out_dir", tmp_path / "t",
                                    "--teacher_conf", conf), pattern)
    assert not (Path.cwd() / "pwned").exists()


def test_stage5_non_utf8_text_is_one_line_and_keeps_answers(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "t"
    assert _targets(models, out)[0] == 0
    answers = digest(out / "shards")
    text = models["text_dir"] / "text"
    good = text.read_bytes()
    try:
        text.write_bytes(good + b"spk9-utt999 caf\xe9\n")
        assert_one_line_error(_targets(models, out), r"text:7: not valid UTF-8; re-encode the file as UTF-8")
    finally:
        text.write_bytes(good)
    assert digest(out / "shards") == answers


def test_stage5_transcripts_too_long_for_the_teacher_are_counted_and_left_out(models: dict[str, Path],
                                                                               tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    text = (models["text_dir"] / "text").read_text()
    (data / "text").write_text(text + "spk9-utt999 " + " ".join(["the long sentence goes on"] * 60) + "\n")
    out = tmp_path / "t"
    status, stderr = run_stage("make_targets", "--data_dir", data, "--out_dir", out,
                               "--teacher_conf", models["teacher_conf"], "--tasks", "transcription")
    assert status == 0, stderr[-2000:]
    assert "1 of 7 questions left out: their prompt is longer than the teacher's context (256 tokens)" in stderr
    assert run_stage("merge_targets", "--out_dir", out, "--num_shards", "1")[0] == 0
    utts = [json.loads(line)["utt"] for line in (out / "targets.jsonl").read_text().splitlines()]
    assert len(utts) == 6 and "spk9-utt999" not in utts


# -- stage 6: training -------------------------------------------------------------------------

def _train_config(path: Path, **optim) -> Path:
    config = {"model": {"connector": {"kind": "conv", "stride": 2, "hidden_size": 32}},
              "data": {"tasks": ["transcription", "qa_subject"]},
              "optim": {"learning_rate": 0.01, "warmup_steps": 1, "max_steps": 2, "batch_size": 2, **optim},
              "log_interval": 1, "save_interval": 1, "valid_examples": 2, "num_workers": 0}
    path.write_text(yaml.safe_dump(config))
    return path


def _train(models: dict[str, Path], config: Path, out: Path, feats: Path | None = None,
           targets: Path | None = None) -> tuple[int, str]:
    return run_stage("train", "--config", config, "--out_dir", out, "--train_feats", feats or models["feats"],
                     "--train_targets", targets or models["targets"], "--encoder_dir", models["encoder"],
                     "--teacher_conf", models["teacher_conf"])


def test_stage6_checkpoints_of_another_config_are_refused(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "sllm"
    assert _train(models, _train_config(tmp_path / "a.yaml"), out)[0] == 0
    before = digest(out / "checkpoints", out / "model.safetensors")
    assert_one_line_error(_train(models, _train_config(tmp_path / "b.yaml", learning_rate=0.02), out),
                          r"holds checkpoints of another config .*remove the dir or train under another tag")
    assert digest(out / "checkpoints", out / "model.safetensors") == before


def test_stage6_wrong_type_in_the_train_config_is_one_line(models: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("optim:\n  max_steps: ten\n")
    assert_one_line_error(_train(models, config, tmp_path / "sllm"), r"optim: max_steps: expected int, got 'ten'")


def test_stage6_non_finite_features_are_one_line(models: dict[str, Path], tmp_path: Path) -> None:
    feats = tmp_path / "feats"
    shutil.copytree(models["feats"], feats)
    mats = dict(kaldiio.load_scp(str(models["feats"] / "feats.scp")))
    bad = sorted(mats)[0]
    mats[bad] = mats[bad].copy()
    mats[bad][3, 5] = np.inf
    with kaldiio.WriteHelper(f"ark,scp:{feats / 'feats.ark'},{feats / 'feats.scp'}") as writer:
        for utt in sorted(mats):
            writer(utt, mats[utt])
    config = _train_config(tmp_path / "a.yaml", max_steps=6)  # an epoch: every utterance is read
    assert_one_line_error(_train(models, config, tmp_path / "sllm", feats=feats),
                          rf"features of '{bad}' .* are not finite; re-run stage 2")


def test_stage6_diverging_loss_stops_with_the_checkpoints_kept(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "sllm"
    config = _train_config(tmp_path / "a.yaml", learning_rate=1e30, max_steps=6, warmup_steps=0)
    error = assert_one_line_error(_train(models, config, out), r"the gradient is not finite at step (\d+)")
    step = int(re.search(r"at step (\d+)", error).group(1))
    assert step > 1 and len(list((out / "checkpoints").glob("step_*"))) >= 1


def test_stage6_too_long_utterances_are_counted_and_left_out(models: dict[str, Path], tmp_path: Path) -> None:
    frames = sorted(int(n) for n in read_table(models["feats"] / "utt2num_frames").values())
    config = _train_config(tmp_path / "a.yaml")
    data = yaml.safe_load(config.read_text())
    data["data"]["max_frames"] = frames[-1] - 1  # the longest utterance is over the limit
    config.write_text(yaml.safe_dump(data))
    status, stderr = _train(models, config, tmp_path / "sllm")
    assert status == 0, stderr[-2000:]
    over = sum(1 for n in frames if n > frames[-1] - 1)
    assert f"(0 outside utt_fraction, 0 no features, {2 * over} too long, 0 empty cut answers left out;" in stderr  # two tasks an utterance


def test_stage6_corrupt_targets_line_is_one_line(models: dict[str, Path], tmp_path: Path) -> None:
    targets = tmp_path / "targets.jsonl"
    targets.write_text(models["targets"].read_text() + '{"utt": "spk0-utt000", "task": "transcr\n')
    lineno = len(targets.read_text().splitlines())
    assert_one_line_error(_train(models, _train_config(tmp_path / "a.yaml"), tmp_path / "sllm", targets=targets),
                          rf"targets\.jsonl:{lineno}: not a targets line; re-run stage 5")


# -- stages 7-8: benchmark and scoring ---------------------------------------------------------

def test_stage8_answers_missing_or_repeated_are_one_line(models: dict[str, Path], tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    assert run_stage("build_bench", "--data_dir", models["text_dir"], "--out_dir", bench)[0] == 0
    teacher = tmp_path / "teacher_text" / "bench_x" / "hyp.jsonl"
    status, stderr = run_stage("infer", "--bench", bench / "bench.jsonl", "--input", "text",
                               "--out_dir", teacher.parent, "--teacher_conf", models["teacher_conf"])
    assert status == 0, stderr
    lines = teacher.read_text().splitlines()
    system = tmp_path / "sllm_x" / "bench_x" / "hyp.jsonl"
    system.parent.mkdir(parents=True)
    system.write_text("".join(line + "\n" for line in lines[:-3]))
    assert_one_line_error(run_stage("score", "--hyp", system, "--teacher_hyp", teacher),
                          r"this system's answers lack 3 item\(s\), e\.g\. .*re-run stage 7")
    system.write_text("".join(line + "\n" for line in lines + lines[:1]))
    assert_one_line_error(run_stage("score", "--hyp", system, "--teacher_hyp", teacher),
                          rf"hyp\.jsonl:{len(lines) + 1}: item .* answered twice; re-run stage 7")


def test_stage8_answers_of_an_unknown_task_are_one_line(models: dict[str, Path], tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    assert run_stage("build_bench", "--data_dir", models["text_dir"], "--out_dir", bench, "--max_utts", "1")[0] == 0
    hyp = tmp_path / "teacher_text" / "bench_x" / "hyp.jsonl"
    status, stderr = run_stage("infer", "--bench", bench / "bench.jsonl", "--input", "text",
                               "--out_dir", hyp.parent, "--teacher_conf", models["teacher_conf"])
    assert status == 0, stderr
    records = [json.loads(line) for line in hyp.read_text().splitlines()]
    records[0]["task"] = "poetry"  # answers made with another task bank
    hyp.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert_one_line_error(run_stage("score", "--hyp", hyp),
                          r"task 'poetry' of the answers is not in the task bank; use the --task_conf")
