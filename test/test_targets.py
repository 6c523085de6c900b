"""Target planning, sharded generation, and resume after SIGKILL without lost or doubled lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from teacher_fixtures import SENTENCES, make_random_teacher

from mtbi.data.datadir import Utterance, write_data_dir
from mtbi.errors import MtbiError
from mtbi.tasks.bank import load_task_bank
from mtbi.tasks.targets import plan_requests, shard_requests


def _texts(n: int) -> dict[str, str]:
    return {f"spk{i % 3}-{i:03d}": SENTENCES[i % len(SENTENCES)].upper() for i in range(n)}


def test_plan_is_deterministic_and_independent_of_sharding() -> None:
    bank = load_task_bank()
    texts = _texts(12)
    plan = plan_requests(texts, bank, bank.train_tasks, "seen", tasks_per_utt=3, seed=1)
    assert plan == plan_requests(texts, bank, bank.train_tasks, "seen", tasks_per_utt=3, seed=1)
    assert plan != plan_requests(texts, bank, bank.train_tasks, "seen", tasks_per_utt=3, seed=2)
    assert len(plan) == 36 and all(r.task in bank.train_tasks for r in plan)
    assert all(r.prompt_id in bank.prompt_ids(r.task, "seen") for r in plan)
    assert plan[0].transcript == SENTENCES[0]
    shards = [shard_requests(plan, k, 5) for k in range(1, 6)]
    assert sorted(r.key for s in shards for r in s) == sorted(r.key for r in plan)
    # One utterance's plan is the same whatever other utterances are planned with it.
    alone = plan_requests({u: t for u, t in texts.items() if u == "spk1-004"}, bank, bank.train_tasks,
                          "seen", tasks_per_utt=3, seed=1)
    assert alone == [r for r in plan if r.utt == "spk1-004"]
    unseen = plan_requests(texts, bank, bank.heldout_tasks, "unseen", prompts_per_task=2)
    assert len(unseen) == 12 * len(bank.heldout_tasks) * 2


def test_every_utt_tasks_are_asked_about_every_utterance_besides_the_drawn_ones() -> None:
    bank = load_task_bank()
    texts = {f"spk{n % 3}-{n:03d}": f"the dog number {n}" for n in range(30)}
    always = ("transcription", "continuation")
    plan = plan_requests(texts, bank, bank.train_tasks, tasks_per_utt=2, seed=1, every_utt=always)
    for utt in texts:
        tasks = [r.task for r in plan if r.utt == utt]
        assert len(tasks) == 4 and set(always) <= set(tasks)
    drawn = {r.task for r in plan if r.task not in always}
    assert len(drawn) == len(bank.train_tasks) - 2  # the others are drawn, each somewhere
    assert plan_requests(texts, bank, bank.train_tasks, tasks_per_utt=2, seed=1) == \
        plan_requests(texts, bank, bank.train_tasks, tasks_per_utt=2, seed=1, every_utt=())
    with pytest.raises(MtbiError, match="\\['keywords'\\] are not among the tasks"):
        plan_requests(texts, bank, bank.train_tasks, every_utt=("keywords",))


def test_max_utts_plans_a_seeded_subset_of_utterances() -> None:
    bank = load_task_bank()
    texts = _texts(12)
    full = plan_requests(texts, bank, bank.train_tasks, seed=3)
    some = plan_requests(texts, bank, bank.train_tasks, seed=3, max_utts=5)
    utts = sorted({r.utt for r in some})
    assert len(utts) == 5 and len(some) == 5 * len(bank.train_tasks)
    assert some == [r for r in full if r.utt in utts]  # each utterance's questions as in the full plan
    assert some == plan_requests(texts, bank, bank.train_tasks, seed=3, max_utts=5)
    assert utts != sorted({r.utt for r in plan_requests(texts, bank, bank.train_tasks, seed=4, max_utts=5)})
    assert plan_requests(texts, bank, bank.train_tasks, seed=3, max_utts=50) == full


def _run_targets(tmp_path: Path, out: Path, teacher: Path, *extra: str) -> subprocess.Popen:
    conf = tmp_path / "teacher.yaml"
    conf.write_text("kind: hf\nname: random-teacher\nmodel_dir: %s\ngeneration: {max_new_tokens: 8, "
                    "batch_size: 4}\n" % teacher)
    cmd = [sys.executable, "-m", "mtbi.bin.make_targets", "--data_dir", str(tmp_path / "data"),
           "--out_dir", str(out), "--teacher_conf", str(conf), "--tasks", "all", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _merge(out: Path, num_shards: int = 1) -> str:
    subprocess.run([sys.executable, "-m", "mtbi.bin.merge_targets", "--out_dir", str(out),
                    "--num_shards", str(num_shards)], check=True, capture_output=True)
    return (out / "targets.jsonl").read_text()


@pytest.mark.slow
def test_sigkill_and_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    texts = _texts(10)
    write_data_dir(tmp_path / "data", [Utterance(u, u.split("-")[0], f"/a/{u}.flac", t) for u, t in texts.items()])
    teacher = make_random_teacher(tmp_path / "teacher")

    reference = _run_targets(tmp_path, tmp_path / "ref", teacher)
    assert reference.wait() == 0, reference.stderr.read()
    expected = _merge(tmp_path / "ref")
    records = [json.loads(line) for line in expected.splitlines()]
    assert len(records) == 10 * len(load_task_bank().tasks)  # --tasks all
    assert records[0]["teacher"] == "random-teacher" and records[0]["gen"]["max_new_tokens"] == 8
    assert set(records[0]) == {"utt", "task", "prompt_id", "prompt", "transcript", "response", "truncated", "teacher", "gen"}

    out = tmp_path / "killed"
    shard = out / "shards" / "targets.1.jsonl"
    for attempt in range(3):  # killed at 2, 4 and 6 kB of the shard's 56 kB
        proc = _run_targets(tmp_path, out, teacher, "--chunk_size", "8")
        size, deadline = 2000 * (attempt + 1), time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline and \
                (not shard.exists() or shard.stat().st_size < size):
            time.sleep(0.05)
        assert proc.poll() is None and shard.exists() and shard.stat().st_size >= size, \
            f"kill {attempt + 1}: make_targets ended, or did not write {size} bytes in 300 s"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        with open(shard, "a") as f:
            f.write('{"utt": "spk0-000", "task": "half-writ')  # what a kill mid-write leaves
    resumed = _run_targets(tmp_path, out, teacher, "--chunk_size", "8")
    assert resumed.wait() == 0, resumed.stderr.read()
    assert _merge(out) == expected


@pytest.mark.slow
def test_shards_merge_to_the_single_job_output(tmp_path: Path) -> None:
    texts = _texts(6)
    write_data_dir(tmp_path / "data", [Utterance(u, u.split("-")[0], f"/a/{u}.flac", t) for u, t in texts.items()])
    teacher = make_random_teacher(tmp_path / "teacher")
    one = _run_targets(tmp_path, tmp_path / "one", teacher, "--tasks", "topic,summary")
    assert one.wait() == 0, one.stderr.read()
    for shard in (1, 2, 3):
        job = _run_targets(tmp_path, tmp_path / "three", teacher, "--tasks", "topic,summary",
                           "--shard", str(shard), "--num_shards", "3")
        assert job.wait() == 0, job.stderr.read()
    assert _merge(tmp_path / "three", 3) == _merge(tmp_path / "one")
    again = _run_targets(tmp_path, tmp_path / "one", teacher, "--tasks", "topic,summary")
    assert again.wait() == 0 and "already done" in again.stderr.read()
    make_random_teacher(teacher, seed=1)  # a retrained teacher: its old targets are stale
    redone = _run_targets(tmp_path, tmp_path / "one", teacher, "--tasks", "topic,summary")
    log = redone.stderr.read()
    assert redone.wait() == 0 and "already done" not in log and "answering again" in log
