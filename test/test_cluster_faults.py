"""Cluster faults of stage 6: preemption signals (SIGTERM, SIGUSR1) stop training with a checkpoint
that the same command resumes to the uninterrupted weights; one run per experiment dir (.lock)."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import torch
import yaml
from safetensors.torch import load_file
from sllm_fixtures import make_training_setup
from test_trainer import losses, train_command

from mtbi.bin import train
from mtbi.errors import MtbiError
from mtbi.run_lock import LOCK_FILE, RunLock
from mtbi.train import sllm_dir
from mtbi.train.preemption import EXIT_STOPPED, StopSignals

MAX_STEPS = 12
SAVE_INTERVAL = 5  # so a stop mostly lands between checkpoints and writes its own


def write_lock(directory: Path, pid: int, host: str | None = None, started: int | None = None,
               slurm_job: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / LOCK_FILE
    lock.write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid, "since": "2026-12-01T07:00:00",
                                "started": started, "slurm_job": slurm_job}))
    return lock


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.fixture
def live_pid() -> Iterator[int]:
    process = subprocess.Popen(["sleep", "600"])
    yield process.pid
    process.kill()
    process.wait()


# -- the lock module alone -----------------------------------------------------------------------
def test_a_lock_names_its_holder_and_refuses_a_second_run_until_released(tmp_path: Path) -> None:
    with RunLock(tmp_path / "exp") as lock:
        holder = json.loads(lock.path.read_text())
        assert (holder["host"], holder["pid"]) == (socket.gethostname(), os.getpid())
        with pytest.raises(MtbiError, match=rf"^{tmp_path / 'exp'} is in use by pid {os.getpid()} on host "
                                            rf"{re.escape(socket.gethostname())} since {holder['since']} "
                                            rf"\({lock.path}\); wait for it or remove the lock if that run is dead$"):
            RunLock(tmp_path / "exp").acquire()
    assert not lock.path.exists()
    with RunLock(tmp_path / "exp"):  # free again
        pass


def test_a_lock_of_a_dead_process_or_a_reused_pid_is_taken_over(tmp_path: Path, live_pid: int,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    pid = dead_pid()
    write_lock(tmp_path, pid)
    with caplog.at_level(logging.WARNING), RunLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert f"taking over the lock of pid {pid} on host {socket.gethostname()}" in caplog.text
    write_lock(tmp_path, live_pid, started=1)  # the pid is alive, but it is another process now
    with RunLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_a_lock_of_a_live_process_or_another_host_is_refused(tmp_path: Path, live_pid: int) -> None:
    write_lock(tmp_path / "a", live_pid)
    with pytest.raises(MtbiError, match=f"is in use by pid {live_pid} on host "):
        RunLock(tmp_path / "a").acquire()
    write_lock(tmp_path / "b", dead_pid(), host="node7")  # its pid cannot be checked from here
    with pytest.raises(MtbiError, match="is in use by pid [0-9]+ on host node7 since 2026-12-01T07:00:00"):
        RunLock(tmp_path / "b").acquire()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / LOCK_FILE).write_text("{")
    with pytest.raises(MtbiError, match=r"c/\.lock is not a lock .*; remove it if no run is using"):
        RunLock(tmp_path / "c").acquire()


def test_a_requeued_slurm_job_takes_over_the_lock_of_its_earlier_start(tmp_path: Path, live_pid: int,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    write_lock(tmp_path / "a", live_pid, host="node7", slurm_job="4242.0")  # the start before the requeue
    lock = RunLock(tmp_path / "a")
    lock.acquire()
    assert json.loads((tmp_path / "a" / LOCK_FILE).read_text())["slurm_job"] == "4242.1"
    lock.release()
    for other in ("4243.0", "4242.1"):  # another job, or this very start: a run that may live
        write_lock(tmp_path / other, live_pid, host="node7", slurm_job=other)
        with pytest.raises(MtbiError, match="is in use by pid [0-9]+ on host node7"):
            RunLock(tmp_path / other).acquire()


def test_a_held_lock_is_released_at_exit_and_only_by_its_holder(tmp_path: Path) -> None:
    code = f"from mtbi.run_lock import RunLock\nwith RunLock({str(tmp_path)!r}):\n    raise SystemExit(3)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 3
    assert not (tmp_path / LOCK_FILE).exists()
    lock = RunLock(tmp_path)
    lock.acquire()
    other = write_lock(tmp_path, 1, host="node7")  # replaced by hand: not ours to remove
    lock.release()
    assert other.exists()


def test_stop_signals_are_recorded_inside_and_act_as_before_outside() -> None:
    before = signal.getsignal(signal.SIGUSR1)
    with StopSignals() as signals:
        assert signals.agreed(lambda t: t, torch.device("cpu")) is None
        os.kill(os.getpid(), signal.SIGUSR1)
        assert signals.agreed(lambda t: t, torch.device("cpu")) == "SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) is before


# -- stage 6 ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sllm(tmp_path_factory: pytest.TempPathFactory) -> dict:
    setup = make_training_setup(tmp_path_factory.mktemp("faults"))
    setup["config"] = setup["root"] / "train.yaml"
    setup["config"].write_text(yaml.safe_dump({
        "model": {"connector": {"kind": "conv", "stride": 2, "hidden_size": 32}},
        "data": {"tasks": ["transcription", "qa_subject", "qa_color", "continuation"], "interleave": {"prob": 0.5}},
        "optim": {"learning_rate": 0.01, "warmup_steps": 2, "max_steps": MAX_STEPS, "batch_size": 4},
        "log_interval": 2, "save_interval": SAVE_INTERVAL, "valid_examples": 8, "num_workers": 0}))
    return setup


@pytest.fixture(scope="module")
def straight(sllm: dict) -> dict:
    """The uninterrupted run, started over a lock that a dead process left: its dir, result and the dead pid."""
    out, stale_pid = sllm["root"] / "straight", dead_pid()
    write_lock(out, stale_pid)
    result = subprocess.run([sys.executable, *command(sllm, out)], capture_output=True, text=True)
    return {"dir": out, "result": result, "stale_pid": stale_pid}


def command(setup: dict, out_dir: Path) -> list[str]:
    return train_command(setup, setup["config"], out_dir)


def wait_for_a_loss_line(process: subprocess.Popen, out: Path) -> None:
    """Wait until the training ``process`` has logged a loss (it is past its first steps); fail if
    it ends first or takes over 300 s."""
    log, deadline = out / "losses.jsonl", time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline and not (log.exists() and '"loss"' in log.read_text()):
        time.sleep(0.02)
    assert process.poll() is None and log.exists() and '"loss"' in log.read_text(), \
        "the training ended, or logged no loss in 300 s"


def stopped_at(line: str, sig: signal.Signals, out: Path) -> int:
    """The step of the stop message ``line``, checked against the last checkpoint of ``out``."""
    found = re.fullmatch(rf"training stopped by {sig.name} at step (\d+): checkpoint (.+) written; "
                         "run the same command to resume", line)
    assert found, line
    step = int(found[1])
    assert 1 <= step < MAX_STEPS and found[2] == str(sllm_dir.checkpoint_path(out, step))
    assert sllm_dir.checkpoints(out)[-1] == sllm_dir.checkpoint_path(out, step)
    return step


def pid_of_rank(tag: str, rank: int) -> int:
    """The pid of torchrun worker ``rank`` of the run whose environment holds ``MTBI_TEST_RUN=tag``."""
    wanted = {f"MTBI_TEST_RUN={tag}".encode(), f"RANK={rank}".encode()}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and wanted <= set((proc / "environ").read_bytes().split(b"\0")):
                return int(proc.name)
        except OSError:  # ended meanwhile, or another user's
            continue
    raise AssertionError(f"no rank {rank} of run {tag}")


@pytest.mark.slow
def test_a_lock_left_by_a_dead_process_is_taken_over_and_released_after_the_run(straight: dict) -> None:
    result, out = straight["result"], straight["dir"]
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"taking over the lock of pid {straight['stale_pid']} on host {socket.gethostname()}" in result.stderr
    assert (out / ".done").is_file() and not (out / LOCK_FILE).exists()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=lambda sig: sig.name)
def test_a_stop_signal_writes_a_checkpoint_and_the_same_command_resumes(sllm: dict, straight: dict, tmp_path: Path,
                                                                         sig: signal.Signals) -> None:
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, *command(sllm, out)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    wait_for_a_loss_line(process, out)
    process.send_signal(sig)
    stderr = process.communicate()[1]
    assert process.returncode == EXIT_STOPPED, stderr[-2000:]
    step = stopped_at(stderr.strip().splitlines()[-1], sig, out)
    assert not (out / ".done").exists() and not (out / LOCK_FILE).exists()

    result = subprocess.run([sys.executable, *command(sllm, out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resumed from {sllm_dir.checkpoint_path(out, step)} (step {step})" in result.stderr
    assert losses(out) == losses(straight["dir"])
    a, b = load_file(straight["dir"] / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_ddp_ranks_stop_at_the_same_step_when_one_of_them_is_signalled(sllm: dict, straight: dict,
                                                                         tmp_path: Path) -> None:
    out = tmp_path / "out"
    ddp = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *command(sllm, out)]
    env = {**os.environ, "MTBI_TEST_RUN": str(tmp_path)}
    process = subprocess.Popen(ddp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_a_loss_line(process, out)
    os.kill(pid_of_rank(str(tmp_path), 1), signal.SIGUSR1)  # rank 0 learns of it by the all-reduce
    stderr = process.communicate()[1]
    assert process.returncode != 0, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("training stopped by")]
    assert len(lines) == 1, stderr[-3000:]
    step = stopped_at(lines[0], signal.SIGUSR1, out)
    assert {p.name for p in sllm_dir.checkpoint_path(out, step).glob("rng.*.pt")} == {"rng.0.pt", "rng.1.pt"}
    assert not (out / LOCK_FILE).exists()

    result = subprocess.run(ddp, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed from {sllm_dir.checkpoint_path(out, step)} (step {step})" in result.stderr
    # Two ranks equal one process up to float noise (test_trainer.py): the same curve as the straight run's.
    resumed, uninterrupted = losses(out), losses(straight["dir"])
    assert [sorted(r) for r in resumed] == [sorted(r) for r in uninterrupted]
    assert [v for r in resumed for v in r.values()] == \
        pytest.approx([v for r in uninterrupted for v in r.values()], rel=1e-4)


@pytest.mark.parametrize("host", [None, "node7"])
def test_training_refuses_a_dir_locked_by_a_live_run(sllm: dict, tmp_path: Path, live_pid: int, host: str | None,
                                                     capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    lock = write_lock(out, live_pid, host)
    with pytest.raises(SystemExit) as exit_info:
        train.run_main(train.build_parser, train.main, command(sllm, out)[2:], train.CONFIG)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"ERROR: {out} is in use by pid {live_pid} on host {host or socket.gethostname()} since 2026-12-01T07:00:00 "
        f"({lock}); wait for it or remove the lock if that run is dead")
    assert lock.exists() and not (out / sllm_dir.CHECKPOINT_DIR).exists()
