"""Stage 6 trainer: bucketing, rank splits, exact resume after kill -9, DDP equals one process."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO_ROOT
from safetensors.torch import load_file
from sllm_fixtures import TASKS, make_training_setup
from transformers import PreTrainedTokenizerBase

from mtbi.config import load_config
from mtbi.errors import MtbiError
from mtbi.models.connectors import ConnectorConfig
from mtbi.models.speech_llm import SpeechLLMConfig, build_speech_llm
from mtbi.train.config import OptimConfig, TrainConfig
from mtbi.train.dataset import DataConfig, ImitationDataset, collate
from mtbi.train.sampler import BucketBatchSampler, TokenBatchSampler, padding_fraction
from mtbi.train.trainer import Trainer, llm_lengths


def test_bucketing_keeps_padding_under_ten_percent() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(150, 900) for _ in range(3000)]
    fractions = {}
    for bucketing in (True, False):
        sampler = BucketBatchSampler(lengths, 32, seed=1, bucketing=bucketing)
        batches = sampler.global_batches(0)
        assert sorted(i for b in batches for i in b) == sorted(set(i for b in batches for i in b))
        assert len(batches) == 3000 // 32
        fractions[bucketing] = padding_fraction(lengths, batches)
    assert fractions[True] < 0.10 < 0.25 < fractions[False]


def test_ranks_split_the_global_batches_and_iteration_resumes_anywhere() -> None:
    lengths = list(range(100, 200))
    single = BucketBatchSampler(lengths, 8, seed=3)
    ranks = [BucketBatchSampler(lengths, 8, seed=3, world_size=2, rank=r) for r in (0, 1)]
    it_single, it_ranks = iter(single), [iter(r) for r in ranks]
    for _ in range(30):  # 12 batches an epoch: crosses two epoch boundaries
        assert next(it_single) == next(it_ranks[0]) + next(it_ranks[1])
    later = iter(BucketBatchSampler(lengths, 8, seed=3, start=17))
    replay = iter(single.__class__(lengths, 8, seed=3))
    for _ in range(17):
        next(replay)
    assert [next(later) for _ in range(5)] == [next(replay) for _ in range(5)]


def test_a_config_typo_is_an_error_listing_the_valid_keys(tmp_path: Path) -> None:
    conf = tmp_path / "train.yaml"
    conf.write_text("optim:\n  learning_rat: 0.1\n")
    with pytest.raises(MtbiError, match=r"train.yaml: optim: unknown key 'learning_rat'; valid keys: learning_rate"):
        load_config(conf, TrainConfig)
    conf.write_text("model:\n  connector:\n    stride: two\n")
    with pytest.raises(MtbiError, match="model: connector: stride: expected int, got 'two'"):
        load_config(conf, TrainConfig)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_training_setup(tmp_path_factory.mktemp("sllm"))


def imitation_dataset(setup: dict, tokenizer: PreTrainedTokenizerBase) -> ImitationDataset:
    data = setup["data"]
    return ImitationDataset(data["feats"], data["targets"], tokenizer, list(TASKS), DataConfig(), data["word_align"])


@pytest.mark.parametrize("kind", ["conv", "stack_mlp", "qformer"])
def test_llm_lengths_are_the_lengths_the_llm_reads(setup: dict, kind: str) -> None:
    connector = ConnectorConfig(kind=kind, stride=2, window=4, num_queries=2, hidden_size=32, num_layers=1)
    model, tokenizer = build_speech_llm(SpeechLLMConfig(connector=connector), setup["encoder"], setup["root"] / "teacher")
    dataset = imitation_dataset(setup, tokenizer)
    assert len(dataset.text_tokens) == len(dataset.utt_index) == len(dataset) == 32
    assert list(dataset.utt_index) == [n // 4 for n in range(32)]  # 4 targets per utterance, in file order
    with torch.no_grad():
        _, mask, _ = model.embed(collate([dataset[(i, 0, 0)] for i in range(len(dataset))]))
    assert list(llm_lengths(model, dataset)) == mask.sum(1).tolist()


def test_the_trainer_batches_to_a_token_budget_only_when_batch_tokens_is_set(setup: dict, tmp_path: Path) -> None:
    model, tokenizer = build_speech_llm(SpeechLLMConfig(), setup["encoder"], setup["root"] / "teacher")
    dataset = imitation_dataset(setup, tokenizer)
    fixed = Trainer(model, TrainConfig(optim=OptimConfig(batch_size=4)), dataset, None, tmp_path, torch.device("cpu"))
    sampler = fixed.batch_sampler()
    assert isinstance(sampler, BucketBatchSampler) and OptimConfig().batch_tokens == 0
    assert sampler.global_batches(1) == BucketBatchSampler(dataset.lengths, 4).global_batches(1)
    sized = Trainer(model, TrainConfig(optim=OptimConfig(batch_tokens=400)), dataset, None, tmp_path,
                    torch.device("cpu"))
    sampler = sized.batch_sampler(start=5)
    assert isinstance(sampler, TokenBatchSampler) and sampler.start == 5
    lengths = llm_lengths(model, dataset)
    for batch in sampler.global_batches(0):
        assert max(lengths[i] for i in batch) * len(batch) <= 400
    report = sized.report_padding(sampler)
    examples = sum(map(len, sampler.global_batches(0))) / sampler.batches_per_epoch
    assert report["utts_per_batch"] == examples > 3  # one target of an utterance per batch
    assert 0 <= report["llm_bucketed"] < report["llm_random"]
    # Bucketing by speech frames alone keeps the 4 targets of an utterance together.
    assert fixed.report_padding(fixed.batch_sampler())["utts_per_batch"] <= 2


def write_config(path: Path, log_interval: int = 1, **optim) -> Path:
    config = {"model": {"connector": {"kind": "conv", "stride": 2, "hidden_size": 32}},
              "data": {"tasks": ["transcription", "qa_subject", "qa_color", "continuation"],
                       "interleave": {"prob": 0.5}},
              "optim": {"learning_rate": 0.01, "warmup_steps": 2, "max_steps": 6, "batch_size": 4, **optim},
              "log_interval": log_interval, "save_interval": 2, "valid_examples": 8, "num_workers": 0}
    path.write_text(yaml.safe_dump(config))
    return path


def train_command(setup: dict, config: Path, out_dir: Path) -> list[str]:
    data = setup["data"]
    return ["-m", "mtbi.bin.train", "--config", str(config), "--out_dir", str(out_dir),
            "--train_feats", str(data["feats"]), "--train_targets", str(data["targets"]),
            "--train_align", str(data["word_align"]), "--valid_feats", str(data["feats"]),
            "--valid_targets", str(data["targets"]), "--encoder_dir", str(setup["encoder"]),
            "--teacher_conf", str(setup["teacher_conf"]), "--num_threads", "1"]


def losses(out_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if not k.endswith("_per_s")}
            for line in (out_dir / "losses.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_training_resumes_after_kill_with_the_same_loss_curve(setup: dict, tmp_path: Path) -> None:
    # Loss lines every 3 steps, checkpoints every 2: the log window under way at a checkpoint must
    # survive the kill, or the first line after the resume averages fewer steps.
    config = write_config(tmp_path / "train.yaml", log_interval=3, max_steps=40)
    straight = tmp_path / "straight"
    subprocess.run([sys.executable, *train_command(setup, config, straight)], check=True, capture_output=True)
    assert (straight / "model.safetensors").is_file() and (straight / "loss_curve.png").stat().st_size > 1000
    assert [r["step"] for r in losses(straight) if "loss" in r] == [*range(3, 40, 3), 40]
    recorded = yaml.safe_load((straight / "config.yaml").read_text())  # for answering and the model card
    assert recorded["generation"] == {"max_new_tokens": 48, "batch_size": 32, "do_sample": False}
    assert recorded["training_data"]["utterances"] == 8 and recorded["training_data"]["examples"] > 8

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, *train_command(setup, config, killed)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint, deadline = killed / "checkpoints" / "step_0000010", time.monotonic() + 300
    while process.poll() is None and not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None and checkpoint.exists(), "the run ended, or wrote no step-10 checkpoint in 300 s"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / ".done").exists(), "the run ended before it could be killed"
    result = subprocess.run([sys.executable, *train_command(setup, config, killed)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resumed from" in result.stderr
    assert losses(killed) == losses(straight)
    a, b = load_file(straight / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    rerun = subprocess.run([sys.executable, *train_command(setup, config, killed)], capture_output=True, text=True)
    assert "already trained with this config" in rerun.stderr
    # A model trained by an older mtbi, whose training config lacked keys added since (at their
    # defaults now) and the runtime keys: still trained with this config, and given its decoding.
    stored = yaml.safe_load((killed / "config.yaml").read_text())
    del stored["train"]["data"]["utt_fraction"], stored["train"]["data"]["interleave"]["until_step"]
    del stored["generation"], stored["training_data"]
    (killed / "config.yaml").write_text(yaml.safe_dump(stored, sort_keys=False))
    stamp = json.loads((killed / ".done").read_text())
    del stamp["train"]["data"]["utt_fraction"], stamp["train"]["data"]["interleave"]["until_step"]
    (killed / ".done").write_text(json.dumps(stamp))
    older = subprocess.run([sys.executable, *train_command(setup, config, killed)], capture_output=True, text=True)
    assert older.returncode == 0 and "already trained with this config" in older.stderr, older.stderr[-2000:]
    assert yaml.safe_load((killed / "config.yaml").read_text())["generation"]["max_new_tokens"] == 48
    other = write_config(tmp_path / "other.yaml", max_steps=40, learning_rate=0.5)
    (killed / ".done").unlink()
    refused = subprocess.run([sys.executable, *train_command(setup, other, killed)], capture_output=True, text=True)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith(f"ERROR: {killed} holds checkpoints of another config")


@pytest.mark.slow
def test_loss_lines_of_a_run_killed_before_its_first_checkpoint_are_not_repeated(setup: dict, tmp_path: Path) -> None:
    config = write_config(tmp_path / "train.yaml", max_steps=2)
    out = tmp_path / "out"
    out.mkdir()
    # As a run killed after its step-2 validation, before the step-2 checkpoint, leaves it.
    (out / "losses.jsonl").write_text('{"step": 1, "loss": 9.0}\n{"step": 2, "valid_loss": 9.0}\n')
    subprocess.run([sys.executable, *train_command(setup, config, out)], check=True, capture_output=True)
    steps = [(r["step"], "valid_loss" in r) for r in losses(out)]
    assert steps == [(1, False), (2, False), (2, True)] and 9.0 not in [r.get("loss") for r in losses(out)]


@pytest.mark.slow
@pytest.mark.parametrize("optim", [{}, {"batch_tokens": 400}], ids=["batch_size", "batch_tokens"])
def test_two_ddp_processes_take_the_same_step_as_one_process(setup: dict, tmp_path: Path, optim: dict) -> None:
    config = write_config(tmp_path / "train.yaml", max_steps=2, warmup_steps=1, **optim)
    one = tmp_path / "one"
    subprocess.run([sys.executable, *train_command(setup, config, one)], check=True, capture_output=True)
    two = tmp_path / "two"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             *train_command(setup, config, two)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=1e-5), key  # Adam (lr 1e-2) amplifies float noise
    assert [r["loss"] for r in losses(one) if "loss" in r] == pytest.approx(
        [r["loss"] for r in losses(two) if "loss" in r], rel=1e-5)
    data = [{k: r[k] for k in ("llm_padding", "utts_per_batch")} for r in losses(one) if "loss" in r]
    assert data == [{k: r[k] for k in ("llm_padding", "utts_per_batch")} for r in losses(two) if "loss" in r]
