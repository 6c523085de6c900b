"""Strict YAML configs: unknown keys and wrong types are clear errors."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

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


def test_a_config_inherits_its_base_section_by_section(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("kind: a\nsteps: 3\ninner:\n  rate: 2\n  names: [x, y]\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("base: ../base.yaml\nsteps: 4\ninner:\n  names: [z]\n")
    assert load_config(tmp_path / "sub" / "child.yaml", Outer) == Outer("a", 4, None, Inner(2.0, ["z"]))
    (tmp_path / "base.yaml").write_text("base: sub/child.yaml\nkind: a\n")
    with pytest.raises(MtbiError, match="its base configs form a loop"):
        load_config(tmp_path / "sub" / "child.yaml", Outer)
    (tmp_path / "orphan.yaml").write_text("base: nope.yaml\n")
    with pytest.raises(MtbiError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "orphan.yaml", Outer)


def test_dotted_overrides_are_checked_against_the_config(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("kind: a\n")
    config = load_config(tmp_path / "c.yaml", Outer, ["steps=7", "inner.rate=1e-4", "inner.names=[p, q]", "path=x"])
    assert config == Outer("a", 7, "x", Inner(1e-4, ["p", "q"]))
    assert load_config(None, Inner, ["rate=0.25"]) == Inner(0.25)  # no file: the defaults
    with pytest.raises(MtbiError, match=r"--set inner.rat=1: unknown key 'rat' in 'inner'; valid keys: rate, names"):
        load_config(tmp_path / "c.yaml", Outer, ["inner.rat=1"])
    with pytest.raises(MtbiError, match=r"--set step=1: unknown key 'step'; valid keys: kind, steps, path, inner"):
        load_config(tmp_path / "c.yaml", Outer, ["step=1"])
    with pytest.raises(MtbiError, match=r"c.yaml \+ --set: steps: expected int, got 'many'"):
        load_config(tmp_path / "c.yaml", Outer, ["steps=many"])
    with pytest.raises(MtbiError, match=r"--set steps.x=1: 'steps' is a value, not a section"):
        load_config(tmp_path / "c.yaml", Outer, ["steps.x=1"])
    with pytest.raises(MtbiError, match=r"--set steps: expected key.subkey=value"):
        load_config(tmp_path / "c.yaml", Outer, ["steps"])


def _train_bin(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtbi.bin.train", *args], cwd=REPO_ROOT / "egs" / "librispeech_mtbi",
                          capture_output=True, text=True)


def test_print_config_shows_the_resolved_config_without_the_other_arguments() -> None:
    shown = _train_bin("--print_config", "--config", "conf/train_mtbi.yaml", "--set", "optim.max_steps=10",
                       "model.lora.rank=8")
    assert shown.returncode == 0, shown.stderr
    resolved = yaml.safe_load(shown.stdout)
    assert resolved["optim"]["max_steps"] == 10 and resolved["model"]["lora"]["rank"] == 8
    assert resolved["optim"]["learning_rate"] == 0.002  # from conf/train_base.yaml
    assert resolved["kl_weight"] == 0.0 and resolved["data"]["interleave"]["prob"] == 0.0  # defaults included
    typo = _train_bin("--print_config", "--config", "conf/train_mtbi.yaml", "--set", "optim.max_step=10")
    assert typo.returncode == 1
    assert typo.stderr.strip().splitlines() == [
        "ERROR: --set optim.max_step=10: unknown key 'max_step' in 'optim'; valid keys: learning_rate, "
        "weight_decay, warmup_steps, max_steps, batch_size, batch_tokens, accum_grad, grad_clip"]
