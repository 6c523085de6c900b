"""Kill and resume, stage by stage, through the real recipe shell on a tiny mini corpus.

The reference is the shared run of the tiny recipe (conftest.py's tiny_recipe): stages 1-8 one at
a time, with a copy of the recipe before and after each and the order in which each stage's files
appeared (its progress points). Each stage is started again in a copy of the recipe as the stage
found it and killed with SIGKILL (the whole process group: mtbi.sh, run.pl and the python jobs) as
soon as a seeded progress point is reached, three times, then re-run to the end. The points are
files the stage has yet to write, from the first three quarters of what it still has to write, so
every kill lands mid-work however fast the machine is. The outputs must equal the reference's:
byte-equal data, features and targets, equal weights and losses for the trainings (deterministic
on CPU), and no jsonl with a duplicated or missing line.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Callable

import pytest
from recipe_fixtures import POLL_SECONDS, TinyRecipe, files_under, run_and_record, start

pytestmark = pytest.mark.recipe

KILLS_PER_STAGE = 3
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


def _run_and_kill(recipe: Path, command: list[str], point: str) -> bool:
    """Start ``command`` in its own process group and SIGKILL the group as soon as the file ``point``
    exists; False when the command ended before."""
    proc = start(recipe, command)
    while proc.poll() is None and not (recipe / point).exists():
        time.sleep(POLL_SECONDS)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc.returncode == -signal.SIGKILL


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


@pytest.mark.parametrize("stage", range(1, 9))
def test_a_killed_stage_resumes_to_the_uninterrupted_outputs(tiny_recipe: TinyRecipe, tmp_path: Path, stage: int,
                                                              record_property: Callable[[str, object], None]) -> None:
    expected = _outputs(tiny_recipe.after[stage], stage, tiny_recipe.recipe)
    assert expected, f"stage {stage}: no outputs found by {OUTPUTS[stage]}"
    work = tiny_recipe.copy_before(stage, tmp_path / "egs" / tiny_recipe.recipe.name)
    command = tiny_recipe.command(stage)
    progress = tiny_recipe.runs[stage].progress
    rng = random.Random(stage)
    killed = 0
    for _ in range(KILLS_PER_STAGE):
        present = files_under(work)
        ahead = [path for path in progress if path not in present]
        if not ahead:
            break
        killed += _run_and_kill(work, command, rng.choice(ahead[:max(1, len(ahead) * 3 // 4)]))
    assert killed >= 1, f"stage {stage} finished before every kill; its progress points: {progress}"
    run_and_record(work, command)
    leftovers = [str(p.relative_to(work)) for p in work.rglob(".*.tmp")]
    assert not leftovers, f"stage {stage}: temporary files of the killed runs are left: {leftovers[:3]}"
    # wav.scp of stage 1 (and the recordings after it) name the audio in the reference's recipe
    # dir, which the copies keep.
    outputs = _outputs(work, stage, work, tiny_recipe.recipe)
    assert sorted(outputs) == sorted(expected)
    for name, data in outputs.items():
        assert data == expected[name], f"stage {stage}: {name} differs from the uninterrupted run's"
    lines = _assert_no_repeated_lines(work)
    # Read by tools/reliability_report.py from the JUnit XML.
    for key, value in (("stage", stage), ("kills", killed), ("files_compared", len(outputs)),
                       ("jsonl_lines_checked", lines)):
        record_property(key, value)
