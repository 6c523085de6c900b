#!/usr/bin/env python3
"""Benchmark: SLLM training-step throughput against the naive step (named baseline), in the same run,
on a recipe's stage outputs (stages 1-5 done; stage 6's encoder cache is used when present).

    tools/venv/bin/python tools/bench/train_step.py --recipe egs/librispeech_mtbi --config_set smol

Times ``--steps`` optimizer steps of conf[/<set>]/train_mtbi.yaml for each of:

- baseline: the naive step — the LM head over the whole vocabulary at every position,
  every prompt token through forward and backward, batches of ``batch_size`` examples bucketed
  by speech length (it re-implements that forward here);
- ``SpeechLLMModel.forward`` on the same batches: the LM head only where a response token is
  predicted, and the prompt tokens that every example of the batch starts with (the chat
  template's system prompt) run once without gradient;
- that forward on token batches (``optim.batch_tokens``; ``--batch_tokens`` 0 sizes them to
  the baseline batches' mean padded positions), which mix utterances;
- with ``--bf16``, the same with bf16 autocast (worth it on GPUs and CPUs with avx512_bf16 or
  AMX; 16x slower on an AVX2-only CPU, so off by default).

Prints examples/s, target tokens/s and distinct utterances per batch of each, and its
examples/s as a ratio to the baseline's. Also: the FLOPs of one baseline and one new step
(torch.utils.flop_counter), the new step's FLOP/s against a plain matmul of the same FLOPs
(model FLOP utilisation), and, with an encoder cache, the new step with the live encoder.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mtbi.bench.stamp import table_stamp
from mtbi.config import load_config
from mtbi.models.speech_llm import IGNORE, SpeechBatch, SpeechLLMModel, build_speech_llm
from mtbi.stage import marker
from mtbi.tasks.bank import load_task_bank
from mtbi.train.config import TrainConfig
from mtbi.train.dataset import ImitationDataset, collate
from mtbi.train.sampler import BucketBatchSampler, TokenBatchSampler, utterances_per_batch
from mtbi.train.trainer import llm_lengths

LossFn = Callable[[SpeechLLMModel, SpeechBatch], torch.Tensor]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_flops_per_s(total_flops: float, device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of one square matmul doing ``total_flops`` (2 n^3), best of 5."""
    n = max(64, round((total_flops / 2) ** (1 / 3)))
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(5):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def baseline_loss(model: SpeechLLMModel, batch: SpeechBatch) -> torch.Tensor:
    """The summed response cross-entropy of the naive step: logits over the whole
    vocabulary at every position of every prompt, all with gradient."""
    embeds, mask, labels = model.embed(batch)
    logits = model.llm(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits
    targets = labels[:, 1:]
    return nn.functional.cross_entropy(logits[:, :-1][targets != IGNORE].float(), targets[targets != IGNORE],
                                       reduction="sum")


def model_loss(model: SpeechLLMModel, batch: SpeechBatch) -> torch.Tensor:
    return model(batch, 1.0)["loss"]


def padded_positions(lengths, batches: list[list[int]]) -> float:
    """Mean padded LLM positions (longest example times examples) of ``batches``."""
    return sum(max(lengths[i] for i in b) * len(b) for b in batches) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="egs/librispeech_mtbi")
    parser.add_argument("--config_set", default="tiny", help="tiny (exp/, conf/) or a conf/ folder (exp_<set>/)")
    parser.add_argument("--expdir", default="", help="relative to --recipe [exp, or exp_<set>]")
    parser.add_argument("--train_set", default="train_clean_100")
    parser.add_argument("--config", default="", help="relative to --recipe [conf[/<set>]/train_mtbi.yaml]")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=0, help="0: the config's")
    parser.add_argument("--batch_tokens", type=int, default=0,
                        help="token batches' budget (0: the fixed batches' mean padded positions)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num_threads", type=int, default=0)
    parser.add_argument("--bf16", action="store_true", help="also time the token batches with bf16 autocast")
    args = parser.parse_args()
    print(table_stamp(" ".join(sys.argv), []), flush=True)  # what made the figures below
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    os.chdir(args.recipe)  # wav.scp and feats.scp hold paths relative to the recipe dir, as in ESPnet
    recipe, device = Path("."), torch.device(args.device)
    tiny = args.config_set == "tiny"
    expdir = recipe / (args.expdir or ("exp" if tiny else f"exp_{args.config_set}"))
    config_file = args.config or ("conf/train_mtbi.yaml" if tiny else f"conf/{args.config_set}/train_mtbi.yaml")
    feats = next((d for d in (recipe / "dump" / "raw" / args.train_set, recipe / "dump" / "logmel80" / args.train_set)
                  if d.is_dir()), recipe / "dump" / "raw" / args.train_set)
    targets = expdir / "targets" / args.train_set / "targets.jsonl"
    for needed in (feats / "utt2num_frames", targets, marker(expdir / "encoder"), marker(expdir / "teacher")):
        if not needed.exists():
            parser.error(f"{needed} is missing; run stages 1-5 of {recipe} with --config_set {args.config_set} first")
    config = load_config(recipe / config_file, TrainConfig)
    batch_size = args.batch_size or config.optim.batch_size

    torch.manual_seed(0)
    model, tokenizer = build_speech_llm(config.model, expdir / "encoder", expdir / "teacher")
    model = model.to(device).train()
    tasks = load_task_bank(recipe / "conf" / "tasks.yaml").train_tasks
    word_align = recipe / "data" / args.train_set / "word_align"
    cache = expdir / "encoder_cache" / args.train_set
    cached = (cache / "feats.scp").is_file() and not config.model.train_encoder
    dataset = ImitationDataset(feats, targets, tokenizer, tasks, config.data, word_align,
                               encoded_dir=cache if cached else None)
    lengths = llm_lengths(model, dataset)
    fixed = BucketBatchSampler(dataset.lengths, batch_size)
    budget = args.batch_tokens or round(padded_positions(lengths, fixed.global_batches(0)))
    token = TokenBatchSampler(lengths, budget, dataset.utt_index)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    bf16 = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731

    def step(loss_fn: LossFn, data: ImitationDataset, batch: list, precision=None) -> SpeechBatch:
        collated = collate([data[item] for item in batch]).to(device)
        with precision() if precision else torch.autocast(device.type, enabled=False):
            loss = loss_fn(model, collated) / collated.num_target_tokens
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return collated

    def time_steps(loss_fn: LossFn, data: ImitationDataset, sampler, precision=None) -> dict[str, float]:
        batches: Iterator[list] = iter(sampler)
        step(loss_fn, data, next(batches), precision)  # warm-up
        examples = tokens = 0
        used = []
        synchronize(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            batch = next(batches)
            collated = step(loss_fn, data, batch, precision)
            examples, tokens = examples + len(batch), tokens + collated.num_target_tokens
            used.append([index for index, _ in batch])
        synchronize(device)
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "examples/s": examples / seconds, "tokens/s": tokens / seconds,
                "examples": examples / args.steps, "utts": utterances_per_batch(dataset.utt_index, used)}

    def flops(loss_fn: LossFn) -> float:
        with FlopCounterMode(display=False) as counter:
            step(loss_fn, dataset, next(iter(fixed)))
        return counter.get_total_flops()

    baseline_flops, new_flops = flops(baseline_loss), flops(model_loss)
    runs = {"baseline: full LM head, whole prompt with grad, fixed batches": time_steps(baseline_loss, dataset, fixed),
            "LM head on loss positions + prefix without grad, same batches": time_steps(model_loss, dataset, fixed),
            f"  + token batches of {budget} positions": time_steps(model_loss, dataset, token)}
    if args.bf16:
        runs["  + bf16 autocast"] = time_steps(model_loss, dataset, token, bf16)
    live = None
    if cached:
        live_data = ImitationDataset(feats, targets, tokenizer, tasks, config.data, word_align)
        live = time_steps(model_loss, live_data, token)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; {config_file} ({expdir}); {args.steps} steps each; encoder outputs "
          f"{'cached (stage 6)' if cached else 'computed live'}; prefix cached: {model.caches_prefix}")
    base = next(iter(runs.values()))["examples/s"]
    for label, r in runs.items():
        print(f"{label}: {r['examples/s']:.2f} examples/s, {r['tokens/s']:.0f} target tokens/s, "
              f"{r['examples']:.1f} examples and {r['utts']:.1f} utterances a step; "
              f"{r['examples/s'] / base:.2f}x the baseline")
    achieved = new_flops * runs["LM head on loss positions + prefix without grad, same batches"]["examples/s"] / batch_size
    matmul = matmul_flops_per_s(new_flops, device, torch.float32)
    print(f"FLOPs of one fixed batch (flop counter): baseline {baseline_flops / 1e9:.2f} GFLOP, "
          f"new {new_flops / 1e9:.2f} GFLOP ({baseline_flops / new_flops:.2f}x fewer)")
    print(f"new step: {achieved / 1e9:.2f} GFLOP/s; a float32 matmul of the same FLOPs: {matmul / 1e9:.2f} GFLOP/s; "
          f"model FLOP utilisation against it: {achieved / matmul:.3f}")
    if live is not None:
        token_run = runs[f"  + token batches of {budget} positions"]
        print(f"live encoder instead of the stage-6 cache (token batches, float32): {live['examples/s']:.2f} "
              f"examples/s; the cache is {token_run['examples/s'] / live['examples/s']:.2f}x faster")


if __name__ == "__main__":
    main()
