"""Strict YAML configs: unknown keys and wrong types are clear errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mtbi.config import load_config, save_config
from mtbi.errors import MtbiError


@dataclass(frozen=True)
class Inner:
    rate: float = 0.5
    names: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Outer:
    kind: str
    steps: int = 10
    path: str | None = None
    inner: Inner = field(default_factory=Inner)


def _load(tmp_path: Path, text: str) -> Outer:
    (tmp_path / "c.yaml").write_text(text)
    return load_config(tmp_path / "c.yaml", Outer)


def test_values_and_defaults(tmp_path: Path) -> None:
    config = _load(tmp_path, "kind: a\nsteps: 3\ninner:\n  rate: 1\n  names: [x, y]\n")
    assert config == Outer("a", 3, None, Inner(1.0, ["x", "y"]))
    save_config(config, tmp_path / "again.yaml")
    assert load_config(tmp_path / "again.yaml", Outer) == config


def test_unknown_key_lists_valid_keys(tmp_path: Path) -> None:
    with pytest.raises(MtbiError, match=r"c.yaml: unknown key 'step'; valid keys: kind, steps, path, inner"):
        _load(tmp_path, "kind: a\nstep: 3\n")
    with pytest.raises(MtbiError, match=r"c.yaml: inner: unknown key 'rat'; valid keys: rate, names"):
        _load(tmp_path, "kind: a\ninner: {rat: 1}\n")


@pytest.mark.parametrize("text, message", [
    ("kind: a\nsteps: ten\n", r"steps: expected int, got 'ten'"),
    ("kind: a\nsteps: true\n", r"steps: expected int, got True"),
    ("kind: a\ninner: {names: x}\n", r"inner: names: expected a list, got 'x'"),
    ("steps: 1\n", r"missing required key 'kind'"),
    ("- a\n", r"expected a mapping"),
    ("kind: [a\n", r"not valid YAML"),
])
def test_type_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(MtbiError, match=message):
        _load(tmp_path, text)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MtbiError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml", Outer)
