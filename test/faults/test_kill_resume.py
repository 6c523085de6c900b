"""Kill and resume, stage by stage, through the real recipe shell on a tiny mini corpus.

A reference run makes stages 1-8 one at a time (timing each and keeping a copy of the recipe
after each). Then each stage is started again from the copy made before it, killed with SIGKILL
(the whole process group: mtbi.sh, run.pl and the python jobs) at seeded random points within its
reference time, and finally re-run to the end. Its outputs must equal the reference's: byte-equal
data, features and targets, equal weights and losses for the trainings (deterministic on CPU),
and no jsonl with a duplicated or missing line.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from test_recipes import TINY, make_recipe, quick_configs

pytestmark = pytest.mark.slow

KILLS_PER_STAGE = 3
# The outputs of each stage (globs under the recipe dir) that must equal the reference's.
OUTPUTS = {
    1: ["downloads/**/*.flac", "downloads/**/*.trans.txt", "data/*/wav.scp", "data/*/text", "data/*/utt2spk",
        "data/*/spk2utt", "data/*/ctm"],
    2: ["dump/logmel80/*/feats.scp", "dump/logmel80/*/utt2num_frames", "dump/logmel80/*/shards/feats.*.ark"],
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


def _run(recipe: Path, command: list[str]) -> float:
    start = time.monotonic()
    result = subprocess.run(command, cwd=recipe, env=_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return time.monotonic() - start


def _start_and_kill(recipe: Path, command: list[str], delay: float) -> bool:
    """Start ``command`` in its own process group and SIGKILL the group after ``delay`` seconds;
    False when it finished before."""
    proc = subprocess.Popen(command, cwd=recipe, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def _copy(src: Path, dst: Path) -> Path:
    """A copy of a recipe dir beside it (its links to TEMPLATE are relative and stay valid)."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _outputs(recipe: Path, stage: int, ran_in: Path | None = None) -> dict[str, bytes]:
    """The stage's output files under ``recipe``, with the path of the recipe dir the stage ran
    in (``ran_in``, default ``recipe``) and training timings taken out."""
    ran_in = ran_in or recipe
    found = {}
    for pattern in OUTPUTS[stage]:
        for path in sorted(recipe.glob(pattern)):
            data = path.read_bytes()
            if path.name == "losses.jsonl":
                records = [json.loads(line) for line in data.splitlines()]
                data = json.dumps([{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]).encode()
            elif path.suffix in (".scp", ".jsonl", ".json", "") or path.name.endswith(".txt"):
                data = data.replace(str(ran_in.resolve()).encode(), b"<recipe>").replace(str(ran_in).encode(),
                                                                                        b"<recipe>")
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
    """Stages 1-8 run one at a time, uninterrupted: their times and a copy of the recipe after each."""
    root = tmp_path_factory.mktemp("faults")
    recipe = make_recipe(root, "librispeech_mtbi", "librispeech_mtbi")
    conf = quick_configs(recipe, root)
    train_confs = " ".join(str(conf[f"train_{t}"]) for t in ("asr_sft", "blsp", "mtbi", "mtbi_interleave"))
    options = ["--nj", "2", "--local_data_opts", TINY, "--teacher_conf", str(conf["teacher_tiny"]),
               "--encoder_conf", str(conf["encoder_tiny"]), "--train_confs", train_confs]
    snapshots, seconds = {0: _copy(recipe, recipe.parent / "after_0")}, {}
    for stage in range(1, 9):
        seconds[stage] = _run(recipe, _stage_command(recipe, stage, options))
        snapshots[stage] = _copy(recipe, recipe.parent / f"after_{stage}")
    return {"recipe": recipe, "snapshots": snapshots, "seconds": seconds, "options": options}


@pytest.mark.parametrize("stage", range(1, 9))
def test_a_killed_stage_resumes_to_the_uninterrupted_outputs(reference: dict, stage: int, record_property) -> None:
    expected = _outputs(reference["snapshots"][stage], stage, ran_in=reference["recipe"])
    assert expected, f"stage {stage}: no outputs found by {OUTPUTS[stage]}"
    before = reference["snapshots"][stage - 1]
    work = _copy(before, before.parent / f"killed_{stage}")
    command = _stage_command(work, stage, reference["options"])
    rng = random.Random(stage)
    duration = reference["seconds"][stage]
    delays = sorted(rng.uniform(0.15, 0.9) * duration for _ in range(KILLS_PER_STAGE))
    killed = sum(_start_and_kill(work, command, delay) for delay in delays)
    assert killed >= 1, f"stage {stage} finished before every kill ({duration:.1f} s)"
    _run(work, command)
    leftovers = [str(p.relative_to(work)) for p in work.rglob(".*.tmp")]
    assert not leftovers, f"stage {stage}: temporary files of the killed runs are left: {leftovers[:3]}"
    outputs = _outputs(work, stage)
    assert sorted(outputs) == sorted(expected)
    for name, data in outputs.items():
        assert data == expected[name], f"stage {stage}: {name} differs from the uninterrupted run's"
    lines = _assert_no_repeated_lines(work)
    # Read by tools/reliability_report.py from the JUnit XML.
    for key, value in (("stage", stage), ("kills", killed), ("files_compared", len(outputs)),
                       ("jsonl_lines_checked", lines)):
        record_property(key, value)
