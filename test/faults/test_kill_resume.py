"""Kill and resume, stage by stage, through the real recipe shell on a tiny mini corpus.

A reference run makes stages 1-8 one at a time, keeping a copy of the recipe after each and the
order in which each stage's files appeared (its progress points). Then each stage is started
again from the copy made before it and killed with SIGKILL (the whole process group: mtbi.sh,
run.pl and the python jobs) as soon as a seeded progress point is reached, three times, then
re-run to the end. The points are files the stage has yet to write, from the first three quarters
of what it still has to write, so every kill lands mid-work however fast the machine is. The
outputs must equal the reference's: byte-equal data, features and targets, equal weights and
losses for the trainings (deterministic on CPU), and no jsonl with a duplicated or missing line.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

import pytest
from test_recipes import BASELINES, TINY, make_recipe, quick_configs

pytestmark = pytest.mark.slow

KILLS_PER_STAGE = 3
POLL_SECONDS = 0.02
# The outputs of each stage (globs under the recipe dir) that must equal the reference's.
OUTPUTS = {
    1: ["downloads/**/*.flac", "downloads/**/*.trans.txt", "data/*/wav.scp", "data/*/text", "data/*/utt2spk",
        "data/*/spk2utt", "data/*/ctm"],
    2: ["dump/raw/*/utt2num_samples", "dump/raw/*/utt2num_frames", "dump/raw/*/wav.scp", "dump/raw/*/feats.yaml"],
    3: ["data/*/word_align"],
    4: ["exp/teacher/model.safetensors", "exp/teacher/tokenizer.json", "exp/encoder/model.safetensors",
        "exp/encoder/ctc_vocabulary.txt"],
    5: ["exp/targets/*/targets.jsonl"],
    6: ["exp/encoder_cache/*/feats.ark", "exp/sllm_*/model.safetensors", "exp/sllm_*/losses.jsonl"],
    7: ["exp/bench/*/bench.jsonl", "exp/*/bench_*/hyp.jsonl"],
    8: ["exp/*/bench_*/scores.json"],
}
# Fields of a losses.jsonl line that are timings, not results.
TIMING_FIELDS = ("tokens_per_s", "frames_per_s")


def _stage_command(recipe: Path, stage: int, options: list[str]) -> list[str]:
    return ["./run.sh", "--stage", str(stage), "--stop_stage", str(stage), *options]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("LIBRISPEECH", "COMMONVOICE")}


def _files(recipe: Path) -> set[str]:
    """The files under ``recipe``, less temporaries (names ending in .tmp, and what is inside such dirs)."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(recipe):
        dirnames[:] = [d for d in dirnames if not d.endswith(".tmp")]
        found.update(os.path.relpath(os.path.join(dirpath, f), recipe) for f in filenames if not f.endswith(".tmp"))
    return found


def _start(recipe: Path, command: list[str], stderr: IO = subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=recipe, env=_env(), stdout=subprocess.DEVNULL, stderr=stderr,
                            start_new_session=True)


def _run(recipe: Path, command: list[str]) -> list[str]:
    """Run ``command`` to the end; return the files it made, in the order they appeared (TensorBoard's
    event files, named by time and host, left out)."""
    seen = _files(recipe)
    appeared: list[str] = []
    with tempfile.TemporaryFile("w+") as stderr:
        proc = _start(recipe, command, stderr)
        while proc.poll() is None:
            new = _files(recipe) - seen
            appeared += sorted(new)
            seen |= new
            time.sleep(POLL_SECONDS)
        stderr.seek(0)
        assert proc.returncode == 0, stderr.read()[-3000:]
    final = _files(recipe)
    appeared += sorted(final - seen)
    return [path for path in appeared if path in final and "tfevents" not in path]


def _run_and_kill(recipe: Path, command: list[str], point: str) -> bool:
    """Start ``command`` in its own process group and SIGKILL the group as soon as the file ``point``
    exists; False when the command ended before."""
    proc = _start(recipe, command)
    while proc.poll() is None and not (recipe / point).exists():
        time.sleep(POLL_SECONDS)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc.returncode == -signal.SIGKILL


def _copy(src: Path, dst: Path) -> Path:
    """A copy of a recipe dir beside it (its links to TEMPLATE are relative and stay valid)."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _outputs(recipe: Path, stage: int, *ran_in: Path) -> dict[str, bytes]:
    """The stage's output files under ``recipe``, with the paths of the recipe dirs the stage and
    those before it ran in (``ran_in``, default ``recipe``) and training timings taken out."""
    ran_in = ran_in or (recipe,)
    found = {}
    for pattern in OUTPUTS[stage]:
        for path in sorted(recipe.glob(pattern)):
            data = path.read_bytes()
            if path.name == "losses.jsonl":
                records = [json.loads(line) for line in data.splitlines()]
                data = json.dumps([{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]).encode()
            elif path.suffix in (".scp", ".jsonl", ".json", "") or path.name.endswith(".txt"):
                for directory in ran_in:
                    data = data.replace(str(directory.resolve()).encode(), b"<recipe>").replace(
                        str(directory).encode(), b"<recipe>")
            found[str(path.relative_to(recipe))] = data
    return found


def _assert_no_repeated_lines(recipe: Path) -> int:
    """No jsonl under exp/ repeats a (utt, task, prompt_id), or a training or validation loss of
    a step; returns the number of lines checked."""
    checked = 0
    for path in recipe.glob("exp/**/*.jsonl"):
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        keys = [(r["step"], "valid_loss" in r) if path.name == "losses.jsonl"
                else (r.get("utt"), r.get("task"), r.get("prompt_id")) for r in records]
        assert len(keys) == len(set(keys)), f"{path}: repeated lines"
        checked += len(keys)
    return checked


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Stages 1-8 run one at a time, uninterrupted: the files each made, in order, and a copy of
    the recipe after each."""
    root = tmp_path_factory.mktemp("faults")
    recipe = make_recipe(root, "librispeech_mtbi", "librispeech_mtbi")
    conf = quick_configs(recipe / "conf", root / "quick")
    train_confs = " ".join(str(conf[f"train_{t}"]) for t in BASELINES)
    options = ["--nj", "2", "--local_data_opts", TINY, "--teacher_conf", str(conf["teacher_tiny"]),
               "--encoder_conf", str(conf["encoder_tiny"]), "--train_confs", train_confs]
    snapshots, progress = {0: _copy(recipe, recipe.parent / "after_0")}, {}
    for stage in range(1, 9):
        progress[stage] = _run(recipe, _stage_command(recipe, stage, options))
        snapshots[stage] = _copy(recipe, recipe.parent / f"after_{stage}")
    return {"recipe": recipe, "snapshots": snapshots, "progress": progress, "options": options}


@pytest.mark.parametrize("stage", range(1, 9))
def test_a_killed_stage_resumes_to_the_uninterrupted_outputs(reference: dict, stage: int, record_property) -> None:
    expected = _outputs(reference["snapshots"][stage], stage, reference["recipe"])
    assert expected, f"stage {stage}: no outputs found by {OUTPUTS[stage]}"
    before = reference["snapshots"][stage - 1]
    work = _copy(before, before.parent / f"killed_{stage}")
    command = _stage_command(work, stage, reference["options"])
    rng = random.Random(stage)
    killed = 0
    for _ in range(KILLS_PER_STAGE):
        present = _files(work)
        ahead = [path for path in reference["progress"][stage] if path not in present]
        if not ahead:
            break
        killed += _run_and_kill(work, command, rng.choice(ahead[:max(1, len(ahead) * 3 // 4)]))
    assert killed >= 1, f"stage {stage} finished before every kill; its progress points: {reference['progress'][stage]}"
    _run(work, command)
    leftovers = [str(p.relative_to(work)) for p in work.rglob(".*.tmp")]
    assert not leftovers, f"stage {stage}: temporary files of the killed runs are left: {leftovers[:3]}"
    # wav.scp of stage 1 names the audio in the reference's recipe dir, which the copies keep.
    outputs = _outputs(work, stage, work, reference["recipe"])
    assert sorted(outputs) == sorted(expected)
    for name, data in outputs.items():
        assert data == expected[name], f"stage {stage}: {name} differs from the uninterrupted run's"
    lines = _assert_no_repeated_lines(work)
    # Read by tools/reliability_report.py from the JUnit XML.
    for key, value in (("stage", stage), ("kills", killed), ("files_compared", len(outputs)),
                       ("jsonl_lines_checked", lines)):
        record_property(key, value)
