#!/usr/bin/env python3
"""Benchmark: stage-5 answers/s of a teacher at a shorter ``max_new_tokens`` (and optionally in
bf16) against a baseline limit, on the same train-task prompts in the same run; prints the
teacher's answer lengths at the baseline limit, from which the shorter one is chosen.

    tools/venv/bin/python tools/bench/teacher_decoding.py \
        --teacher_dir egs/librispeech_mtbi/exp_smol/teacher --baseline_max_new_tokens 64 --max_new_tokens 32

A batch decodes until its longest answer ends, so a few rambling answers set the cost of all.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mtbi.bench.stamp import table_stamp
from mtbi.data.datadir import read_table
from mtbi.tasks.bank import load_task_bank
from mtbi.tasks.generation import Completion, GenerationParams, HFGenerator
from mtbi.tasks.prompting import render_prompt
from mtbi.tasks.targets import plan_requests


def timed(generator: HFGenerator, prompts: list[str]) -> tuple[list[Completion], float]:
    generator.complete(prompts[:2])  # warm-up
    start = time.perf_counter()
    answers = generator.complete(prompts)
    return answers, len(prompts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher_dir", default="egs/librispeech_mtbi/exp_smol/teacher")
    parser.add_argument("--data_dir", default="egs/librispeech_mtbi/data/train_clean_100")
    parser.add_argument("--num_prompts", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--baseline_max_new_tokens", type=int, default=64)
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--bf16", action="store_true", help="also time bf16 weights at --max_new_tokens")
    parser.add_argument("--num_threads", type=int, default=0)
    args = parser.parse_args()
    print(table_stamp(" ".join(sys.argv), []), flush=True)  # what made the figures below
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    if not Path(args.teacher_dir, "config.json").is_file():
        parser.error(f"{args.teacher_dir} has no teacher; run stage 4 of the recipe first")

    bank = load_task_bank()
    texts = read_table(Path(args.data_dir) / "text", allow_empty_value=True)
    requests = plan_requests(texts, bank, bank.train_tasks, max_utts=args.num_prompts // len(bank.train_tasks) + 1,
                             seed=5)[:args.num_prompts]
    runs = {f"float32, max_new_tokens {args.baseline_max_new_tokens} (baseline)": ("float32", args.baseline_max_new_tokens),
            f"float32, max_new_tokens {args.max_new_tokens}": ("float32", args.max_new_tokens)}
    if args.bf16:
        runs[f"bf16, max_new_tokens {args.max_new_tokens}"] = ("bfloat16", args.max_new_tokens)
    speeds, baseline_answers = {}, None
    for label, (dtype, max_new_tokens) in runs.items():
        generator = HFGenerator(args.teacher_dir, GenerationParams(max_new_tokens, args.batch_size), dtype=dtype)
        prompts = [render_prompt(generator.tokenizer, r.prompt, r.transcript) for r in requests]
        answers, speeds[label] = timed(generator, prompts)
        if baseline_answers is None:
            baseline_answers = answers
            lengths = [len(ids) for ids in generator.tokenizer([a.text for a in answers], add_special_tokens=False)["input_ids"]]

    print(f"{len(requests)} train-task prompts, teacher {args.teacher_dir}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads")
    print(f"answer tokens at max_new_tokens {args.baseline_max_new_tokens}: median {np.median(lengths):.0f}, "
          f"75% {np.percentile(lengths, 75):.0f}, 90% {np.percentile(lengths, 90):.0f}; "
          f"{sum(a.truncated for a in baseline_answers)} cut at the limit, "
          f"{sum(n > args.max_new_tokens for n in lengths)} longer than {args.max_new_tokens}")
    base = next(iter(speeds.values()))
    for label, speed in speeds.items():
        print(f"{label}: {speed:.2f} answers/s, {speed / base:.2f}x the baseline")


if __name__ == "__main__":
    main()
