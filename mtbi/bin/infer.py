"""Stage 7: answer the benchmark with speech input (an SLLM of stage 6) or with text input
(the teacher on the transcripts: the upper bound).

  python -m mtbi.bin.infer --bench exp/bench/test/bench.jsonl --input speech \\
      --model_dir exp/sllm_mtbi --feats_dir dump/raw/test --teacher_conf conf/teacher_tiny.yaml \\
      --out_dir exp/sllm_mtbi/bench_test
  python -m mtbi.bin.infer --bench exp/bench/test/bench.jsonl --input text \\
      --teacher_conf conf/teacher_tiny.yaml --teacher_dir exp/teacher --out_dir exp/teacher_text/bench_test

Writes <out_dir>/hyp.jsonl; a killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import replace
from pathlib import Path

import torch

from mtbi.bench.build import read_bench
from mtbi.bench.infer import INPUTS, SpeechAnswerer, TextAnswerer, run_inference
from mtbi.cli import ConfigOption, run_main, torch_device
from mtbi.errors import MtbiError
from mtbi.prepare.teacher import TeacherConfig, teacher_dir
from mtbi.stage import dir_fingerprint, file_id
from mtbi.tasks.generation import load_generator
from mtbi.train.sllm_dir import load_sllm, weights_path

CONFIG = ConfigOption("--teacher_conf", TeacherConfig)  # --set and --print_config act on it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", required=True, help="exp/bench/<test set>/bench.jsonl")
    parser.add_argument("--input", required=True, choices=INPUTS)
    parser.add_argument("--out_dir", required=True, help="<system dir>/bench_<test set>")
    parser.add_argument("--teacher_conf", required=True, help="the teacher (text input) and its decoding parameters")
    parser.add_argument("--teacher_dir", default="exp/teacher", help="where stage 4 put the teacher")
    parser.add_argument("--model_dir", default=None, help="speech input: the SLLM dir of stage 6")
    parser.add_argument("--checkpoint", default=None, help="speech input: checkpoints/<name> instead of the final weights")
    parser.add_argument("--feats_dir", default=None, help="speech input: dump/raw/<test set> or dump/logmel80/<test set> (stage 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch_size", type=int, default=0, help="0: the teacher config's generation batch size")
    parser.add_argument("--num_threads", type=int, default=0, help="torch CPU threads (0: default)")
    return parser


def main(args: argparse.Namespace) -> None:
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    teacher = CONFIG.load(args)
    params = replace(teacher.generation, batch_size=args.batch_size or teacher.generation.batch_size)
    items = read_bench(args.bench)
    device = torch_device(args.device)
    stamp = {"bench": hashlib.sha256(Path(args.bench).read_bytes()).hexdigest(), "input": args.input,
             "gen": params.record("hf")}
    if args.input == "text":
        llm_dir = teacher_dir(teacher, args.teacher_dir)
        stamp["model"] = dir_fingerprint(llm_dir)
        stamp["dtype"] = teacher.dtype
        answerer = TextAnswerer(load_generator(llm_dir, "hf", params, device, name=teacher.name, dtype=teacher.dtype))
    else:
        if not args.model_dir or not args.feats_dir:
            raise MtbiError("--input speech needs --model_dir (stage 6) and --feats_dir (stage 2)")
        model, tokenizer = load_sllm(args.model_dir, args.checkpoint, device)
        stamp["model"] = file_id(weights_path(args.model_dir, args.checkpoint))
        answerer = SpeechAnswerer(model, tokenizer, args.feats_dir, params, device)
    run_inference(items, answerer, args.out_dir, stamp)


if __name__ == "__main__":
    run_main(build_parser, main, config=CONFIG)
