"""Every YAML under egs/*/conf, of every config set and recipe, loads into its typed config (so
every key it names exists), and every file, package and task it names exists."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from mtbi.config import load_config
from mtbi.hub import is_hub_id
from mtbi.packaged import find_packaged_file, packaged_files
from mtbi.prepare.encoder import EncoderPrepConfig
from mtbi.prepare.teacher import TeacherConfig
from mtbi.tasks.bank import TaskConfig, load_task_bank
from mtbi.train.config import TrainConfig

CONFIGS = sorted(path for conf in REPO_ROOT.glob("egs/*/conf") for path in conf.rglob("*.yaml"))


def _class_of(path: Path) -> type:
    if path.name == "tasks.yaml":
        return TaskConfig
    for prefix, cls in (("teacher", TeacherConfig), ("encoder", EncoderPrepConfig), ("train_", TrainConfig)):
        if path.name.startswith(prefix):
            return cls
    raise AssertionError(f"{path}: no config class for this file name; name it tasks.yaml, teacher*.yaml, "
                         "encoder*.yaml or train_*.yaml")


def _conf_dir(path: Path) -> Path:
    """The recipe's conf/ that holds ``path``."""
    return next(p for p in path.parents if p.name == "conf")


def _assert_model_dir(model_dir: str, path: Path) -> None:
    assert is_hub_id(model_dir) or (Path(model_dir) / "config.json").is_file(), \
        f"{path}: model_dir {model_dir} is neither a model dir nor a hub id"


def test_the_configs_are_found() -> None:
    names = {p.relative_to(_conf_dir(p)).as_posix() for p in CONFIGS}
    assert {"tasks.yaml", "teacher_tiny.yaml", "train_base.yaml", "smol/train_mtbi.yaml", "real/encoder.yaml"} <= names
    recipes = {p.relative_to(REPO_ROOT).parts[1] for p in CONFIGS}
    assert {"TEMPLATE", "librispeech_mtbi", "commonvoice_mtbi"} <= recipes


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO_ROOT / "egs")))
def test_config_loads_and_what_it_names_exists(path: Path) -> None:
    config = load_config(path, _class_of(path))
    bank = load_task_bank(_conf_dir(path) / "tasks.yaml")
    if isinstance(config, TaskConfig):
        assert config.bank is None or Path(config.bank).is_file()
        assert set(config.heldout_tasks) <= set(bank.tasks)
    elif isinstance(config, TeacherConfig):
        if config.kind == "hf":
            _assert_model_dir(config.model_dir, path)
        elif config.kind == "gguf":
            assert find_packaged_file(config.gguf_package, config.gguf_file).is_file()
    elif isinstance(config, EncoderPrepConfig):
        if config.model_dir:
            _assert_model_dir(config.model_dir, path)
        for package in config.ct2_packages or []:
            assert packaged_files(package), f"{path}: package {package} has no files"
    elif path.name != "train_base.yaml":  # a training config; its base alone names no tasks
        tasks = config.data.tasks if config.data.tasks is not None else bank.train_tasks
        assert tasks and set(tasks) <= set(bank.train_tasks), f"{path}: data.tasks {tasks} are not train tasks"


def _conf_files(conf: Path) -> list[str]:
    return sorted(str(p.relative_to(conf)) for p in conf.rglob("*") if not p.is_dir())


def test_each_recipe_has_its_own_configs(tmp_path: Path) -> None:
    """A recipe's conf/ is its own to edit (an edit never changes another recipe): files, not links,
    the same set as TEMPLATE's, which setup.sh copies into a new recipe."""
    template = REPO_ROOT / "egs" / "TEMPLATE" / "conf"
    made = tmp_path / "toy_mtbi"
    subprocess.run([str(REPO_ROOT / "egs" / "TEMPLATE" / "setup.sh"), str(made)], check=True, capture_output=True)
    for conf in [REPO_ROOT / "egs" / r / "conf" for r in ("librispeech_mtbi", "commonvoice_mtbi")] + [made / "conf"]:
        assert _conf_files(conf) == _conf_files(template), conf
        assert not [p for p in conf.rglob("*") if p.is_symlink()], conf
    assert [(made / "conf" / f).read_bytes() for f in _conf_files(template)] == \
        [(template / f).read_bytes() for f in _conf_files(template)]


def test_the_baselines_of_a_set_differ_only_in_their_data() -> None:
    """The schedule and model live in one train_base.yaml per config set: one edit changes all four."""
    for conf in (REPO_ROOT / "egs").glob("*/conf/**/train_base.yaml"):
        base = load_config(conf, TrainConfig)
        for tag in ("asr_sft", "blsp", "mtbi", "mtbi_interleave"):
            config = load_config(conf.parent / f"train_{tag}.yaml", TrainConfig)
            assert (config.model, config.optim, config.save_interval) == (base.model, base.optim, base.save_interval)
