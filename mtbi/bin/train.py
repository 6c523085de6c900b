"""Stage 6: train a SpeechLLMModel by behavior imitation (run alone, or under torchrun for DDP).

Reads --config (conf/train_*.yaml), the features of --train_feats/--valid_feats (stage 2; with a
frozen encoder its cached outputs --train_encoded/--valid_encoded when given), the
teacher's targets --train_targets/--valid_targets (stage 5), word alignments --train_align
(stage 3, for interleaving), the encoder of --encoder_dir and the teacher LLM (stage 4).
Writes --out_dir (exp/sllm_<tag>): config.yaml, checkpoints/, losses.jsonl, tensorboard/,
loss_curve.png, model.safetensors. A re-run resumes from the last checkpoint. SIGTERM or SIGUSR1
writes a checkpoint after the step under way and exits with status 75; --out_dir/.lock refuses a
second run on the same dir while this one runs.

  torchrun --standalone --nproc_per_node 4 -m mtbi.bin.train --device cuda ...
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from dataclasses import replace
from pathlib import Path

import torch

from mtbi.cli import ConfigOption, run_main, torch_device
from mtbi.config import load_config
from mtbi.errors import MtbiError
from mtbi.hub import ResolvedModel
from mtbi.models.interleave import InterleaveConfig
from mtbi.models.speech_llm import build_speech_llm
from mtbi.prepare.teacher import TeacherConfig, teacher_model
from mtbi.run_lock import RunLock
from mtbi.stage import Step, marker
from mtbi.tasks.bank import load_task_bank
from mtbi.train import sllm_dir
from mtbi.train.config import TrainConfig
from mtbi.train.dataset import ImitationDataset
from mtbi.train.preemption import EXIT_STOPPED, TrainingStopped
from mtbi.train.trainer import Distributed, Trainer, init_distributed

logger = logging.getLogger(__name__)


CONFIG = ConfigOption("--config", TrainConfig)  # --set and --print_config act on it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="conf/train_*.yaml")
    parser.add_argument("--train_feats", required=True, help="dump/raw/<train set> or dump/logmel80/<train set> (stage 2)")
    parser.add_argument("--train_targets", required=True, help="exp/targets/<train set>/targets.jsonl")
    parser.add_argument("--train_align", default=None, help="data/<train set>/word_align")
    parser.add_argument("--train_encoded", default=None,
                        help="the frozen encoder's outputs of the train set (mtbi.bin.encode_feats), "
                             "read instead of computing them when model.train_encoder is false")
    parser.add_argument("--valid_feats", default=None)
    parser.add_argument("--valid_encoded", default=None)
    parser.add_argument("--valid_targets", default=None)
    parser.add_argument("--encoder_dir", required=True, help="exp/encoder (stage 4)")
    parser.add_argument("--teacher_conf", required=True, help="conf/teacher_*.yaml: the frozen LLM")
    parser.add_argument("--teacher_dir", default="exp/teacher", help="where stage 4 put the teacher")
    parser.add_argument("--task_conf", default=None)
    parser.add_argument("--out_dir", required=True, help="exp/sllm_<tag>")
    parser.add_argument("--device", default="cpu", help="cpu, cuda (each torchrun rank takes its local GPU)")
    parser.add_argument("--num_threads", type=int, default=0, help="torch CPU threads (0: default)")
    return parser


def main(args: argparse.Namespace) -> None:
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    config = CONFIG.load(args)
    device = torch_device(args.device)
    ddp = init_distributed(device)
    out_dir = Path(args.out_dir)
    teacher = load_config(args.teacher_conf, TeacherConfig)
    llm = teacher_model(teacher, args.teacher_dir)
    resolved = sllm_dir.resolved_config(config, teacher.name, teacher.dtype, args.encoder_dir, llm, out_dir,
                                        teacher.generation)
    identity = sllm_dir.stored_equivalent(out_dir, resolved)
    inputs = [p for p in (args.train_targets, Path(args.train_feats) / "utt2num_frames", args.train_align,
                          marker(args.encoder_dir), marker(args.teacher_dir)) if p]
    step = Step(marker(out_dir), identity, inputs)
    if step.skip(f"{out_dir} is already trained with this config"):
        if ddp.is_main:
            sllm_dir.record_generation(out_dir, resolved["generation"])
        return
    with RunLock(out_dir) if ddp.is_main else contextlib.nullcontext():  # the ranks of one run share its lock
        sllm_dir.check_same_config(out_dir, identity)
        # config.yaml says what the stamp says (an older dir's form, if equivalent), plus the runtime keys
        train_locked(args, config, teacher, llm, {**identity, "generation": resolved["generation"]}, step, device, ddp)


def train_locked(args: argparse.Namespace, config: TrainConfig, teacher: TeacherConfig, llm: ResolvedModel,
                 resolved: dict, step: Step, device: torch.device, ddp: Distributed) -> None:
    """Build the SLLM and its data and train it into ``args.out_dir`` (whose lock this run holds)."""
    out_dir = Path(args.out_dir)
    torch.manual_seed(config.seed)
    model, tokenizer = build_speech_llm(config.model, args.encoder_dir, llm.path, teacher.dtype, device)
    bank = load_task_bank(args.task_conf)
    tasks = config.data.tasks if config.data.tasks is not None else bank.train_tasks
    for task in tasks:
        bank.task(task)
    held_out = sorted(set(tasks) & set(bank.heldout_tasks))
    if held_out:
        raise MtbiError(f"{args.config}: data.tasks has held-out task(s) {held_out}; they must never be "
                        "trained with speech (see conf/tasks.yaml)")
    cached = not config.model.train_encoder  # a frozen encoder's outputs can be read from the cache
    train_set = ImitationDataset(args.train_feats, args.train_targets, tokenizer, tasks, config.data,
                                 args.train_align, args.train_encoded if cached else None, config.optim.accum_grad)
    valid_set = None
    if args.valid_feats and args.valid_targets:
        speech_only = replace(config.data, interleave=InterleaveConfig(), utt_fraction=1.0)
        valid_set = ImitationDataset(args.valid_feats, args.valid_targets, tokenizer, tasks, speech_only,
                                     encoded_dir=args.valid_encoded if cached else None)
    if ddp.is_main:
        training_data = {"targets": str(args.train_targets), "tasks": list(tasks), **train_set.summary()}
        sllm_dir.write_config(out_dir, {**resolved, "training_data": training_data})
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        logger.info("SLLM: %.2fM trainable of %.2fM parameters; %d ranks; config %s",
                    trainable / 1e6, sum(p.numel() for p in model.parameters()) / 1e6, ddp.world_size,
                    args.config)
    try:
        Trainer(model, config, train_set, valid_set, out_dir, device, ddp, stage_step=step).train()
    except TrainingStopped as stopped:
        if ddp.is_main:
            print(stopped, file=sys.stderr)
        sys.exit(EXIT_STOPPED)


if __name__ == "__main__":
    run_main(build_parser, main, config=CONFIG)
