"""Connectors: output shapes, lengths and time strides."""

from __future__ import annotations

import pytest
import torch

from mtbi.config import from_dict
from mtbi.errors import MtbiError
from mtbi.models.connectors import ConnectorConfig, build_connector

CONFIGS = [
    ConnectorConfig(kind="conv", stride=8, hidden_size=32),
    ConnectorConfig(kind="conv", stride=2, hidden_size=32),
    ConnectorConfig(kind="stack_mlp", stride=5, hidden_size=32),
    ConnectorConfig(kind="qformer", window=4, num_queries=2, hidden_size=32, num_layers=1),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.kind}-{c.stride}")
def test_connector_shapes_and_lengths(config: ConnectorConfig) -> None:
    torch.manual_seed(0)
    connector = build_connector(config, input_size=24, output_size=40)
    lengths = torch.tensor([50, 37, 8])
    frames = torch.randn(3, 50, 24)
    out, out_lens = connector(frames, lengths)
    assert out.shape == (3, int(out_lens.max()), 40)
    assert out_lens.tolist() == connector.output_lengths(lengths).tolist()
    # One output frame covers time_stride input frames.
    assert abs(int(out_lens[0]) * connector.time_stride - 50) <= connector.time_stride + config.kernel_size


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.kind}-{c.stride}")
def test_padding_does_not_change_the_valid_outputs(config: ConnectorConfig) -> None:
    torch.manual_seed(0)
    connector = build_connector(config, input_size=24, output_size=40).eval()
    frames = torch.randn(1, 30, 24)
    alone, lens = connector(frames, torch.tensor([30]))
    padded, _ = connector(torch.cat([frames, torch.randn(1, 18, 24)], dim=1), torch.tensor([30]))
    # Frames of the last few outputs may see the padding through the conv kernel: compare the rest.
    keep = int(lens[0]) - 2
    assert torch.allclose(alone[0, :keep], padded[0, :keep], atol=1e-5)


def test_stride_and_kind_are_checked() -> None:
    with pytest.raises(MtbiError, match="power-of-2"):
        ConnectorConfig(kind="conv", stride=3)
    with pytest.raises(MtbiError, match="use one of conv, stack_mlp, qformer"):
        ConnectorConfig(kind="mlp")
    with pytest.raises(MtbiError, match="unknown key 'strid'; valid keys: kind, stride"):
        from_dict(ConnectorConfig, {"strid": 2}, "conf/train.yaml: model.connector")
