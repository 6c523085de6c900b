"""Small real data for SLLM tests: espeak-ng speech with word timings, Whisper log-mel
features (kaldiio), rule-made targets, a random tiny Conformer encoder dir, a random teacher, and
a trained-like SLLM dir (random connector)."""

from __future__ import annotations

import json
from pathlib import Path

import kaldiio
import soxr
import torch
import yaml
from safetensors.torch import save_file
from teacher_fixtures import SENTENCES, make_random_teacher

from mtbi.data.features import SAMPLE_RATE, log_mel
from mtbi.hub import ResolvedModel
from mtbi.mini.rules import rule_answer
from mtbi.mini.tts import Synthesizer, Voice
from mtbi.models.encoders import ConformerConfig, EncoderConfig, build_encoder, save_encoder
from mtbi.models.speech_llm import SpeechLLMConfig, build_speech_llm
from mtbi.tasks.bank import load_task_bank
from mtbi.tasks.generation import GenerationParams
from mtbi.train import sllm_dir
from mtbi.train.config import TrainConfig

TASKS = ("transcription", "qa_subject", "qa_color", "continuation")
VOICES = (Voice("en-us", 175, 50), Voice("en-gb-x-rp+f3", 160, 60))


def make_imitation_data(root: Path, num_utts: int = 8) -> dict[str, Path]:
    """Features, word_align and targets.jsonl for ``num_utts`` utterances under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    synthesizer = Synthesizer()
    bank = load_task_bank()
    align_lines, frames, records = [], {}, []
    with kaldiio.WriteHelper(f"ark,scp:{root / 'feats.ark'},{root / 'feats.scp'}") as writer:
        for n in range(num_utts):
            text = SENTENCES[n % len(SENTENCES)]
            utt = f"spk{n % 2}-utt{n:03d}"
            result = synthesizer.synthesize(text, VOICES[n % 2])
            samples = soxr.resample(result.samples, result.sample_rate, SAMPLE_RATE)
            feats = log_mel(samples).numpy()
            writer(utt, feats)
            frames[utt] = feats.shape[0]
            align_lines += [f"{utt} {w.start:.3f} {w.end:.3f} {word}" for w, word in zip(result.words, text.split())]
            for task in TASKS:
                prompt_id = bank.prompt_ids(task, "seen")[n % 2]
                records.append({"utt": utt, "task": task, "prompt_id": prompt_id, "prompt": bank.prompt(prompt_id),
                                "transcript": text, "response": rule_answer(bank.task(task).rule, text),
                                "teacher": "rule", "gen": {}})
    (root / "utt2num_frames").write_text("".join(f"{u} {n}\n" for u, n in sorted(frames.items())))
    (root / "word_align").write_text("".join(line + "\n" for line in align_lines))
    (root / "targets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return {"feats": root, "targets": root / "targets.jsonl", "word_align": root / "word_align"}


def make_random_encoder(out_dir: Path, seed: int = 0) -> Path:
    """A random 2-block Conformer encoder dir (40 ms frames, 64 channels)."""
    torch.manual_seed(seed)
    config = EncoderConfig(kind="conformer", conformer=ConformerConfig(
        output_size=64, attention_heads=4, linear_units=128, num_blocks=2, cnn_module_kernel=7))
    save_encoder(out_dir, build_encoder(config))
    return out_dir


def make_training_setup(root: Path) -> dict:
    """What stage 6 reads, under ``root``: imitation data of 8 utterances, a random encoder dir and
    a random teacher with its config (``root``, ``data``, ``encoder``, ``teacher_conf``)."""
    data = make_imitation_data(root / "data", num_utts=8)
    encoder_dir, teacher_dir = make_model_dirs(root)
    teacher_conf = root / "teacher.yaml"
    teacher_conf.write_text(yaml.safe_dump({"kind": "hf", "name": "random", "model_dir": str(teacher_dir)}))
    return {"root": root, "data": data, "encoder": encoder_dir, "teacher_conf": teacher_conf}


def make_model_dirs(root: Path) -> tuple[Path, Path]:
    """(encoder dir, teacher dir) with random weights."""
    return make_random_encoder(root / "encoder"), make_random_teacher(root / "teacher")


def make_trained_dir(llm: ResolvedModel, encoder: Path, model_dir: Path) -> Path:
    """A stage-6-like SLLM dir with random connector weights over ``encoder`` and the LLM ``llm``."""
    torch.manual_seed(0)
    config = TrainConfig(model=SpeechLLMConfig())
    model, _ = build_speech_llm(config.model, encoder, llm.path)
    model_dir.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.trainable_state_dict().items()}, model_dir / "model.safetensors")
    sllm_dir.write_config(model_dir, sllm_dir.resolved_config(config, "random", "float32", encoder, llm, model_dir,
                                                               GenerationParams(max_new_tokens=8, batch_size=2)))
    return model_dir
