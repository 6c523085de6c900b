"""--config_set real end to end, with stand-in models: tiny random models of the real architecture
classes (a Qwen2 instruct LLM with its chat template, a large-v3-layout Whisper), served by hub id
from a hub cache the test builds, offline, in bfloat16, with the recipe's own conf/real files
changed only in model_dir and size. Every line of the real path runs, except CUDA itself."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from hub_fixtures import add_to_hub_cache, make_standin_llm, make_standin_whisper
from recipe_fixtures import TINY, make_recipe, run
from teacher_fixtures import SENTENCES

from mtbi.config import load_config
from mtbi.models.encoders import EncoderConfig

LLM_ID, WHISPER_ID = "mtbi-test/tiny-qwen2-instruct", "mtbi-test/tiny-whisper-large-v3"
# The transcript as answer, and the teacher's answers with interleaving: the code paths of all four.
BASELINES = ("asr_sft", "mtbi_interleave")


def set_model(conf: Path, model_dir: str, **changed) -> None:
    """Point the recipe's config ``conf`` to ``model_dir`` and change ``changed``, keeping the rest."""
    config = yaml.safe_load(conf.read_text())
    conf.write_text(yaml.safe_dump({**config, "model_dir": model_dir, **changed}))


@pytest.mark.slow
def test_real_config_set_stages_4_to_8_with_standin_hub_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "hf" / "hub"
    llm_commit = add_to_hub_cache(cache, LLM_ID, make_standin_llm(tmp_path / "llm", SENTENCES * 5))
    whisper_commit = add_to_hub_cache(cache, WHISPER_ID, make_standin_whisper(tmp_path / "whisper"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = make_recipe(tmp_path, "librispeech_mtbi", "librispeech_mtbi")
    assert not any(p.is_symlink() for p in (recipe / "conf" / "real").iterdir())  # this recipe's own
    teacher = yaml.safe_load((recipe / "conf" / "real" / "teacher.yaml").read_text())
    set_model(recipe / "conf" / "real" / "teacher.yaml", LLM_ID,  # short answers: a random LLM never stops
              generation={**teacher["generation"], "max_new_tokens": 16})
    set_model(recipe / "conf" / "real" / "encoder.yaml", WHISPER_ID)

    stages = run(recipe, "--stage", "1", "--stop_stage", "3", "--nj", "2", "--n_mels", "128",
                 "--local_data_opts", TINY)
    assert stages.returncode == 0, stages.stderr[-3000:]
    quick = "--set optim.max_steps=2 optim.batch_tokens=512 optim.accum_grad=1 save_interval=2 valid_examples=4"
    result = run(recipe, "--config_set", "real", "--stage", "4", "--stop_stage", "8", "--n_mels", "128",
                 "--train_opts", quick, "--gen_opts", "--max_utts 4", "--gen_valid_opts", "--max_utts 2",
                 "--bench_opts", "--max_utts 1", "--encoder_cache_max_gb", "0.000001",
                 "--train_confs", " ".join(f"conf/real/train_{tag}.yaml" for tag in BASELINES))
    assert result.returncode == 0, result.stderr[-3000:]
    exp = recipe / "exp_real"
    # Over its disk budget the encoder cache is not written: training runs the frozen Whisper on
    # log-mel computed from the raw audio (stage 2's default) in its DataLoader worker.
    assert "over the budget of 0.0 GB: not cached" in result.stderr
    assert not (exp / "encoder_cache" / "train_clean_100").exists()
    info = json.loads((exp / "teacher" / "mtbi_teacher.json").read_text())
    assert info["model"] == {"model": LLM_ID, "revision": llm_commit}
    encoder = load_config(exp / "encoder" / "encoder.yaml", EncoderConfig)
    assert (encoder.model_dir, encoder.revision, encoder.dtype, encoder.n_mels) == \
        (WHISPER_ID, whisper_commit, "bfloat16", 128)
    records = [json.loads(line) for line in (exp / "targets" / "dev_clean" / "targets.jsonl").read_text().splitlines()]
    assert {r["teacher"] for r in records} == {"Qwen2.5-7B-Instruct"} and {r["gen"]["dtype"] for r in records} == {"bfloat16"}
    for tag in BASELINES:
        resolved = yaml.safe_load((exp / f"sllm_{tag}" / "config.yaml").read_text())
        assert resolved["llm"] == {"model": LLM_ID, "revision": llm_commit} and resolved["llm_dtype"] == "bfloat16"
        assert resolved["encoder_dir"] == "../encoder"
        train = resolved["train"]
        assert train["precision"] == "bf16" and train["model"]["gradient_checkpointing"] is True
        assert train["model"]["attn_implementation"] == "sdpa"
        assert "training done" in (exp / f"sllm_{tag}" / "train.log").read_text()
    table = (exp / "results_test_clean.md").read_text()
    assert "| mtbi_interleave | speech |" in table and "| 2 |" in table  # trained 2 steps

    # exp_real moves to another place (and could to another machine with the same hub cache):
    # the trained SLLM still loads, by hub id and relative paths.
    moved = tmp_path / "elsewhere" / "exp_real"
    moved.parent.mkdir()
    shutil.move(exp, moved)
    os.chdir(tmp_path)
    from mtbi.train.sllm_dir import load_sllm

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    model, _ = load_sllm(moved / "sllm_mtbi_interleave")
    assert next(model.llm.parameters()).dtype == torch.bfloat16
    assert next(model.encoder.parameters()).dtype == torch.bfloat16
    assert next(model.connector.parameters()).dtype == torch.float32
    assert model.encoder.source.commit == whisper_commit
