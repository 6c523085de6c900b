"""The recipes in tmp dirs, run through the real shell (run.sh -> mtbi.sh -> run.pl -> mtbi.bin.*),
and the one shared run of the LibriSpeech tiny recipe that the recipe tests and the
kill-and-resume suite (test/faults) read (conftest.py's session fixture ``tiny_recipe``).

A recipe is made in a tmp dir with egs/TEMPLATE/setup.sh and given the recipe's own run.sh, db.sh
and local/data.sh, so the repository's egs/ stays clean.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from mtbi.data.datadir import read_table, write_table

TINY = "--mini_train 12 --mini_dev 4 --mini_test 4"
BASELINES = ("asr_sft", "blsp", "mtbi", "mtbi_interleave")
QUICK_KEYS = {  # a few training steps each: the plumbing, not the quality
    "teacher_tiny": {"tiny": {"steps": 20, "hidden_size": 64}},
    "encoder_tiny": {"ctc_train": {"steps": 4, "batch_size": 4}, "conformer": {"num_blocks": 1}},
}
# The baselines made quick through mtbi.sh's --train_opts (dotted overrides of conf/train_*.yaml).
QUICK_TRAINING = "--set optim.max_steps=3 optim.batch_size=4 save_interval=2"
POLL_SECONDS = 0.02
REPO_ROOT = Path(__file__).resolve().parents[1]


def recipe_env() -> dict[str, str]:
    """This environment without corpus paths, so that the recipes build the mini corpus."""
    return {k: v for k, v in os.environ.items() if k not in ("LIBRISPEECH", "COMMONVOICE")}


def make_recipe(tmp_path: Path, name: str, source: str | None = None) -> Path:
    """``tmp_path/egs/<name>`` made by setup.sh, with run.sh, db.sh and local/data.sh of ``egs/<source>``."""
    recipe = tmp_path / "egs" / name
    subprocess.run([str(REPO_ROOT / "egs" / "TEMPLATE" / "setup.sh"), str(recipe)], check=True,
                   capture_output=True)
    if source:
        for rel in ("run.sh", "db.sh", "local/data.sh"):
            shutil.copy(REPO_ROOT / "egs" / source / rel, recipe / rel)
    return recipe


def run(recipe: Path, *args: str, script: str = "./run.sh") -> subprocess.CompletedProcess:
    """``script args`` in the recipe dir, to the end, its output captured."""
    return subprocess.run([script, *args], cwd=recipe, env=recipe_env(), capture_output=True, text=True)


def quick_configs(conf_dir: Path, out_dir: Path) -> dict[str, Path]:
    """Configs ``<name>.yaml`` in ``out_dir`` that inherit ``conf_dir/<name>.yaml`` and change ``QUICK_KEYS[name]``."""
    out_dir.mkdir(exist_ok=True)
    paths = {}
    for name, changed in QUICK_KEYS.items():
        paths[name] = out_dir / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump({"base": str(conf_dir / f"{name}.yaml"), **changed}))
    return paths


def to_recordings_and_segments(data_dir: Path, audio_dir: Path) -> None:
    """Rewrite a data dir of one file per utterance as one recording per two utterances of a
    speaker (WAV files; every other one read through a ``cat ... |`` pipe) and ``segments``."""
    audio_dir.mkdir(parents=True, exist_ok=True)
    wav_scp = read_table(data_dir / "wav.scp")
    recordings, segments = {}, {}
    for speaker, utts in read_table(data_dir / "spk2utt").items():
        utts = utts.split()
        for first in range(0, len(utts), 2):
            name = f"{speaker}-rec{first // 2}"
            pieces, start = [], 0
            for utt in utts[first:first + 2]:
                samples, rate = sf.read(wav_scp[utt], dtype="int16")
                segments[utt] = f"{name} {start / rate:.6f} {(start + len(samples)) / rate:.6f}"
                pieces.append(samples)
                start += len(samples)
            path = audio_dir / f"{name}.wav"
            sf.write(path, np.concatenate(pieces), rate, subtype="PCM_16")
            recordings[name] = f"cat {path} |" if len(recordings) % 2 else str(path)
    write_table(data_dir / "wav.scp", recordings)
    write_table(data_dir / "segments", segments)


def files_under(recipe: Path) -> set[str]:
    """The files under ``recipe``, less temporaries (names ending in .tmp, and what is inside such dirs)."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(recipe):
        dirnames[:] = [d for d in dirnames if not d.endswith(".tmp")]
        found.update(os.path.relpath(os.path.join(dirpath, f), recipe) for f in filenames if not f.endswith(".tmp"))
    return found


def start(recipe: Path, command: list[str], stdout: object = subprocess.DEVNULL,
          stderr: object = subprocess.DEVNULL) -> subprocess.Popen:
    """``command`` started in the recipe dir as the leader of a new process group (killed as one)."""
    return subprocess.Popen(command, cwd=recipe, env=recipe_env(), stdout=stdout, stderr=stderr,
                            start_new_session=True)


@dataclass
class StageRun:
    """A command run to the end: the files it made in the order they appeared (its progress
    points; TensorBoard's event files, named by time and host, left out) and its output."""

    progress: list[str]
    stdout: str
    stderr: str


def run_and_record(recipe: Path, command: list[str]) -> StageRun:
    """Run ``command`` in the recipe dir to the end, watching the files appear; fails if it fails."""
    seen = files_under(recipe)
    appeared: list[str] = []
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        proc = start(recipe, command, stdout, stderr)
        while proc.poll() is None:
            new = files_under(recipe) - seen
            appeared += sorted(new)
            seen |= new
            time.sleep(POLL_SECONDS)
        stdout.seek(0)
        stderr.seek(0)
        done = StageRun([], stdout.read(), stderr.read())
    assert proc.returncode == 0, f"{' '.join(command)} failed:\n{done.stderr[-3000:]}"
    final = files_under(recipe)
    appeared += sorted(final - seen)
    done.progress = [path for path in appeared if path in final and "tfevents" not in path]
    return done


def copy_recipe(src: Path, dst: Path) -> Path:
    """A copy of a recipe dir (its links to TEMPLATE are relative: put it beside ``src`` or as deep)."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


@dataclass
class TinyRecipe:
    """Stages 1-8 of the LibriSpeech recipe on a tiny mini corpus (12 train, 4 dev, 4 test
    utterances), run once, one stage at a time, with the same ``options`` each time.

    After stage 1 the data dirs are rewritten as ESPnet and Kaldi recipes write them: recordings
    cut by ``segments``, half of them read through pipes (``to_recordings_and_segments``), so
    stages 2-8 read those. The teacher and encoder are quick (``QUICK_KEYS``), the four baselines
    train 3 steps with two seeds each, through ``--train_opts``; targets and systems run two jobs
    at once. After stage 6, stages 4-6 run once more (``rerun``, which should find their work
    done). ``recipe`` holds the state after stage 8: tests read it and never write to it (they
    write to a ``copy``).
    """

    recipe: Path
    options: list[str]  # all but --seeds
    seeds: int
    runs: dict[int, StageRun] = field(default_factory=dict)  # each stage's run
    before: dict[int, Path] = field(default_factory=dict)  # a copy of the recipe dir as each stage found it
    after: dict[int, Path] = field(default_factory=dict)  # a copy after each stage
    flacs: dict[str, Path] = field(default_factory=dict)  # the FLAC file of each test utterance, from stage 1
    rerun: subprocess.CompletedProcess | None = None  # stages 4-6 run again after stage 6
    rerun_dir: Path | None = None  # a copy of the recipe dir after that re-run

    def args(self, first: int, last: int | None = None) -> list[str]:
        """run.sh's arguments for stages ``first`` to ``last`` (default ``first``) with these options."""
        return ["--stage", str(first), "--stop_stage", str(last or first), *self.options, "--seeds", str(self.seeds)]

    def command(self, stage: int) -> list[str]:
        """The command that ran ``stage``, to run in a copy."""
        return ["./run.sh", *self.args(stage)]

    def copy(self, stage: int, dst: Path) -> Path:
        """A copy of the recipe dir after ``stage`` at ``dst``, which must be as deep below tmp as
        ``recipe`` (e.g. ``tmp_path/egs/<name>``) for its links to TEMPLATE to hold."""
        dst.parent.mkdir(parents=True, exist_ok=True)
        return copy_recipe(self.after[stage], dst)

    def copy_before(self, stage: int, dst: Path) -> Path:
        """A copy of the recipe dir as ``stage`` found it, at ``dst`` (as in ``copy``)."""
        dst.parent.mkdir(parents=True, exist_ok=True)
        return copy_recipe(self.before[stage], dst)


def make_tiny_recipe(root: Path) -> TinyRecipe:
    """Run ``TinyRecipe``'s stages in ``root``, keeping its copies beside the recipe dir."""
    recipe = make_recipe(root, "librispeech_mtbi", "librispeech_mtbi")
    conf = quick_configs(recipe / "conf", root / "quick")
    options = ["--nj", "2", "--local_data_opts", TINY, "--teacher_conf", str(conf["teacher_tiny"]),
               "--encoder_conf", str(conf["encoder_tiny"]), "--gen_nj", "2", "--system_nj", "2",
               "--train_opts", QUICK_TRAINING, "--compare_opts", "--markdown RESULTS.md"]
    tiny = TinyRecipe(recipe, options, seeds=2)
    for stage in range(1, 9):
        if stage == 2:
            test_set = read_table(recipe / "data" / "test_clean" / "wav.scp")
            tiny.flacs = {utt: recipe / path for utt, path in test_set.items()}
            for dset in ("train_clean_100", "dev_clean", "test_clean"):
                to_recordings_and_segments(recipe / "data" / dset, recipe / "downloads" / "recordings")
        tiny.before[stage] = tiny.after[stage - 1] if stage > 2 else copy_recipe(recipe, recipe.parent / f"before_{stage}")
        tiny.runs[stage] = run_and_record(recipe, tiny.command(stage))
        tiny.after[stage] = copy_recipe(recipe, recipe.parent / f"after_{stage}")
        if stage == 6:
            # Stages 4-6 again, which find their work done, in the recipe dir they ran in: stage 4's
            # done stamp names it (the encoder's feature dirs), so in a copy elsewhere the encoder
            # and what follows from it would be made again. Then the recipe dir is put back as
            # stage 6 left it, for the stages after it.
            tiny.rerun = run(recipe, *tiny.args(4, 6))
            tiny.rerun_dir = copy_recipe(recipe, recipe.parent / "rerun_4_to_6")
            shutil.rmtree(recipe)
            copy_recipe(tiny.after[6], recipe)
    return tiny
