"""mtbi.env and mtbi.bin.record_env: the environment of a stage run, appended to an env.txt."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import torch
import transformers
from conftest import REPO_ROOT

from mtbi import env

needs_git = pytest.mark.skipif(shutil.which("git") is None or not (REPO_ROOT / ".git").exists(),
                               reason="needs git and a git checkout of mtbi")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A fresh clone of this repository (its committed files only)."""
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(tmp_path / "clone")], check=True)
    return tmp_path / "clone"


def test_environment_holds_the_values_of_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # asks for the CUDA check on any machine
    monkeypatch.setenv("MTBI_GPUS", "0 1")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    found = env.environment()
    assert found["python"] == sys.version and found["host"] == socket.gethostname()
    assert found["torch"] == torch.__version__ and found["torch_cuda"] == (torch.version.cuda or "none")
    assert found["transformers"] == transformers.__version__ and found["numpy"] == numpy.__version__
    assert found["CUDA_VISIBLE_DEVICES"] == "0" and found["MTBI_GPUS"] == "0 1" and "SLURM_JOB_ID" not in found
    assert found["cuda_available"] == str(torch.cuda.is_available()).lower()
    if torch.cuda.is_available():
        assert found["gpus"] == ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        assert found["nvidia_driver"] != ""
    if (REPO_ROOT / ".git").exists() and shutil.which("git"):
        assert found["mtbi_commit"] == _git(REPO_ROOT, "rev-parse", "HEAD")
        assert found["mtbi_dirty"] in ("true", "false")


def test_recording_imports_neither_transformers_nor_torch_without_gpus(tmp_path: Path) -> None:
    """Without nvidia-smi and CUDA_VISIBLE_DEVICES, recording a stage costs one light Python start."""
    code = "import sys, mtbi.env; mtbi.env.record(sys.argv[1], 1); print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    run_env = {"PATH": str(Path(sys.executable).parent)}  # neither git nor nvidia-smi
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "env.txt")], env=run_env,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    block = env.read_blocks((tmp_path / "env.txt").read_text())[0]
    assert block["mtbi_commit"] == block["mtbi_dirty"] == "unknown"  # no git on the PATH
    assert block["cuda_available"].startswith("not checked")


def test_gpus_and_driver_where_cuda_is_available(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU lines, on any machine: two GPUs through torch.cuda, the driver from a stand-in nvidia-smi."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text('#!/bin/sh\n[ "$1" = --query-gpu=driver_version ] && printf "550.54.15\\n550.54.15\\n"\n')
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{Path(sys.executable).parent}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"NVIDIA H200 #{i}")
    found = env.environment()
    assert (found["cuda_available"], found["gpus"], found["nvidia_driver"]) == \
        ("true", "NVIDIA H200 #0, NVIDIA H200 #1", "550.54.15")
    smi.write_text("#!/bin/sh\nexit 9\n")
    assert env.environment()["nvidia_driver"] == "unknown"


@needs_git
def test_git_state_of_a_clean_and_a_dirty_clone(clone: Path) -> None:
    commit = _git(clone, "rev-parse", "HEAD")
    assert env.git_state(clone) == (commit, "false")
    readme = clone / "README.md"
    text = readme.read_text()
    readme.write_text(text + "an uncommitted line\n")
    assert env.git_state(clone) == (commit, "true")
    readme.write_text(text)
    assert env.git_state(clone) == (commit, "false")
    (clone / "mtbi" / "not_yet_added.py").write_text("")
    assert env.git_state(clone) == (commit, "true")


@needs_git
def test_git_state_unknown_without_a_checkout_or_git(clone: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert env.git_state(clone / "mtbi") == ("unknown", "unknown")  # inside a checkout is not its top
    monkeypatch.setenv("PATH", str(clone))
    assert env.git_state(clone) == ("unknown", "unknown")  # no git
    monkeypatch.undo()
    shutil.rmtree(clone / ".git")
    assert env.git_state(clone) == ("unknown", "unknown")  # a copy without .git
    assert env.git_state(clone / "missing") == ("unknown", "unknown")


def test_blocks_round_trip_and_stage_runs_append(tmp_path: Path) -> None:
    found = {"time": "2025-06-01T12:00:00+02:00", "host": "node1", "python": "3.11.7 (main)\n[GCC 12.2.0]"}
    assert env.read_blocks(env.format_block(found, 3)) == [{**found, "stage": "3", "python": "3.11.7 (main) [GCC 12.2.0]"}]
    path = tmp_path / "exp" / "log" / "env.txt"
    first, second = env.record(path, 1), env.record(path, 2)
    assert path.read_text() == first + second
    blocks = env.read_blocks(path.read_text())
    assert [b["stage"] for b in blocks] == ["1", "2"]
    assert all(b["python"] == sys.version.replace("\n", " ") and "torch_cuda" in b for b in blocks)


def test_bin_appends_whole_blocks_from_concurrent_runs(tmp_path: Path) -> None:
    out = tmp_path / "exp" / "log" / "env.txt"
    runs = [subprocess.Popen([sys.executable, "-m", "mtbi.bin.record_env", "--out", str(out), "--stage", str(n)],
                             cwd=tmp_path, stderr=subprocess.PIPE, text=True) for n in (5, 6, 7)]
    assert [run.wait() for run in runs] == [0, 0, 0], [run.stderr.read() for run in runs]
    blocks = env.read_blocks(out.read_text())
    assert sorted(b["stage"] for b in blocks) == ["5", "6", "7"]
    assert all(b.keys() == blocks[0].keys() and b["torch"] == torch.__version__ for b in blocks)
