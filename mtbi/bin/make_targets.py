"""Stage 5, one shard: the teacher's answers to task prompts about each transcript.

Reads <data_dir>/text, the task bank (--task_conf) and the teacher (--teacher_conf, model in
--teacher_dir unless the config names an HF dir); appends to
<out_dir>/shards/targets.<shard>.jsonl, resumably. Run mtbi.bin.merge_targets afterwards.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoTokenizer

from mtbi.cli import ConfigOption, run_main, torch_device
from mtbi.data.datadir import read_table
from mtbi.prepare.teacher import TeacherConfig, teacher_dir
from mtbi.stage import dir_fingerprint
from mtbi.tasks.bank import load_task_bank
from mtbi.tasks.generation import check_model_dir, context_length, load_generator
from mtbi.tasks.targets import fit_context, generate_targets, plan_requests, shard_requests, targets_shard_step

logger = logging.getLogger(__name__)


CONFIG = ConfigOption("--teacher_conf", TeacherConfig)  # --set and --print_config act on it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--out_dir", required=True, help="e.g. exp/targets/<set>")
    parser.add_argument("--teacher_conf", required=True)
    parser.add_argument("--teacher_dir", default="exp/teacher", help="where stage 4 put the teacher")
    parser.add_argument("--task_conf", default=None)
    parser.add_argument("--tasks", default="train", help="train, heldout, all or a comma-separated list")
    parser.add_argument("--prompts", default="seen", choices=("seen", "unseen", "all"))
    parser.add_argument("--tasks_per_utt", type=int, default=0,
                        help="tasks drawn per utterance besides --every_utt_tasks (0: all)")
    parser.add_argument("--every_utt_tasks", default="",
                        help="comma-separated tasks asked about every utterance, e.g. transcription,continuation "
                             "(the single tasks of the asr_sft and blsp baselines, so that they see every utterance)")
    parser.add_argument("--prompts_per_task", type=int, default=1)
    parser.add_argument("--max_utts", type=int, default=0,
                        help="utterances drawn from the set (0: all), e.g. to fit a slow teacher's time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard", type=int, default=1)
    parser.add_argument("--num_shards", type=int, default=1)
    parser.add_argument("--backend", default="hf", choices=("hf", "vllm"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch_size", type=int, default=0, help="0: the teacher config's")
    parser.add_argument("--num_threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--chunk_size", type=int, default=256, help="answers written (and fsynced) at a time")
    return parser


def main(args: argparse.Namespace) -> None:
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    config = CONFIG.load(args)
    bank = load_task_bank(args.task_conf)
    texts = read_table(Path(args.data_dir) / "text", allow_empty_value=True)
    every_utt = tuple(t for t in args.every_utt_tasks.split(",") if t)
    requests = plan_requests(texts, bank, bank.select_tasks(args.tasks), args.prompts, args.tasks_per_utt,
                             args.prompts_per_task, args.seed, args.max_utts, every_utt)
    params = replace(config.generation, batch_size=args.batch_size or config.generation.batch_size)
    mine = shard_requests(requests, args.shard, args.num_shards)
    model_dir = check_model_dir(teacher_dir(config, args.teacher_dir))
    context = context_length(model_dir)
    if context:
        mine, dropped = fit_context(mine, AutoTokenizer.from_pretrained(model_dir), context - params.max_new_tokens)
        if dropped:
            logger.warning("%d of %d questions left out: their prompt is longer than the teacher's context "
                           "(%d tokens) less max_new_tokens (%d), e.g. %s", len(dropped), len(mine) + len(dropped),
                           context, params.max_new_tokens, dropped[0].key)
    step = targets_shard_step(args.out_dir, args.shard, args.num_shards, mine, config.name,
                              dir_fingerprint(model_dir), {**params.record(args.backend), "dtype": config.dtype})
    if step.skip(f"targets shard {args.shard} already done in {args.out_dir}"):
        return
    generator = load_generator(model_dir, args.backend, params, torch_device(args.device), name=config.name,
                               dtype=config.dtype)
    generate_targets(mine, generator, args.out_dir, step, args.chunk_size)


if __name__ == "__main__":
    run_main(build_parser, main, config=CONFIG)
