#!/usr/bin/env python3
"""Benchmark: SLLM training-step throughput and model FLOP utilisation, and the padding saved
by length bucketing, on a recipe's stage outputs (stages 1-5 done).

    tools/venv/bin/python tools/bench/train_step.py --recipe egs/librispeech_mtbi [--device cuda]

Counts the FLOPs of one training step with torch.utils.flop_counter, times ``--steps`` steps,
and times a plain square matmul of the same total FLOPs in the same run (the baseline): MFU
here is the training step's FLOP/s divided by that matmul's FLOP/s on this device. Prints
frames/s, target tokens/s, both FLOP/s and their ratio, and the padding fraction of the speech
frames with and without bucketing. When stage 6 has cached the frozen encoder's outputs
(``exp/encoder_cache/<train set>``), it also times the same steps reading them and prints that
speed against the live-encoder step (the baseline) measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from mtbi.config import load_config
from mtbi.models.speech_llm import build_speech_llm
from mtbi.stage import marker
from mtbi.tasks.bank import load_task_bank
from mtbi.train.config import TrainConfig
from mtbi.train.dataset import ImitationDataset, collate
from mtbi.train.sampler import BucketBatchSampler, padding_fraction


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="egs/librispeech_mtbi")
    parser.add_argument("--train_set", default="train_clean_100")
    parser.add_argument("--config", default="conf/train_mtbi.yaml", help="relative to --recipe")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=0, help="0: the config's")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num_threads", type=int, default=0)
    args = parser.parse_args()
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    os.chdir(args.recipe)  # wav.scp and feats.scp hold paths relative to the recipe dir, as in ESPnet
    recipe, device = Path("."), torch.device(args.device)
    feats = next((d for d in (recipe / "dump" / "raw" / args.train_set, recipe / "dump" / "logmel80" / args.train_set)
                  if d.is_dir()), recipe / "dump" / "raw" / args.train_set)
    targets = recipe / "exp" / "targets" / args.train_set / "targets.jsonl"
    for needed in (feats / "utt2num_frames", targets, marker(recipe / "exp" / "encoder"), marker(recipe / "exp" / "teacher")):
        if not needed.exists():
            parser.error(f"{needed} is missing; run stages 1-5 of {recipe} first")
    config = load_config(recipe / args.config, TrainConfig)
    batch_size = args.batch_size or config.optim.batch_size

    torch.manual_seed(0)
    model, tokenizer = build_speech_llm(config.model, recipe / "exp" / "encoder", recipe / "exp" / "teacher")
    model = model.to(device).train()
    dataset_tasks = load_task_bank(recipe / "conf" / "tasks.yaml").train_tasks
    dataset = ImitationDataset(feats, targets, tokenizer, dataset_tasks, config.data,
                               recipe / "data" / args.train_set / "word_align")
    fractions = {b: padding_fraction(dataset.lengths, BucketBatchSampler(dataset.lengths, batch_size, bucketing=b)
                                     .global_batches(0)) for b in (True, False)}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(data: ImitationDataset, batches) -> tuple[int, int]:
        batch = collate([data[item] for item in next(batches)]).to(device)
        model(batch, 1.0 / batch.num_target_tokens)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return int(batch.feats_lens.sum()), batch.num_target_tokens

    def time_steps(data: ImitationDataset) -> tuple[float, int, int]:
        batches = iter(BucketBatchSampler(data.lengths, batch_size))
        step(data, batches)  # warm-up
        frames = tokens = 0
        synchronize(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            f, t = step(data, batches)
            frames, tokens = frames + f, tokens + t
        synchronize(device)
        return time.perf_counter() - start, frames, tokens

    with FlopCounterMode(display=False) as counter:
        step(dataset, iter(BucketBatchSampler(dataset.lengths, batch_size)))
    flops_per_step = counter.get_total_flops()
    seconds, frames, tokens = time_steps(dataset)
    achieved = flops_per_step * args.steps / seconds
    baseline = matmul_flops_per_s(flops_per_step, device, torch.float32)
    cache = recipe / "exp" / "encoder_cache" / args.train_set
    cached_seconds = None
    if (cache / "feats.scp").is_file() and not config.model.train_encoder:
        cached = ImitationDataset(feats, targets, tokenizer, dataset_tasks, config.data,
                                  recipe / "data" / args.train_set / "word_align", encoded_dir=cache)
        cached_seconds = time_steps(cached)[0]

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; config {args.config}; batch {batch_size}; {args.steps} steps in {seconds:.1f} s")
    print(f"throughput: {args.steps / seconds:.2f} steps/s, {frames / seconds:.0f} frames/s (10 ms), "
          f"{tokens / seconds:.0f} target tokens/s")
    print(f"model FLOPs per step (flop counter, data loading excluded from the count): {flops_per_step / 1e9:.2f} GFLOP")
    print(f"training step: {achieved / 1e9:.2f} GFLOP/s; baseline matmul of the same FLOPs: {baseline / 1e9:.2f} GFLOP/s")
    print(f"model FLOP utilisation against the matmul baseline: {achieved / baseline:.3f}")
    print(f"padding of speech frames: {100 * fractions[True]:.1f}% bucketed vs {100 * fractions[False]:.1f}% "
          f"random batches ({fractions[False] / max(fractions[True], 1e-9):.1f}x less)")
    if cached_seconds is None:
        print(f"no cached encoder outputs in {cache} (stage 6 writes them): cached step not timed")
    else:
        print(f"cached encoder outputs: {args.steps / cached_seconds:.2f} steps/s, {seconds / cached_seconds:.2f}x "
              "the live-encoder step above (the baseline)")


if __name__ == "__main__":
    main()
