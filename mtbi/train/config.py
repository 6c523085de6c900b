"""A training config (``conf/train_*.yaml``): the SpeechLLMModel, its data and its optimization."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mtbi.errors import MtbiError
from mtbi.models.speech_llm import SpeechLLMConfig
from mtbi.train.dataset import DataConfig

PRECISIONS = {"float32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class OptimConfig:
    """``optim`` in a training config: AdamW with linear warmup and cosine decay to 0."""

    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    max_steps: int = 1000
    batch_size: int = 32      # examples per micro-batch, all ranks together
    # > 0: micro-batches of up to this many padded LLM positions (the longest example's speech
    # frames after the connector + prompt + response tokens, times the examples), all ranks
    # together, with one example per utterance where the data allows; batch_size is then unused.
    batch_tokens: int = 0
    accum_grad: int = 1       # micro-batches per optimizer step
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.batch_tokens < 0:
            raise MtbiError(f"optim.batch_tokens {self.batch_tokens}: use 0 (batches of batch_size examples) "
                            "or a positive number of padded positions")


@dataclass(frozen=True)
class TrainConfig:
    """A training config (``conf/train_*.yaml``)."""

    model: SpeechLLMConfig = field(default_factory=SpeechLLMConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ce_weight: float = 1.0
    kl_weight: float = 0.0         # > 0: add KL to the frozen LLM's logits on the transcript
    seed: int = 0
    precision: str = "float32"     # bf16 (GPU or CPU) or fp16 (GPU): autocast; trainable weights stay float32
    log_interval: int = 10
    save_interval: int = 200       # checkpoint and validation loss every so many steps
    keep_checkpoints: int = 2
    valid_examples: int = 256      # validation loss on the first so many validation examples
    bucketing: bool = True
    num_workers: int = 1

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise MtbiError(f"precision '{self.precision}': use one of {', '.join(PRECISIONS)}")
