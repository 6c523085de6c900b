#!/usr/bin/env python3
"""Benchmark: batched teacher generation (mtbi's HFGenerator) against one-by-one
``model.generate`` on the same prompts, in the same run; checks the answers are identical.

    tools/venv/bin/python tools/bench/target_generation.py \
        --teacher_dir egs/librispeech_mtbi/exp/teacher --data_dir egs/librispeech_mtbi/data/dev_clean

Prints utterances (answers) per second of both and their ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from mtbi.bench.stamp import table_stamp
from mtbi.data.datadir import read_table
from mtbi.tasks.bank import load_task_bank
from mtbi.tasks.generation import GenerationParams, HFGenerator
from mtbi.tasks.prompting import render_prompt
from mtbi.tasks.targets import plan_requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher_dir", default="egs/librispeech_mtbi/exp/teacher")
    parser.add_argument("--data_dir", default="egs/librispeech_mtbi/data/dev_clean")
    parser.add_argument("--num_prompts", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_new_tokens", type=int, default=40)
    parser.add_argument("--num_threads", type=int, default=0)
    args = parser.parse_args()
    print(table_stamp(" ".join(sys.argv), []), flush=True)  # what made the figures below
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    if not Path(args.teacher_dir, "config.json").is_file():
        parser.error(f"{args.teacher_dir} has no teacher; run stage 4 of the recipe first")

    bank = load_task_bank()
    texts = read_table(Path(args.data_dir) / "text")
    requests = plan_requests(texts, bank, bank.select_tasks("all"), "all", tasks_per_utt=2)[:args.num_prompts]
    generator = HFGenerator(args.teacher_dir, GenerationParams(args.max_new_tokens, args.batch_size))
    prompts = [render_prompt(generator.tokenizer, r.prompt, r.transcript) for r in requests]
    generator.generate(prompts[:4])  # warm-up

    start = time.perf_counter()
    sequential = [generator.generate_one(p) for p in prompts]
    sequential_s = time.perf_counter() - start
    start = time.perf_counter()
    batched = generator.generate(prompts)
    batched_s = time.perf_counter() - start

    same = sum(a == b for a, b in zip(batched, sequential))
    print(f"prompts: {len(prompts)}, teacher: {args.teacher_dir}, threads: {torch.get_num_threads()}")
    print(f"one-by-one model.generate: {len(prompts) / sequential_s:8.1f} answers/s ({sequential_s:.1f} s)")
    print(f"batched (batch {args.batch_size}):       {len(prompts) / batched_s:8.1f} answers/s ({batched_s:.1f} s)")
    print(f"speed-up: {sequential_s / batched_s:.1f}x; identical answers: {same}/{len(prompts)}")


if __name__ == "__main__":
    main()
