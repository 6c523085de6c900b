"""Stage 7: answer the benchmark with speech input (an SLLM of stage 6) or with text input
(the teacher on the transcripts: the upper bound).

  python -m mtbi.bin.infer --bench exp/bench/test/bench.jsonl --input speech \\
      --model_dir exp/sllm_mtbi --feats_dir dump/raw/test --teacher_conf conf/teacher_tiny.yaml \\
      --out_dir exp/sllm_mtbi/bench_test
  python -m mtbi.bin.infer --bench exp/bench/test/bench.jsonl --input text \\
      --teacher_conf conf/teacher_tiny.yaml --teacher_dir exp/teacher --out_dir exp/teacher_text/bench_test

An external test set (mtbi.bin.build_bench --from_jsonl) is answered from its items' audio
files, without --feats_dir; its decoding is the model's own unless --teacher_conf is given:
  python -m mtbi.bin.infer --bench exp/bench/my_set/bench.jsonl --input speech \
      --model_dir exp/sllm_mtbi --out_dir exp/sllm_mtbi/bench_my_set

Writes <out_dir>/hyp.jsonl; a killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import replace
from pathlib import Path

import torch

from mtbi.bench.build import BenchItem, read_bench
from mtbi.bench.infer import INPUTS, SpeechAnswerer, TextAnswerer, run_inference
from mtbi.cli import ConfigOption, run_main, torch_device
from mtbi.data.speech_features import AudioFileFeatures, FeatureSource, SpeechFeatures
from mtbi.errors import MtbiError
from mtbi.prepare.teacher import TeacherConfig, teacher_dir
from mtbi.pretrained import SpeechLLM
from mtbi.stage import dir_fingerprint
from mtbi.tasks.generation import GenerationParams, load_generator

CONFIG = ConfigOption("--teacher_conf", TeacherConfig)  # --set and --print_config act on it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", required=True, help="exp/bench/<test set>/bench.jsonl")
    parser.add_argument("--input", required=True, choices=INPUTS)
    parser.add_argument("--out_dir", required=True, help="<system dir>/bench_<test set>")
    parser.add_argument("--teacher_conf", default=None,
                        help="the teacher (text input) and its decoding parameters (speech input: default the model's)")
    parser.add_argument("--teacher_dir", default="exp/teacher", help="where stage 4 put the teacher")
    parser.add_argument("--model_dir", default=None, help="speech input: the SLLM dir of stage 6")
    parser.add_argument("--checkpoint", default=None, help="speech input: checkpoints/<name> instead of the final weights")
    parser.add_argument("--feats_dir", default=None,
                        help="speech input: dump/raw/<test set> or dump/logmel80/<test set> (stage 2); "
                             "not for an external set, whose items name their audio")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch_size", type=int, default=0, help="0: the teacher config's generation batch size")
    parser.add_argument("--num_threads", type=int, default=0, help="torch CPU threads (0: default)")
    return parser


def main(args: argparse.Namespace) -> None:
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    if args.input == "text" and not args.teacher_conf:
        raise MtbiError("--input text needs --teacher_conf (the teacher that answers)")
    teacher = CONFIG.load(args) if args.teacher_conf else None
    items = read_bench(args.bench)
    device = torch_device(args.device)
    stamp = {"bench": hashlib.sha256(Path(args.bench).read_bytes()).hexdigest(), "input": args.input}
    if args.input == "text":
        if any(not i.transcript for i in items):
            raise MtbiError(f"{args.bench}: items without a transcript cannot be answered with text input; "
                            "give their transcript in the test set")
        params = _with_batch_size(teacher.generation, args.batch_size)
        llm_dir = teacher_dir(teacher, args.teacher_dir)
        stamp.update(model=dir_fingerprint(llm_dir), dtype=teacher.dtype)
        answerer = TextAnswerer(load_generator(llm_dir, "hf", params, device, name=teacher.name, dtype=teacher.dtype))
    else:
        if not args.model_dir:
            raise MtbiError("--input speech needs --model_dir (stage 6)")
        if not args.feats_dir and not any(i.audio for i in items):
            raise MtbiError("--input speech needs --feats_dir (stage 2) for a benchmark built from a data dir")
        sllm = SpeechLLM.from_pretrained(args.model_dir, args.checkpoint, device,
                                         generation=teacher.generation if teacher else None)
        params = _with_batch_size(sllm.generation, args.batch_size)
        stamp["model"] = sllm.identity
        answerer = SpeechAnswerer(sllm, _features(items, args.feats_dir, sllm.n_mels, args.bench), params)
    stamp["gen"] = params.record("hf")
    run_inference(items, answerer, args.out_dir, stamp)


def _with_batch_size(params: GenerationParams, batch_size: int) -> GenerationParams:
    return replace(params, batch_size=batch_size or params.batch_size)


def _features(items: list[BenchItem], feats_dir: str, n_mels: int, bench: str) -> FeatureSource:
    """The features the items are answered from: their own audio files (an external set), else stage 2's."""
    with_audio = {i.utt: i.audio for i in items if i.audio}
    if with_audio:
        if len(with_audio) < len({i.utt for i in items}):
            raise MtbiError(f"{bench}: some items name their audio and some do not; rebuild it with mtbi.bin.build_bench")
        return AudioFileFeatures(with_audio, n_mels)
    return SpeechFeatures(feats_dir)


if __name__ == "__main__":
    run_main(build_parser, main, config=CONFIG)
