"""mtbi.run_names and mtbi.bin.run_names: the one owner of run dir names, and what it refuses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

from mtbi.config import load_config
from mtbi.errors import MtbiError
from mtbi.run_names import BASELINES, RunName, config_tag, run_of, system_of
from mtbi.train.config import TrainConfig

RECIPE_CONF = REPO_ROOT / "egs" / "librispeech_mtbi" / "conf"


def test_names_round_trip() -> None:
    for run, name, system in ((RunName("mtbi"), "sllm_mtbi", "mtbi"),
                              (RunName("mtbi", seed=2), "sllm_mtbi_seed2", "mtbi"),
                              (RunName("asr_sft", 10, 1), "sllm_asr_sft_frac10_seed1", "asr_sft_frac10"),
                              (RunName("mtbi_il_prob1"), "sllm_mtbi_il_prob1", "mtbi_il_prob1")):
        assert run.dir_name == name and RunName.parse(name) == run and run.system == system
        assert system_of(Path("exp") / name) == system
    assert RunName("blsp", 25).share == 0.25 and RunName("blsp").share == 1.0
    assert RunName.parse("teacher_text") is None and system_of("exp/teacher_text") == "teacher_text"
    assert run_of("conf/train_mtbi_frac50.yaml", 1) == RunName("mtbi", 50, 1)


def test_config_names_that_would_be_misread_are_refused() -> None:
    assert config_tag("conf/smol/train_mtbi_interleave.yaml") == "mtbi_interleave"
    for bad, why in (("conf/train_mtbi_seed1.yaml", "ends like a seed suffix"),
                     ("conf/mtbi.yaml", "is named train_<tag>.yaml"),
                     ("conf/train_my mtbi.yaml", "only [A-Za-z0-9_.-]"),
                     ("conf/train_.yaml", "must start with a letter or digit")):
        with pytest.raises(MtbiError, match=why.replace("[", r"\[").replace("]", r"\]")):
            config_tag(bad)


def _bin(*args: str, cwd: Path = RECIPE_CONF.parent) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtbi.bin.run_names", *args], cwd=cwd, capture_output=True, text=True)


def test_the_driver_gets_its_runs_and_baselines_from_the_bin() -> None:
    baselines = _bin("baselines", "--conf_dir", "conf/smol")
    assert baselines.stdout.split() == [f"conf/smol/train_{tag}.yaml" for tag in BASELINES]
    runs = _bin("runs", "--expdir", "exp", "--seeds", "2", "conf/train_mtbi.yaml", "conf/train_blsp.yaml")
    assert runs.returncode == 0, runs.stderr
    assert runs.stdout.splitlines() == ["conf/train_mtbi.yaml 0 exp/sllm_mtbi", "conf/train_mtbi.yaml 1 exp/sllm_mtbi_seed1",
                                        "conf/train_blsp.yaml 0 exp/sllm_blsp", "conf/train_blsp.yaml 1 exp/sllm_blsp_seed1"]
    assert _bin("teacher", "--expdir", "exp_smol").stdout == "exp_smol/teacher_text\n"


def test_colliding_configs_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "train_mtbi.yaml").write_text(f"base: {RECIPE_CONF / 'train_mtbi.yaml'}\n")
    (tmp_path / "train_mtbi_frac30.yaml").write_text(f"base: {RECIPE_CONF / 'train_mtbi.yaml'}\n")
    for configs, message in (
            ([str(RECIPE_CONF / "train_mtbi.yaml"), str(tmp_path / "other" / "train_mtbi.yaml")],
             "both train the system 'mtbi' (sllm_mtbi); rename one of them"),
            ([str(tmp_path / "train_mtbi_frac30.yaml")],
             "names a run on 30% of the training utterances, but data.utt_fraction is None"),
            ([str(tmp_path / "train_x_seed3.yaml")], "ends like a seed suffix")):
        result = _bin("runs", "--expdir", "exp", *configs)
        assert result.returncode == 1 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_share_configs_inherit_the_recipe_config_by_a_relative_path(tmp_path: Path) -> None:
    out = tmp_path / "exp" / "study" / "conf"
    written = _bin("share_configs", "--conf_dir", str(RECIPE_CONF), "--out_dir", str(out), "--fractions", "0.1", "0.25",
                   "--tags", "asr_sft", "mtbi")
    assert written.returncode == 0, written.stderr
    assert [Path(p).name for p in written.stdout.split()] == ["train_asr_sft_frac10.yaml", "train_mtbi_frac10.yaml",
                                                              "train_asr_sft_frac25.yaml", "train_mtbi_frac25.yaml"]
    text = yaml.safe_load((out / "train_mtbi_frac25.yaml").read_text())
    assert not Path(text["base"]).is_absolute()
    share = load_config(out / "train_mtbi_frac25.yaml", TrainConfig)
    assert share.data.utt_fraction == 0.25
    assert share.data.tasks == load_config(RECIPE_CONF / "train_mtbi.yaml", TrainConfig).data.tasks
    runs = _bin("runs", "--expdir", "exp", str(out / "train_mtbi_frac25.yaml"))
    assert runs.stdout.split()[2] == "exp/sllm_mtbi_frac25"  # the share checks out
    for bad in ("2", "0", "half"):
        refused = _bin("share_configs", "--conf_dir", str(RECIPE_CONF), "--out_dir", str(out), "--fractions", bad,
                       "--tags", "mtbi")
        assert refused.returncode == 1 and "--fractions: each must be a number between 0 and 1" in refused.stderr
    missing = _bin("share_configs", "--conf_dir", str(RECIPE_CONF), "--out_dir", str(out), "--fractions", "0.5",
                   "--tags", "nope")
    assert missing.returncode == 1 and "train_nope.yaml is missing" in missing.stderr
