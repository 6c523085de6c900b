"""SpeechLLMModel: speech encoder -> trainable connector -> frozen HF causal LM (LoRA optional).

The LLM reads the teacher's prompt with the transcript's tokens replaced by speech frames
(see :mod:`mtbi.models.speech_prompt` and :mod:`mtbi.models.interleave`), so speech input and
text input share one template. Training loss: cross-entropy on the teacher's response tokens,
optionally plus the KL divergence from the frozen LLM's own next-token distributions when it
reads the transcript as text (behavior imitation at the logit level, as BLSP-Emo).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_layers import GradientCheckpointingLayer

from mtbi.errors import MtbiError
from mtbi.models.connectors import ConnectorConfig, build_connector
from mtbi.models.interleave import Segment, SpeechSegment, TextSegment

IGNORE = -100


@dataclass(frozen=True)
class LoraSettings:
    """``model.lora``: LoRA adapters on the frozen LLM through peft (rank 0: none)."""

    rank: int = 0
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


ATTN_IMPLEMENTATIONS = ("sdpa", "flash_attention_2", "eager")


@dataclass(frozen=True)
class SpeechLLMConfig:
    """``model`` in a training config."""

    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train_encoder: bool = False  # the encoder is frozen (and run in eval mode) unless true
    # Recompute the LLM's layer activations in the backward pass instead of keeping them: less
    # memory (a 7B LLM on long speech prompts), about a third more compute.
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None  # the LLM's attention: sdpa, flash_attention_2, eager (None: sdpa)

    def __post_init__(self) -> None:
        if self.attn_implementation not in (None, *ATTN_IMPLEMENTATIONS):
            raise MtbiError(f"model.attn_implementation '{self.attn_implementation}': use one of "
                            f"{', '.join(ATTN_IMPLEMENTATIONS)}")


@dataclass
class SpeechBatch:
    """A collated batch: features, and per example its prompt segments and response ids."""

    feats: torch.Tensor                 # (B, T, n_mels)
    feats_lens: torch.Tensor            # (B,)
    segments: list[list[Segment]]
    responses: list[list[int]]          # teacher response ids (+ eos); empty lists at inference
    text_prompts: list[list[int]] | None = None  # the teacher's own input, for the KL loss
    encoded: bool = False               # feats are already the frozen encoder's outputs (cached)

    def to(self, device: torch.device) -> "SpeechBatch":
        self.feats, self.feats_lens = self.feats.to(device), self.feats_lens.to(device)
        return self

    @property
    def num_target_tokens(self) -> int:
        return sum(len(r) for r in self.responses)


class SpeechLLMModel(nn.Module):
    """Encoder + connector + frozen causal LM.

    The frozen parts may be in bfloat16 or float16 (their ``dtype`` in the encoder and teacher
    configs); the trainable connector always holds float32 weights (autocast computes in the
    training precision). The frozen LLM runs in eval mode (no dropout) unless LoRA trains it.
    """

    def __init__(self, encoder: nn.Module, llm: PreTrainedModel, config: SpeechLLMConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        if config.train_encoder and any(p.dtype != torch.float32 for p in encoder.parameters()):
            raise MtbiError("model.train_encoder: true needs the encoder in float32; set dtype: float32 "
                            "in the encoder config (stage 4)")
        self.connector = build_connector(config.connector, encoder.output_size, llm.get_input_embeddings().embedding_dim)
        for p in llm.parameters():
            p.requires_grad_(False)
        if config.gradient_checkpointing:
            llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if config.lora.rank > 0:
            from peft import LoraConfig, get_peft_model

            llm = get_peft_model(llm, LoraConfig(r=config.lora.rank, lora_alpha=config.lora.alpha,
                                                 lora_dropout=config.lora.dropout,
                                                 target_modules=list(config.lora.target_modules)))
        self.llm = llm
        if not config.train_encoder:
            for p in encoder.parameters():
                p.requires_grad_(False)

    @property
    def frame_shift(self) -> float:
        """Seconds of speech per connector output frame."""
        return self.encoder.frame_shift * self.connector.time_stride

    def train(self, mode: bool = True) -> "SpeechLLMModel":
        super().train(mode)
        if not self.config.train_encoder:
            self.encoder.eval()  # frozen: no dropout, so its outputs could be cached
        if self.config.lora.rank == 0:
            self.llm.eval()  # frozen: imitate the teacher as it answers, without dropout
            if mode and self.config.gradient_checkpointing:
                # transformers recomputes only layers in training mode; the flag of the layer
                # itself decides that, its attention and MLP submodules stay in eval mode (no
                # dropout in Llama, Qwen2, Mistral or Gemma layers; OPT and Falcon layers apply
                # dropout at the layer level: set their dropout to 0 in the LLM's config).
                for module in self.llm.modules():
                    if isinstance(module, GradientCheckpointingLayer):
                        module.training = True
        return self

    def encode_speech(self, feats: torch.Tensor, feats_lens: torch.Tensor,
                      encoded: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Connector frames ``(B, F, H_llm)`` and their lengths ``(B,)``; ``encoded``: ``feats``
        are the frozen encoder's outputs already (:mod:`mtbi.models.encoder_cache`)."""
        if encoded:
            if self.config.train_encoder:
                raise MtbiError("cached encoder outputs cannot train the encoder (model.train_encoder: true); "
                                "train from the log-mel features")
            if feats.shape[-1] != self.encoder.output_size:
                raise MtbiError(f"cached encoder outputs have {feats.shape[-1]} channels, the encoder "
                                f"{self.encoder.output_size}; re-run stage 6 to cache them again")
            return self.connector(feats.float(), feats_lens)
        with torch.set_grad_enabled(self.config.train_encoder and torch.is_grad_enabled()):
            frames, lens = self.encoder(feats, feats_lens)
        return self.connector(frames.float(), lens)  # a bf16 encoder's frames into the float32 connector

    def _speech_slice(self, segment: SpeechSegment, length: int) -> slice:
        first = 0 if segment.start is None else min(length - 1, math.floor(segment.start / self.frame_shift))
        last = length if segment.end is None else math.ceil(segment.end / self.frame_shift)
        return slice(first, max(first + 1, min(length, last)))

    def embed(self, batch: SpeechBatch, pad_left: bool = False,
              speech: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Input embeddings ``(B, L, H)``, attention mask ``(B, L)`` and labels ``(B, L)``
        (response tokens; IGNORE elsewhere). Right-padded for training, left for generation.
        ``speech``: the batch's connector frames and lengths when already computed."""
        embedding = self.llm.get_input_embeddings()
        speech_lens = None
        if speech is not None:
            speech, speech_lens = speech
        elif any(isinstance(s, SpeechSegment) for segs in batch.segments for s in segs):
            speech, speech_lens = self.encode_speech(batch.feats, batch.feats_lens, batch.encoded)
        device = batch.feats.device
        rows, label_rows = [], []
        for b, (segments, response) in enumerate(zip(batch.segments, batch.responses)):
            pieces = []
            for segment in segments:
                if isinstance(segment, TextSegment):
                    pieces.append(embedding(torch.tensor(segment.ids, dtype=torch.long, device=device)))
                else:
                    frames = speech[b, self._speech_slice(segment, int(speech_lens[b]))]
                    pieces.append(frames.to(embedding.weight.dtype))
            prompt_len = sum(p.shape[0] for p in pieces)
            response_ids = torch.tensor(response, dtype=torch.long, device=device)
            pieces.append(embedding(response_ids))
            rows.append(torch.cat(pieces))
            label_rows.append(torch.cat([torch.full((prompt_len,), IGNORE, device=device), response_ids]))
        return _pad(rows, label_rows, pad_left)

    @property
    def caches_prefix(self) -> bool:
        """Whether training runs the prompt tokens that every example of a batch starts with once,
        without gradient, as cached keys and values: they depend on no trainable weight unless
        LoRA adapts the LLM, and transformers drops caches under gradient checkpointing."""
        return self.config.lora.rank == 0 and not self.config.gradient_checkpointing

    def response_logits(self, embeds: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
                        prefix: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The LLM's float32 logits ``(N, V)`` at the positions that predict a response token, and
        those tokens ``(N,)``. The first ``prefix`` positions, the same in every row, run once
        without gradient as cached keys and values. The LLM applies its own head (and any logit
        scaling) through ``logits_to_keep``, only at the columns where some row predicts."""
        targets = labels[:, prefix + 1:]
        predicting = targets != IGNORE
        columns = predicting.any(0).nonzero().squeeze(1)
        cache = None
        if prefix:
            with torch.no_grad():
                cache = self.llm(inputs_embeds=embeds[:1, :prefix].detach(), use_cache=True, logits_to_keep=1).cache
            cache.batch_repeat_interleave(embeds.shape[0])
        logits = self.llm(inputs_embeds=embeds[:, prefix:], attention_mask=mask, cache=cache, use_cache=cache is not None,
                          logits_to_keep=columns).logits
        if logits.shape[1] != len(columns):  # an LLM that ignores logits_to_keep returns every position
            logits = logits[:, columns]
        keep = predicting[:, columns]
        return logits[keep].float(), targets[:, columns][keep]

    def forward(self, batch: SpeechBatch, token_scale: float, kl_weight: float = 0.0,
                ce_weight: float = 1.0) -> dict[str, torch.Tensor]:
        """Summed token losses times ``token_scale`` (e.g. 1 / tokens of the global batch):
        ``loss`` (weighted CE + KL), and ``ce_sum`` / ``kl_sum`` (unscaled, detached)."""
        embeds, mask, labels = self.embed(batch)
        prefix = shared_prefix_length(batch.segments) if self.caches_prefix else 0
        student, targets = self.response_logits(embeds, mask, labels, prefix)
        ce = nn.functional.cross_entropy(student, targets, reduction="sum")
        out = {"ce_sum": ce.detach()}
        loss = ce_weight * ce
        if kl_weight > 0:
            teacher = self.teacher_logits(batch)
            kl = nn.functional.kl_div(student.log_softmax(-1), teacher.log_softmax(-1), log_target=True,
                                      reduction="sum")
            out["kl_sum"] = kl.detach()
            loss = loss + kl_weight * kl
        out["loss"] = loss * token_scale
        return out

    @torch.no_grad()
    def teacher_logits(self, batch: SpeechBatch) -> torch.Tensor:
        """The frozen LLM's logits (adapters off) for each response token when it reads the
        transcript as text: ``(N, V)`` in the order of the student's response tokens."""
        if batch.text_prompts is None:
            raise MtbiError("the KL loss needs the text prompts in the batch (collate with kl)")
        embedding = self.llm.get_input_embeddings()
        device = batch.feats.device
        rows, label_rows = [], []
        for prompt, response in zip(batch.text_prompts, batch.responses):
            ids = torch.tensor(prompt + response, dtype=torch.long, device=device)
            rows.append(embedding(ids))
            label_rows.append(torch.cat([torch.full((len(prompt),), IGNORE, device=device), ids[len(prompt):]]))
        embeds, mask, labels = _pad(rows, label_rows, pad_left=False)
        adapters_off = self.llm.disable_adapter() if self.config.lora.rank > 0 else contextlib.nullcontext()
        with adapters_off:
            return self.response_logits(embeds, mask, labels)[0]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights that training changes (connector, LoRA, the encoder if trained)."""
        return {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load weights saved by :meth:`trainable_state_dict`; their names must match exactly."""
        expected = {name for name, p in self.named_parameters() if p.requires_grad}
        if set(state) != expected:
            missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
            raise MtbiError(f"{source}: weights do not fit this model (missing {missing[:3]}, unexpected "
                            f"{unexpected[:3]}); was it trained with another config?")
        params = dict(self.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                if params[name].shape != value.shape:
                    raise MtbiError(f"{source}: {name} has shape {tuple(value.shape)}, the model "
                                    f"{tuple(params[name].shape)}; was it trained with another config?")
                params[name].copy_(value)


def shared_prefix_length(segments: list[list[Segment]]) -> int:
    """How many leading prompt tokens every example of a batch has in common (text before the
    first speech frame, e.g. the chat template's system prompt), leaving each at least one
    position before its response."""
    firsts = [list(itertools.chain.from_iterable(s.ids for s in itertools.takewhile(
        lambda s: isinstance(s, TextSegment), segs))) for segs in segments]
    shared = 0
    for column in zip(*firsts):
        if any(token != column[0] for token in column):
            break
        shared += 1
    return max(0, min([shared] + [len(ids) - 1 for ids in firsts]))


def _pad(rows: list[torch.Tensor], label_rows: list[torch.Tensor],
         pad_left: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(r.shape[0] for r in rows)
    embeds = rows[0].new_zeros(len(rows), width, rows[0].shape[1])
    mask = torch.zeros(len(rows), width, dtype=torch.long, device=rows[0].device)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long, device=rows[0].device)
    for i, (row, label) in enumerate(zip(rows, label_rows)):
        span = slice(width - row.shape[0], width) if pad_left else slice(0, row.shape[0])
        embeds[i, span], mask[i, span], labels[i, span] = row, 1, label
    return embeds, mask, labels


def build_speech_llm(config: SpeechLLMConfig, encoder_dir: str | Path, llm_dir: str | Path,
                     llm_dtype: str = "float32", device: str | torch.device = "cpu",
                     ) -> tuple[SpeechLLMModel, PreTrainedTokenizerBase]:
    """The SpeechLLMModel of ``config`` with the encoder of ``encoder_dir`` (stage 4) and the frozen
    LLM of ``llm_dir`` (the teacher) in ``llm_dtype``, on ``device``, and the LLM's tokenizer."""
    from transformers import AutoTokenizer

    from mtbi.models.encoders import load_speech_encoder
    from mtbi.tasks.generation import check_model_dir, load_causal_lm

    llm_dir = check_model_dir(llm_dir)
    tokenizer = AutoTokenizer.from_pretrained(llm_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    llm = load_causal_lm(llm_dir, llm_dtype, device, config.attn_implementation)
    model = SpeechLLMModel(load_speech_encoder(encoder_dir).to(device), llm, config)
    return model.to(device), tokenizer
