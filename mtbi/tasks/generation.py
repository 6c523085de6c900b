"""Greedy answer generation by the teacher LLM: batched with a KV cache, or through vLLM.

``HFGenerator.complete`` sorts prompts by length, left-pads each batch and decodes greedily
with ``model.generate`` (KV cache on); its answers equal one-by-one generation
(``generate_one``), which the tests check. Each answer says whether it was cut at
``max_new_tokens`` (no end-of-sequence token), so that training does not teach to stop there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from mtbi.errors import MtbiError
from mtbi.hub import torch_dtype


@dataclass(frozen=True)
class GenerationParams:
    """Decoding parameters, recorded with every target (``gen`` in targets.jsonl)."""

    max_new_tokens: int = 48
    batch_size: int = 32
    do_sample: bool = False

    def record(self, backend: str) -> dict:
        return {"backend": backend, "do_sample": self.do_sample, "max_new_tokens": self.max_new_tokens}


@dataclass(frozen=True)
class Completion:
    """One answer, and whether it was cut at ``max_new_tokens`` instead of ending by itself."""

    text: str
    truncated: bool


class Generator(Protocol):
    tokenizer: PreTrainedTokenizerBase
    model_id: str
    backend: str
    params: GenerationParams

    def complete(self, prompts: list[str]) -> list[Completion]: ...

    def generate(self, prompts: list[str]) -> list[str]: ...


def check_model_dir(model_dir: str | Path) -> Path:
    """Check that ``model_dir`` is a local HF model dir with weights and a tokenizer."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise MtbiError(f"{model_dir}: not a model dir (no config.json); run stage 4 or fix "
                        "the teacher path in the teacher config")
    if not any((model_dir / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise MtbiError(f"{model_dir}: no tokenizer (tokenizer.json, tokenizer.model or vocab.json); "
                        "save the tokenizer into the model dir")
    return model_dir


def load_causal_lm(model_dir: str | Path, dtype: str = "float32", device: str | torch.device = "cpu",
                   attn_implementation: str | None = None) -> PreTrainedModel:
    """The frozen causal LM of ``model_dir`` in eval mode, loaded straight into ``dtype`` on
    ``device`` (transformers reads the safetensors shard by shard: no float32 copy, no random
    init first)."""
    device = torch.device(device)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch_dtype(dtype), attn_implementation=attn_implementation,
        device_map=str(device) if device.type != "cpu" else None)
    return model.eval()


def context_length(model_dir: str | Path) -> int | None:
    """The longest input (prompt + answer tokens) the model of ``model_dir`` was built for, from
    its config.json; None when it does not say."""
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if isinstance(config.get(key), int):
            return config[key]
    return None


class HFGenerator:
    """Batched greedy generation with a transformers causal LM."""

    backend = "hf"

    def __init__(self, model_dir: str | Path, params: GenerationParams = GenerationParams(),
                 device: str = "cpu", dtype: str = "float32", name: str | None = None) -> None:
        model_dir = check_model_dir(model_dir)
        self.params = params
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = load_causal_lm(model_dir, dtype, self.device)
        self.model_id = name or model_dir.resolve().name

    @torch.inference_mode()
    def _generate_batch(self, prompts: list[str]) -> list[Completion]:
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = batch.to(self.device)
        output = self.model.generate(**batch, do_sample=False, max_new_tokens=self.params.max_new_tokens,
                                     pad_token_id=self.tokenizer.pad_token_id,
                                     eos_token_id=self.tokenizer.eos_token_id)
        new_tokens = output[:, batch["input_ids"].shape[1]:]
        ended = (new_tokens == self.tokenizer.eos_token_id).any(dim=1).tolist()
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [Completion(text.strip(), not end) for text, end in zip(texts, ended)]

    def complete(self, prompts: list[str]) -> list[Completion]:
        """Answers to ``prompts`` in their order, generated in length-sorted batches."""
        lengths = [len(ids) for ids in self.tokenizer(prompts, add_special_tokens=False)["input_ids"]]
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        answers: list[Completion] = [Completion("", False)] * len(prompts)
        size = self.params.batch_size
        for start in range(0, len(order), size):
            chunk = order[start:start + size]
            for i, answer in zip(chunk, self._generate_batch([prompts[i] for i in chunk])):
                answers[i] = answer
        return answers

    def generate(self, prompts: list[str]) -> list[str]:
        """The texts of :meth:`complete`."""
        return [c.text for c in self.complete(prompts)]

    def generate_one(self, prompt: str) -> str:
        """The answer to one prompt, without batching (the reference for tests and benchmarks)."""
        return self._generate_batch([prompt])[0].text


class VLLMGenerator:
    """Greedy generation with vLLM (optional; for large teachers on GPUs)."""

    backend = "vllm"

    def __init__(self, model_dir: str | Path, params: GenerationParams = GenerationParams(),
                 dtype: str = "float32", name: str | None = None) -> None:
        model_dir = check_model_dir(model_dir)
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise MtbiError("--backend vllm needs the vllm package; pip install vllm "
                            "into tools/venv, or use --backend hf") from None
        self.llm = LLM(model=str(model_dir), dtype=dtype)
        self.sampling = SamplingParams(temperature=0.0, max_tokens=params.max_new_tokens)
        self.tokenizer = self.llm.get_tokenizer()
        self.params = params
        self.model_id = name or model_dir.resolve().name

    def complete(self, prompts: list[str]) -> list[Completion]:
        outputs = self.llm.generate(prompts, self.sampling, use_tqdm=False)
        return [Completion(o.outputs[0].text.strip(), o.outputs[0].finish_reason == "length") for o in outputs]

    def generate(self, prompts: list[str]) -> list[str]:
        return [c.text for c in self.complete(prompts)]


def load_generator(model_dir: str | Path, backend: str = "hf", params: GenerationParams = GenerationParams(),
                   device: str = "cpu", name: str | None = None, dtype: str = "float32") -> Generator:
    """The teacher's generator for ``backend`` (``hf`` or ``vllm``) with its weights in ``dtype``;
    ``name`` is recorded with its answers (default: the model dir's name)."""
    if backend == "hf":
        return HFGenerator(model_dir, params, device=device, dtype=dtype, name=name)
    if backend == "vllm":
        return VLLMGenerator(model_dir, params, dtype=dtype, name=name)
    raise MtbiError(f"unknown generation backend '{backend}'; use hf or vllm")
