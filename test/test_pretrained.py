"""Using a trained SLLM: SpeechLLM.from_pretrained and answer/stream, mtbi.bin.ask, mtbi.bin.export
(a relocatable dir with a model card, hub references), on espeak-ng speech and a random model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from hub_fixtures import add_to_hub_cache
from sllm_fixtures import VOICES, make_model_dirs, make_trained_dir
from teacher_fixtures import SENTENCES

from mtbi import SpeechLLM
from mtbi.data.audio import AudioError
from mtbi.errors import MtbiError
from mtbi.export import export_sllm
from mtbi.hub import ResolvedModel
from mtbi.mini.tts import Synthesizer

QUESTION = "Who is this sentence about? {transcript}"  # a seen prompt of qa_subject


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A trained-like SLLM dir in ``<root>/exp/sllm_random`` and three espeak-ng FLAC files at 22.05 kHz."""
    root = tmp_path_factory.mktemp("pretrained")
    encoder, teacher = make_model_dirs(root / "exp")
    model_dir = make_trained_dir(ResolvedModel(teacher), encoder, root / "exp" / "sllm_random")
    synthesizer, wavs = Synthesizer(), []
    for n, text in enumerate(SENTENCES[:3]):
        result = synthesizer.synthesize(text, VOICES[n % 2])
        wavs.append(root / "wav" / f"utt{n}.flac")
        wavs[-1].parent.mkdir(exist_ok=True)
        sf.write(wavs[-1], result.samples, result.sample_rate)
    return {"root": root, "model_dir": model_dir, "wavs": wavs, "teacher": teacher}


@pytest.fixture(scope="module")
def model(trained: dict) -> SpeechLLM:
    return SpeechLLM.from_pretrained(trained["model_dir"])


def test_every_audio_form_gets_the_same_answer(trained: dict, model: SpeechLLM) -> None:
    wavs = trained["wavs"]
    answers = [model.answer(w, QUESTION) for w in wavs]
    assert all(isinstance(a, str) for a in answers) and any(answers) and len(set(answers)) > 1
    samples, rate = sf.read(wavs[0], dtype="float32")
    assert rate == 22050  # resampled to 16 kHz as stage 2 does
    pcm, _ = sf.read(wavs[0], dtype="int16")
    stereo = np.stack([samples, samples], axis=1)
    unsigned = (pcm.astype(np.int32) + 32768).astype(np.uint16)  # offset PCM
    for form, kwargs in [((samples, rate), {}), (samples, {"sample_rate": rate}), ((pcm, rate), {}),
                         ((unsigned, rate), {}), ((stereo, rate), {}), ((stereo.T, rate), {}), (str(wavs[0]), {})]:
        assert model.answer(form, QUESTION, **kwargs) == answers[0], type(form)
    assert model.answer(wavs, QUESTION) == answers  # batched
    assert model.answer(wavs, QUESTION, batch_size=1) == answers
    assert model.answer(wavs, [QUESTION] * 3) == answers  # one question per audio input
    other = "Tell me who the sentence is about: {transcript}"
    assert model.answer(wavs[1], [QUESTION, other]) == [answers[1], model.answer(wavs[1], other)]
    # Without a slot the speech follows the question.
    assert model.answer(wavs[2], "Who is this sentence about?") == answers[2]
    assert model.answer(wavs[2], QUESTION, max_new_tokens=2) == model.generate(
        model.features(wavs[2])[None], torch.tensor([model.features(wavs[2]).shape[0]]), [QUESTION],
        max_new_tokens=2)[0]
    assert "".join(model.stream(wavs[0], QUESTION)).strip() == answers[0]


def test_bad_inputs_are_one_line_errors(trained: dict, model: SpeechLLM) -> None:
    samples, _ = sf.read(trained["wavs"][0], dtype="float32")
    with pytest.raises(MtbiError, match="needs its sample rate"):
        model.answer(samples, QUESTION)
    with pytest.raises(MtbiError, match="has 2 .transcript. slots"):
        model.answer(trained["wavs"][0], "{transcript} or {transcript}?")
    with pytest.raises(MtbiError, match="3 audio inputs and 2 questions"):
        model.answer(trained["wavs"], [QUESTION, QUESTION])
    with pytest.raises(AudioError, match="nowhere.flac: audio file not found"):
        model.answer(trained["root"] / "nowhere.flac", QUESTION)
    with pytest.raises(MtbiError, match="audio samples: 399 samples at 16000 Hz is too short"):
        model.answer((samples[:399], 16000), QUESTION)
    with pytest.raises(MtbiError, match="num_return_sequences must be 1"):
        model.answer(trained["wavs"][0], QUESTION, num_return_sequences=2)
    with pytest.raises(MtbiError, match="use answer.. for beam search"):
        list(model.stream(trained["wavs"][0], QUESTION, num_beams=2))
    with pytest.raises(ValueError):  # an error of generate in the streaming thread reaches the caller
        list(model.stream(trained["wavs"][0], QUESTION, max_new_tokens=-1))


def test_an_exported_dir_moves_and_answers_identically(trained: dict, model: SpeechLLM, tmp_path: Path) -> None:
    (trained["model_dir"] / "env.txt").write_text("mtbi_commit: 0123abc\n")
    out = export_sllm(trained["model_dir"], tmp_path / "share" / "my_sllm")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "chat_template.jinja", "config.yaml", "encoder",
                                                      "llm", "model.safetensors"]
    config_text = (out / "config.yaml").read_text()
    assert str(trained["root"]) not in config_text and str(tmp_path) not in config_text  # no absolute path
    config = yaml.safe_load(config_text)
    assert config["llm"] == {"model": "./llm", "revision": None} and config["encoder_dir"] == "./encoder"
    assert config["generation"]["max_new_tokens"] == 8 and config["export"]["from"] == "sllm_random"
    card = (out / "README.md").read_text()
    for section in ("# my_sllm", "## Use", "## Model", "## Training", "## Benchmark", "## Intended use and limits"):
        assert section in card
    assert "Not benchmarked" in card and "trained at commit 0123abc" in card
    moved = tmp_path / "elsewhere" / "copy"
    shutil.move(str(tmp_path / "share"), moved)
    reloaded = SpeechLLM.from_pretrained(moved / "my_sllm")
    assert reloaded.answer(trained["wavs"], QUESTION) == model.answer(trained["wavs"], QUESTION)
    again = export_sllm(trained["model_dir"], moved / "my_sllm", name="renamed")  # an earlier export is replaced
    assert (again / "README.md").read_text().startswith("# renamed\n")
    with pytest.raises(MtbiError, match="is not an exported SLLM dir"):
        export_sllm(trained["model_dir"], trained["root"] / "wav")
    with pytest.raises(MtbiError, match="is .or holds. the model dir"):
        export_sllm(trained["model_dir"], trained["model_dir"])


def test_hub_models_are_referenced_and_an_export_loads_by_hub_id(trained: dict, model: SpeechLLM,
                                                                  hub_cache: Path, tmp_path: Path) -> None:
    commit = add_to_hub_cache(hub_cache, "org/teacher", trained["teacher"])
    llm = ResolvedModel(hub_cache / "models--org--teacher" / "snapshots" / commit, "org/teacher", commit)
    model_dir = make_trained_dir(llm, trained["root"] / "exp" / "encoder", tmp_path / "exp" / "sllm_hub")
    out = export_sllm(model_dir, tmp_path / "my_sllm")
    assert yaml.safe_load((out / "config.yaml").read_text())["llm"] == {"model": "org/teacher", "revision": commit}
    assert not (out / "llm").exists() and f"`org/teacher` at commit `{commit}`" in (out / "README.md").read_text()
    answers = model.answer(trained["wavs"], QUESTION)  # the same weights over the same LLM
    assert SpeechLLM.from_pretrained(out).answer(trained["wavs"], QUESTION) == answers
    export_commit = add_to_hub_cache(hub_cache, "org/my_sllm", out)
    from_hub = SpeechLLM.from_pretrained("org/my_sllm", revision=export_commit)
    assert from_hub.answer(trained["wavs"], QUESTION) == answers
    copied = export_sllm(model_dir, tmp_path / "copied", copy_models=True)
    assert yaml.safe_load((copied / "config.yaml").read_text())["llm"] == {"model": "./llm", "revision": None}


def _ask(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtbi.bin.ask", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.slow
def test_ask_answers_one_file_and_a_wav_scp(trained: dict, model: SpeechLLM, tmp_path: Path) -> None:
    wavs, model_dir = trained["wavs"], str(trained["model_dir"])
    one = _ask("--model_dir", model_dir, "--wav", str(wavs[0]), "--question", QUESTION)
    assert one.returncode == 0, one.stderr
    assert one.stdout == model.answer(wavs[0], QUESTION) + "\n"
    streamed = _ask("--model_dir", model_dir, "--wav", str(wavs[0]), "--question", QUESTION, "--stream")
    assert streamed.stdout.strip() == one.stdout.strip()
    scp = tmp_path / "my.scp"
    scp.write_text("".join(f"u{n} {w}\n" for n, w in reversed(list(enumerate(wavs)))))
    questions = tmp_path / "questions.txt"
    other = "Who is the main character here?"
    questions.write_text(f"{QUESTION}\n\n{other}\n")
    out = tmp_path / "answers" / "answers.jsonl"
    many = _ask("--model_dir", model_dir, "--wav_scp", str(scp), "--questions", str(questions), "--out", str(out))
    assert many.returncode == 0, many.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["utt"], r["question_id"]) for r in records] == [(f"u{n}", k) for n in range(3) for k in (1, 2)]
    assert [r["answer"] for r in records if r["question_id"] == 1] == model.answer(wavs, QUESTION)
    assert [r["answer"] for r in records if r["question_id"] == 2] == model.answer(wavs, other)
    again = _ask("--model_dir", model_dir, "--wav_scp", str(scp), "--questions", str(questions), "--out", str(out))
    assert again.returncode == 0 and "already done" in again.stderr
    for args, message in [
        (["--wav", str(wavs[0]), "--questions", str(questions)], "--questions and --out go with --wav_scp"),
        (["--wav_scp", str(scp), "--question", QUESTION], "--wav_scp needs --out"),
        (["--wav", str(tmp_path / "missing.wav"), "--question", QUESTION], "missing.wav: audio file not found"),
    ]:
        failed = _ask("--model_dir", model_dir, *args)
        assert failed.returncode == 1 and message in failed.stderr.splitlines()[-1], failed.stderr
