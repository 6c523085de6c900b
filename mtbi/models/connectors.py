"""Connectors: map speech encoder frames ``(B, T, H_enc)`` to LLM input embeddings ``(B, F, H_llm)``.

Three designs from the literature, behind one interface (``forward``, ``output_lengths`` and
``time_stride``, the number of encoder frames one output frame covers, which interleaving uses
to turn word times into frame indices):

- ``conv``: a stack of stride-2 1-D convolutions, as BLSP's subsampler (stride 8 = 3 layers);
- ``stack_mlp``: concatenate ``stride`` consecutive frames, then a 2-layer MLP, as SLAM-ASR;
- ``qformer``: learned queries cross-attending to fixed windows of frames (SALMONN's window-level
  Q-Former), so that the output keeps a time axis: ``num_queries`` outputs per ``window`` frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mtbi.errors import MtbiError

KINDS = ("conv", "stack_mlp", "qformer")


@dataclass(frozen=True)
class ConnectorConfig:
    """``model.connector`` in a training config."""

    kind: str = "conv"
    stride: int = 2            # conv (a power of 2) and stack_mlp: encoder frames per output frame
    hidden_size: int = 256
    kernel_size: int = 5       # conv
    window: int = 4            # qformer: encoder frames per window
    num_queries: int = 2       # qformer: outputs per window
    num_layers: int = 2        # qformer: transformer decoder layers
    num_heads: int = 4         # qformer
    dropout: float = 0.0       # qformer

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MtbiError(f"connector kind '{self.kind}': use one of {', '.join(KINDS)}")
        if self.kind == "conv" and (self.stride < 1 or self.stride & (self.stride - 1)):
            raise MtbiError(f"the conv connector needs a power-of-2 stride, got {self.stride}")
        if self.kind == "qformer" and (self.window % self.num_queries or self.hidden_size % self.num_heads):
            raise MtbiError("the qformer connector needs window divisible by num_queries and "
                            "hidden_size divisible by num_heads")


def _mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """``(B, width)`` bool mask, True at valid positions."""
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]


class ConvSubsampler(nn.Module):
    """BLSP-style: log2(stride) Conv1d(kernel, stride 2) + GELU layers, then a projection."""

    def __init__(self, input_size: int, output_size: int, config: ConnectorConfig) -> None:
        super().__init__()
        self.kernel_size = config.kernel_size
        self.num_layers = int(math.log2(config.stride))
        channels = [input_size] + [config.hidden_size] * self.num_layers
        self.convs = nn.ModuleList(
            nn.Conv1d(channels[i], channels[i + 1], config.kernel_size, stride=2, padding=config.kernel_size // 2)
            for i in range(self.num_layers))
        self.proj = nn.Linear(channels[-1], output_size)
        self.time_stride = float(config.stride)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        pad = self.kernel_size // 2
        for _ in range(self.num_layers):
            lengths = torch.div(lengths + 2 * pad - self.kernel_size, 2, rounding_mode="floor") + 1
        return lengths

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (frames * _mask(lengths, frames.shape[1])[..., None]).transpose(1, 2)
        for conv in self.convs:
            x = nn.functional.gelu(conv(x))
        return self.proj(x.transpose(1, 2)), self.output_lengths(lengths)


class StackMLP(nn.Module):
    """SLAM-ASR-style: ``stride`` consecutive frames concatenated, then Linear-ReLU-Linear."""

    def __init__(self, input_size: int, output_size: int, config: ConnectorConfig) -> None:
        super().__init__()
        self.stride = config.stride
        self.mlp = nn.Sequential(nn.Linear(input_size * config.stride, config.hidden_size), nn.ReLU(),
                                 nn.Linear(config.hidden_size, output_size))
        self.time_stride = float(config.stride)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths + self.stride - 1, self.stride, rounding_mode="floor")

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, width, channels = frames.shape
        padded = -width % self.stride
        x = frames * _mask(lengths, width)[..., None]
        x = nn.functional.pad(x, (0, 0, 0, padded)).reshape(batch, (width + padded) // self.stride, -1)
        return self.mlp(x), self.output_lengths(lengths)


class WindowQFormer(nn.Module):
    """Window-level Q-Former: ``num_queries`` learned queries attend (cross-attention, with
    self-attention among themselves) to each window of ``window`` encoder frames."""

    def __init__(self, input_size: int, output_size: int, config: ConnectorConfig) -> None:
        super().__init__()
        self.window = config.window
        self.num_queries = config.num_queries
        self.input_proj = nn.Linear(input_size, config.hidden_size)
        self.queries = nn.Parameter(torch.randn(config.num_queries, config.hidden_size) * 0.02)
        self.position = nn.Parameter(torch.randn(config.window, config.hidden_size) * 0.02)
        layer = nn.TransformerDecoderLayer(config.hidden_size, config.num_heads, 4 * config.hidden_size,
                                           config.dropout, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, config.num_layers)
        self.proj = nn.Linear(config.hidden_size, output_size)
        self.time_stride = config.window / config.num_queries

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths + self.window - 1, self.window, rounding_mode="floor") * self.num_queries

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, width, _ = frames.shape
        padded = -width % self.window
        windows = (width + padded) // self.window
        x = nn.functional.pad(self.input_proj(frames), (0, 0, 0, padded))
        x = x.reshape(batch * windows, self.window, -1) + self.position
        valid = nn.functional.pad(_mask(lengths, width), (0, padded)).reshape(batch * windows, self.window)
        valid[:, 0] = True  # a window wholly past the end attends to its (masked-out) first frame
        queries = self.queries.expand(batch * windows, -1, -1)
        out = self.decoder(queries, x, memory_key_padding_mask=~valid)
        out = out.reshape(batch, windows * self.num_queries, -1)
        return self.proj(out), self.output_lengths(lengths)


def build_connector(config: ConnectorConfig, input_size: int, output_size: int) -> nn.Module:
    """The connector of ``config`` from encoder width ``input_size`` to LLM width ``output_size``."""
    cls = {"conv": ConvSubsampler, "stack_mlp": StackMLP, "qformer": WindowQFormer}[config.kind]
    return cls(input_size, output_size, config)
