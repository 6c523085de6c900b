"""Batched teacher generation equals one-by-one generation; clear errors for bad model dirs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from teacher_fixtures import SENTENCES, make_random_teacher

from mtbi.errors import MtbiError
from mtbi.tasks.generation import GenerationParams, HFGenerator, load_generator
from mtbi.tasks.prompting import render_prompt


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_teacher(tmp_path_factory.mktemp("teacher"))


def test_batched_equals_sequential(teacher_dir: Path) -> None:
    generator = HFGenerator(teacher_dir, GenerationParams(max_new_tokens=12, batch_size=3))
    prompts = [render_prompt(generator.tokenizer, p, s) for p in
               ("Repeat: {transcript}", "Who is this about? {transcript}")
               for s in SENTENCES + [SENTENCES[0].split(" in ")[0], "the dog"]]
    lengths = {len(generator.tokenizer(p)["input_ids"]) for p in prompts}
    assert len(lengths) >= 4  # batches really mix lengths, so left padding is exercised
    batched = generator.generate(prompts)
    sequential = [generator.generate_one(p) for p in prompts]
    assert batched == sequential
    assert all(batched) and len(set(batched)) > 1


def test_missing_model_dir_and_tokenizer(tmp_path: Path, teacher_dir: Path) -> None:
    with pytest.raises(MtbiError, match="not a model dir \\(no config.json\\); run stage 4"):
        load_generator(tmp_path / "nothing")
    broken = tmp_path / "no_tokenizer"
    shutil.copytree(teacher_dir, broken)
    (broken / "tokenizer.json").unlink()
    with pytest.raises(MtbiError, match="no tokenizer"):
        load_generator(broken)
    with pytest.raises(MtbiError, match="unknown generation backend 'onnx'"):
        load_generator(teacher_dir, backend="onnx")
