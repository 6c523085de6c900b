#!/usr/bin/env python3
"""GPU check without trained weights: random-init models of real shapes on one GPU.

Measures in one run on one device:
- the baseline: a square bf16 matmul (8192^3), timed with CUDA events after warm-up;
- per (Whisper encoder, LLM) pair: the SpeechLLMModel training step (frozen bf16 encoder and LLM,
  float32 conv connector under bf16 autocast, forward + backward + AdamW step on the connector)
  on 16 utterances of 10-20 s speech with a 64-token prompt and a 64-token response; its model
  FLOPs (formula below), TFLOP/s, and MFU: those TFLOP/s over the matmul's;
- per LLM alone: greedy generation with the KV cache, 64 prompts of about 100 tokens, 64 new
  tokens each: answers/s;
- each measurement's peak GPU memory (its weights included);
- ``ddp`` (under torchrun): the first pair's step wrapped in DistributedDataParallel on one GPU
  (NCCL), against the plain step in the same process.

The models are built from transformers configs (whisper-base, whisper-large-v3, SmolLM2-135M,
Qwen2-7B, Llama-2-7B shapes) with random weights, so only torch, transformers and the mtbi
package (on PYTHONPATH) are needed. tools/gpu_check.sh runs both commands and then
tools/bench/gpu_check_report.py, which merges their JSON and prints the table:

    python tools/bench/gpu_check.py measure --out measure.json [--device cuda] [--tiny]
    torchrun --standalone --nproc_per_node 1 tools/bench/gpu_check.py ddp --out ddp.json

``--device cpu --tiny``: tiny shapes, a few steps, float32 weights (a CI check of this script).

Model FLOPs of a training step (what MFU counts). Not counted: the 7B LLM's recomputation
under gradient checkpointing, the padding of LLM rows to the batch's longest, norms,
activation functions, softmax and the loss.
- Frozen Whisper encoder, forward only, on its whole 30 s window (the model's fixed input):
  2 FLOPs per weight per position it is applied at (conv1 at the 3000 input frames, conv2 and
  the layers' matrices at the 1500 output frames) + attention 4 * T^2 * d_model per layer.
- Frozen LLM on each row's own n tokens (prompt text + speech frames + response). Forward:
  2 * N * n (N: the layers' matrices; the input embedding is a lookup) + the output projection
  2 * H * r at the r positions that predict a response token (the step computes logits only
  there) + causal attention 2 * n^2 * d_attn per layer (half of the full n x n scores and
  weighted sum). Backward computes only activation gradients (the weights are frozen):
  2 * N * n + 2 * H * r + 4 * n^2 * d_attn per layer (gradients of queries, keys and values).
- Trainable connector: its forward and backward as torch's flop counter counts them on the
  batch's shapes (about 6 * its weights * its frames: forward, input and weight gradients).
test/test_gpu_check.py checks the weight terms and the connector against torch's flop counter
on the tiny shapes; the attention terms are the formula's alone (the counter does not see inside
the fused attention kernels).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
import transformers
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModelForCausalLM, LlamaConfig, PretrainedConfig, PreTrainedModel, Qwen2Config, WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from mtbi.data.audio import FRAME_SHIFT
from mtbi.models.connectors import ConnectorConfig
from mtbi.models.encoders import WhisperSpeechEncoder
from mtbi.models.interleave import SpeechSegment, TextSegment
from mtbi.models.speech_llm import SpeechBatch, SpeechLLMConfig, SpeechLLMModel

GIB = 2 ** 30
NOMINAL_H200_BF16_TFLOPS = 989.0  # dense bf16 tensor-core peak of an H200 SXM (1979 with sparsity)


@dataclass(frozen=True)
class LLMShape:
    """A decoder-only LLM's shape, as the fields of its transformers config."""

    name: str
    family: str  # llama | qwen2
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    tie_embeddings: bool

    def config(self) -> PretrainedConfig:
        config_class = {"llama": LlamaConfig, "qwen2": Qwen2Config}[self.family]
        return config_class(hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
                            num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
                            num_key_value_heads=self.num_kv_heads, vocab_size=self.vocab_size,
                            tie_word_embeddings=self.tie_embeddings, max_position_embeddings=4096)


@dataclass(frozen=True)
class WhisperShape:
    """A Whisper encoder's shape; ``max_source_positions`` output frames per window (1500: 30 s)."""

    name: str
    d_model: int
    num_layers: int
    num_heads: int
    n_mels: int
    max_source_positions: int = 1500

    def config(self) -> WhisperConfig:
        return WhisperConfig(d_model=self.d_model, encoder_layers=self.num_layers,
                             encoder_attention_heads=self.num_heads, encoder_ffn_dim=4 * self.d_model,
                             num_mel_bins=self.n_mels, max_source_positions=self.max_source_positions,
                             attn_implementation="sdpa")


@dataclass(frozen=True)
class PairPlan:
    """One SpeechLLMModel to train: its encoder, its LLM and the batch size."""

    encoder: WhisperShape
    llm: LLMShape
    batch_size: int
    gradient_checkpointing: bool

    @property
    def name(self) -> str:
        return f"{self.encoder.name} + {self.llm.name}"


@dataclass(frozen=True)
class Plan:
    """What one run measures, and how big."""

    pairs: tuple[PairPlan, ...]  # the first is also the DDP check's model
    generation_llms: tuple[LLMShape, ...]
    connector: ConnectorConfig
    speech_seconds: tuple[float, float]  # utterance lengths, drawn uniformly
    prompt_tokens: int                   # text tokens of the prompt around the speech
    response_tokens: int
    generation_batch: int
    generation_prompt_tokens: int        # about: lengths vary by 10% either way
    generation_new_tokens: int
    matmul_size: int
    warmup: int                          # calls before timing
    steps: int                           # timed training steps
    generation_calls: int                # timed generate calls


WHISPER_BASE = WhisperShape("whisper-base", 512, 6, 8, 80)
WHISPER_LARGE_V3 = WhisperShape("whisper-large-v3", 1280, 32, 20, 128)
SMOLLM2_135M = LLMShape("SmolLM2-135M", "llama", 576, 1536, 30, 9, 3, 49152, True)
QWEN2_7B = LLMShape("Qwen2-7B", "qwen2", 3584, 18944, 28, 28, 4, 152064, False)
LLAMA2_7B = LLMShape("Llama-2-7B", "llama", 4096, 11008, 32, 32, 32, 32000, False)

FULL = Plan(
    pairs=(PairPlan(WHISPER_BASE, SMOLLM2_135M, 16, gradient_checkpointing=False),
           PairPlan(WHISPER_LARGE_V3, QWEN2_7B, 16, gradient_checkpointing=True)),
    generation_llms=(SMOLLM2_135M, QWEN2_7B, LLAMA2_7B),
    connector=ConnectorConfig(kind="conv", stride=8, hidden_size=1024),  # conf/real/train_base.yaml
    speech_seconds=(10.0, 20.0), prompt_tokens=64, response_tokens=64,
    generation_batch=64, generation_prompt_tokens=100, generation_new_tokens=64,
    matmul_size=8192, warmup=2, steps=10, generation_calls=2)

# The same code paths (a Llama and a Qwen2 LLM, gradient checkpointing on the second) at shapes
# a CPU runs in seconds; the Whisper window is 2 s instead of 30 s.
TINY_WHISPER = WhisperShape("tiny-whisper", 32, 2, 2, 80, max_source_positions=100)
TINY_LLAMA = LLMShape("tiny-llama", "llama", 64, 128, 2, 4, 2, 256, True)
TINY_QWEN2 = LLMShape("tiny-qwen2", "qwen2", 64, 128, 2, 4, 2, 256, False)
TINY = Plan(
    pairs=(PairPlan(TINY_WHISPER, TINY_LLAMA, 2, gradient_checkpointing=False),
           PairPlan(TINY_WHISPER, TINY_QWEN2, 2, gradient_checkpointing=True)),
    generation_llms=(TINY_LLAMA, TINY_QWEN2),
    connector=ConnectorConfig(kind="conv", stride=2, hidden_size=32),
    speech_seconds=(1.0, 2.0), prompt_tokens=8, response_tokens=8,
    generation_batch=4, generation_prompt_tokens=10, generation_new_tokens=4,
    matmul_size=256, warmup=1, steps=2, generation_calls=1)


def log(message: str) -> None:
    print(f"gpu_check: {message}", flush=True)


# -- building ----------------------------------------------------------------------------------

@contextlib.contextmanager
def new_weights(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Modules made inside get their weights on ``device`` in ``dtype``: a 7B model is never
    made in float32 or on the host first."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            yield
    finally:
        torch.set_default_dtype(previous)


def build_llm(shape: LLMShape, device: torch.device, dtype: torch.dtype) -> PreTrainedModel:
    with new_weights(device, dtype):
        llm = AutoModelForCausalLM.from_config(shape.config(), attn_implementation="sdpa")
    return llm.to(device)


def build_whisper(shape: WhisperShape, device: torch.device, dtype: torch.dtype) -> WhisperSpeechEncoder:
    with new_weights(device, dtype):
        whisper = WhisperEncoder(shape.config())
    return WhisperSpeechEncoder(whisper.to(device).eval())


def build_speech_llm(pair: PairPlan, connector: ConnectorConfig, device: torch.device,
                     dtype: torch.dtype) -> SpeechLLMModel:
    """Frozen encoder and LLM in ``dtype``; the connector in float32, as stage 6 trains it."""
    encoder, llm = build_whisper(pair.encoder, device, dtype), build_llm(pair.llm, device, dtype)
    config = SpeechLLMConfig(connector=connector, gradient_checkpointing=pair.gradient_checkpointing)
    with device:
        model = SpeechLLMModel(encoder, llm, config)
    return model.to(device).train()


def synthetic_batch(plan: Plan, batch_size: int, n_mels: int, vocab_size: int, device: torch.device,
                    generator: torch.Generator) -> SpeechBatch:
    """Random log-mel utterances of ``plan.speech_seconds``, each inside a prompt of random text
    ids (half before the speech, half after) with a random response."""
    shortest, longest = (round(seconds / FRAME_SHIFT) for seconds in plan.speech_seconds)
    lens = torch.randint(shortest, longest + 1, (batch_size,), generator=generator)
    feats = torch.randn(batch_size, int(lens.max()), n_mels, generator=generator)

    def ids(count: int) -> list[int]:
        return torch.randint(1, vocab_size, (count,), generator=generator).tolist()

    before = plan.prompt_tokens // 2
    segments = [[TextSegment(ids(before)), SpeechSegment(None, None), TextSegment(ids(plan.prompt_tokens - before))]
                for _ in range(batch_size)]
    return SpeechBatch(feats, lens, segments, [ids(plan.response_tokens) for _ in range(batch_size)]).to(device)


# -- FLOP model (see the module docstring) -----------------------------------------------------

def matrix_weights(module: nn.Module) -> int:
    """Weights that multiply activations: matrices and convolution kernels, not biases or norms."""
    return sum(p.numel() for p in module.parameters() if p.dim() >= 2)


def encoder_forward_flops(encoder: WhisperSpeechEncoder, batch_size: int) -> dict[str, float]:
    """The frozen encoder's forward on ``batch_size`` whole windows: weights and attention."""
    whisper = encoder.whisper
    frames_in, frames_out = encoder.max_frames, whisper.config.max_source_positions
    weights = (whisper.conv1.weight.numel() * frames_in + whisper.conv2.weight.numel() * frames_out
               + matrix_weights(whisper.layers) * frames_out)
    attention = len(whisper.layers) * frames_out ** 2 * whisper.config.d_model
    return {"encoder_weights": 2.0 * batch_size * weights, "encoder_attention": 4.0 * batch_size * attention}


def llm_train_flops(llm: PreTrainedModel, tokens_per_row: list[int], predicted_per_row: list[int]) -> dict[str, float]:
    """The frozen LLM's forward and backward (activation gradients only) on rows of
    ``tokens_per_row`` tokens, with the output projection at ``predicted_per_row`` positions:
    weights and causal attention."""
    config = llm.config
    weights = (matrix_weights(llm.get_decoder().layers) * sum(tokens_per_row)
               + llm.get_output_embeddings().weight.numel() * sum(predicted_per_row))
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attention = config.num_hidden_layers * config.num_attention_heads * head_dim * sum(n * n for n in tokens_per_row)
    return {"llm_forward_weights": 2.0 * weights, "llm_forward_attention": 2.0 * attention,
            "llm_backward_weights": 2.0 * weights, "llm_backward_attention": 4.0 * attention}


def connector_train_flops(model: SpeechLLMModel, batch: SpeechBatch) -> float:
    """The connector's forward and backward on the batch's encoder-output shapes, as torch's
    flop counter counts them (so whatever its kind, and without the input gradient of its first
    layer, which autograd skips: the encoder is frozen)."""
    lens = model.encoder.output_lengths(batch.feats_lens)
    frames = batch.feats.new_zeros(len(lens), int(lens.max()), model.encoder.output_size)
    with FlopCounterMode(display=False) as counter:
        model.connector(frames, lens)[0].sum().backward()
    model.connector.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def row_tokens(model: SpeechLLMModel, batch: SpeechBatch) -> list[int]:
    """Each row's LLM input tokens: its prompt text, speech frames and response."""
    speech = model.connector.output_lengths(model.encoder.output_lengths(batch.feats_lens))
    return [sum(len(s.ids) for s in segments if isinstance(s, TextSegment)) + int(frames) + len(response)
            for segments, frames, response in zip(batch.segments, speech.tolist(), batch.responses)]


def train_step_flops(model: SpeechLLMModel, batch: SpeechBatch) -> dict[str, float]:
    """Model FLOPs of one training step on ``batch``, by part, and their ``total``."""
    parts = {**encoder_forward_flops(model.encoder, len(batch.segments)),
             **llm_train_flops(model.llm, row_tokens(model, batch), [len(r) for r in batch.responses]),
             "connector": connector_train_flops(model, batch)}
    return {**parts, "total": sum(parts.values())}


# -- timing ------------------------------------------------------------------------------------

def seconds_per_call(fn: Callable[[], object], calls: int, warmup: int, device: torch.device) -> float:
    """Mean wall time of ``fn`` over ``calls`` calls after ``warmup`` calls (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - start) / calls
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000 / calls


def guarded(name: str, measure: Callable[[], dict[str, Any]], device: torch.device) -> dict[str, Any]:
    """``measure()`` with its name, wall seconds and peak GPU memory; a failure (CUDA out of
    memory or any other error) is recorded as the result so that the next measurement runs."""
    log(f"{name} ...")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        result = {"name": name, **measure()}
    except torch.cuda.OutOfMemoryError:
        result = {"name": name, "error": "out of memory"}
    except Exception as err:  # one broken measurement must not lose the others' figures
        traceback.print_exc()
        result = {"name": name, "error": f"{type(err).__name__}: {err}"}
    result["wall_seconds"] = time.perf_counter() - start
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / GIB
        gc.collect()
        torch.cuda.empty_cache()
    log(f"{name}: {result.get('error', 'done')} in {result['wall_seconds']:.1f} s")
    return result


def autocast(device: torch.device, dtype: torch.dtype) -> Callable[[], contextlib.AbstractContextManager]:
    """The training precision context, as the trainer's: autocast to ``dtype`` on a GPU."""
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext


def training_step(module: nn.Module, optimizer: torch.optim.Optimizer, batch: SpeechBatch,
                  precision: Callable[[], contextlib.AbstractContextManager]) -> Callable[[], None]:
    """One step of stage 6 on ``batch``: forward, backward, AdamW on the trainable weights."""
    def step() -> None:
        with precision():
            loss = module(batch, 1.0 / batch.num_target_tokens)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def trainable_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)


# -- measurements ------------------------------------------------------------------------------

def measure_matmul(plan: Plan, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    n = plan.matmul_size
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty_like(a)
    seconds = seconds_per_call(lambda: torch.mm(a, b, out=c), 50 if device.type == "cuda" else 5, 5, device)
    return {"n": n, "seconds": seconds, "tflops": 2 * n ** 3 / seconds / 1e12}


def measure_training(pair: PairPlan, plan: Plan, device: torch.device, dtype: torch.dtype,
                     baseline_tflops: float | None, nominal_tflops: float | None) -> dict[str, Any]:
    model = build_speech_llm(pair, plan.connector, device, dtype)
    generator = torch.Generator().manual_seed(0)
    batch = synthetic_batch(plan, pair.batch_size, pair.encoder.n_mels, pair.llm.vocab_size, device, generator)
    step = training_step(model, trainable_optimizer(model), batch, autocast(device, dtype))
    seconds = seconds_per_call(step, plan.steps, plan.warmup, device)
    flops = train_step_flops(model, batch)
    tflops = flops["total"] / seconds / 1e12
    return {"encoder": pair.encoder.name, "llm": pair.llm.name, "batch_size": pair.batch_size,
            "speech_seconds": [round(n * FRAME_SHIFT, 2) for n in batch.feats_lens.tolist()],
            "llm_tokens": sum(row_tokens(model, batch)), "gradient_checkpointing": pair.gradient_checkpointing,
            "attention": model.llm.config._attn_implementation, "step_seconds": seconds,
            "model_tflop_per_step": flops["total"] / 1e12,
            "tflop_per_step_by_part": {k: v / 1e12 for k, v in flops.items() if k != "total"},
            "tflops": tflops, "mfu_vs_matmul": tflops / baseline_tflops if baseline_tflops else None,
            "mfu_vs_nominal_peak": tflops / nominal_tflops if nominal_tflops else None}


def left_padded_prompts(plan: Plan, vocab_size: int, device: torch.device,
                        generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``plan.generation_batch`` random prompts of about ``plan.generation_prompt_tokens`` ids
    (10% either way), left-padded with id 0: ids and attention mask."""
    base = plan.generation_prompt_tokens
    lengths = torch.randint(round(0.9 * base), round(1.1 * base) + 1, (plan.generation_batch,), generator=generator)
    width = int(lengths.max())
    ids = torch.randint(1, vocab_size, (plan.generation_batch, width), generator=generator)
    mask = (torch.arange(width)[None, :] >= width - lengths[:, None]).long()
    return (ids * mask).to(device), mask.to(device)


def measure_generation(shape: LLMShape, plan: Plan, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    llm = build_llm(shape, device, dtype).eval()
    ids, mask = left_padded_prompts(plan, shape.vocab_size, device, torch.Generator().manual_seed(0))
    new_tokens = plan.generation_new_tokens

    @torch.inference_mode()
    def answer() -> None:
        # min_new_tokens: a random-init model must not stop early at a random end-of-sequence
        out = llm.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, pad_token_id=0, use_cache=True)
        if out.shape[1] != ids.shape[1] + new_tokens:
            raise RuntimeError(f"generate gave {out.shape[1] - ids.shape[1]} new tokens, not {new_tokens}")

    seconds = seconds_per_call(answer, plan.generation_calls, 1, device)
    return {"llm": shape.name, "batch_size": plan.generation_batch, "prompt_tokens": plan.generation_prompt_tokens,
            "new_tokens": new_tokens, "seconds": seconds, "answers_per_s": plan.generation_batch / seconds,
            "new_tokens_per_s": plan.generation_batch * new_tokens / seconds}


def measure_ddp_step(pair: PairPlan, plan: Plan, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """The plain training step, then the same model wrapped in DDP (as the trainer wraps it)."""
    model = build_speech_llm(pair, plan.connector, device, dtype)
    generator = torch.Generator().manual_seed(0)
    batch = synthetic_batch(plan, pair.batch_size, pair.encoder.n_mels, pair.llm.vocab_size, device, generator)
    optimizer, precision = trainable_optimizer(model), autocast(device, dtype)
    plain = seconds_per_call(training_step(model, optimizer, batch, precision), plan.steps, plan.warmup, device)
    wrapped = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    ddp = seconds_per_call(training_step(wrapped, optimizer, batch, precision), plan.steps, plan.warmup, device)
    grad_device = next(p.device for p in wrapped.parameters() if p.requires_grad)
    return {"model": pair.name, "backend": dist.get_backend(), "world_size": dist.get_world_size(),
            "device": str(grad_device), "plain_step_seconds": plain, "ddp_step_seconds": ddp,
            "ddp_over_plain": ddp / plain}


# -- commands ----------------------------------------------------------------------------------

def setting(args: argparse.Namespace) -> tuple[Plan, torch.device, torch.dtype]:
    """The plan, device and weight dtype the options ask for (bf16 on a GPU, float32 on CPU)."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device is visible; use --device cpu --tiny for the CPU check")
    return (TINY if args.tiny else FULL), device, (torch.bfloat16 if device.type == "cuda" else torch.float32)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} threads"


def run_measurements(args: argparse.Namespace) -> bool:
    """Write the single-process measurements to ``args.out``; False when one failed (not OOM)."""
    plan, device, dtype = setting(args)
    torch.manual_seed(0)
    name = device_name(device)
    # the NVL (PCIe) H200 runs at a lower clock: its peak is not the SXM's
    nominal = NOMINAL_H200_BF16_TFLOPS if "H200" in name and "NVL" not in name and dtype == torch.bfloat16 else None
    log(f"device {name}, {dtype} weights, torch {torch.__version__}, transformers {transformers.__version__}")
    matmul = guarded(f"matmul {str(dtype).removeprefix('torch.')} {plan.matmul_size}^3",
                     lambda: measure_matmul(plan, device, dtype), device)
    baseline = matmul.get("tflops")
    train = [guarded(f"train {pair.name}",
                     lambda pair=pair: measure_training(pair, plan, device, dtype, baseline, nominal), device)
             for pair in plan.pairs]
    generate = [guarded(f"generate {shape.name}", lambda shape=shape: measure_generation(shape, plan, device, dtype),
                        device) for shape in plan.generation_llms]
    results = {"device": name, "device_type": device.type, "dtype": str(dtype).removeprefix("torch."),
               "tiny": args.tiny, "torch": torch.__version__, "transformers": transformers.__version__,
               "nominal_peak_tflops": nominal, "matmul": matmul, "train": train, "generate": generate}
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return all(r.get("error") in (None, "out of memory") for r in [matmul, *train, *generate])


def run_ddp(args: argparse.Namespace) -> bool:
    """Under torchrun: the DDP step on this rank's device; rank 0 writes ``args.out``."""
    plan, device, dtype = setting(args)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        torch.manual_seed(0)
        pair = plan.pairs[0]
        result = guarded(f"ddp {pair.name}", lambda: measure_ddp_step(pair, plan, device, dtype), device)
        if dist.get_rank() == 0:
            Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    finally:
        dist.destroy_process_group()
    return result.get("error") in (None, "out of memory")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for command, help_text in (("measure", "matmul baseline, training steps, generation (one process)"),
                               ("ddp", "the DDP training step (run it under torchrun)")):
        sub = commands.add_parser(command, help=help_text, allow_abbrev=False)
        sub.add_argument("--device", default="cuda", help="cuda (bf16 weights) or cpu (float32)")
        sub.add_argument("--tiny", action="store_true", help="tiny shapes and a few steps (the CPU check)")
        sub.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    return 0 if (run_measurements if args.command == "measure" else run_ddp)(args) else 1


if __name__ == "__main__":
    raise SystemExit(main())
