"""The trained-SLLM directory: stage 6 writes it, stage 7 (and users) read it; this module is its
one owner::

    <model dir>/config.yaml           the resolved config: train (TrainConfig), teacher (its name), llm
                                      (hub id + commit, or a path relative to the model dir), llm_dtype,
                                      encoder_dir (relative to the model dir), generation (the teacher's
                                      decoding parameters: how the model answers by default),
                                      training_data (targets file as given, tasks, examples, utterances,
                                      hours); no absolute path, so exp/ can be moved or copied to
                                      another machine
    <model dir>/chat_template.jinja   optional (an exported dir): the chat template to render prompts
                                      with, instead of the LLM tokenizer's own
    <model dir>/model.safetensors     the final trainable weights (connector, LoRA, the encoder if trained)
    <model dir>/checkpoints/step_<N>/ model.safetensors, optimizer.pt, trainer_state.json, and per rank
                                      rng.<rank>.pt (its RNG state and loss-log window)
    <model dir>/losses.jsonl, loss_curve.png, tensorboard/, .done
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file
from transformers import PreTrainedTokenizerBase

from mtbi.config import from_dict
from mtbi.errors import MtbiError
from mtbi.hub import MODEL_FILES, ResolvedModel, relative_path, resolve_model
from mtbi.models.speech_llm import SpeechLLMModel, build_speech_llm
from mtbi.stage import atomic_write
from mtbi.tasks.generation import GenerationParams
from mtbi.train.config import TrainConfig

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
SLLM_FILES = [*MODEL_FILES, "*.yaml"]  # what a hub repo of an exported SLLM dir is downloaded with
WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_DIR = "checkpoints"
TRAINER_STATE = "trainer_state.json"  # written last: a checkpoint without it is incomplete


def resolved_config(config: TrainConfig, teacher: str, llm_dtype: str, encoder_dir: str | Path,
                    llm: ResolvedModel, model_dir: str | Path, generation: GenerationParams) -> dict:
    """What ``config.yaml`` of ``model_dir`` records: the training config, the teacher's name, the
    frozen LLM and its dtype, and the encoder dir, by references that survive moving ``exp/``, and
    the teacher's decoding parameters, the model's default way to answer."""
    return {"train": dataclasses.asdict(config), "teacher": teacher, "llm": llm.reference(model_dir),
            "llm_dtype": llm_dtype, "encoder_dir": relative_path(encoder_dir, model_dir),
            "generation": dataclasses.asdict(generation)}


def write_config(model_dir: str | Path, resolved: dict) -> None:
    """Write ``config.yaml``."""
    with atomic_write(Path(model_dir) / CONFIG_FILE) as f:
        yaml.safe_dump(resolved, f, sort_keys=False)


# Recorded for answering and for the model card; they do not change what training makes.
RUNTIME_KEYS = ("generation", "training_data")


def training_identity(resolved: dict) -> dict:
    """``resolved`` less its runtime keys: what the trained weights depend on (stage 6's stamp)."""
    return {k: v for k, v in resolved.items() if k not in RUNTIME_KEYS}


def stored_equivalent(model_dir: str | Path, resolved: dict) -> dict:
    """The training identity of ``resolved``, or that of the model dir's own ``config.yaml`` where
    it says the same in an older form: written by an mtbi whose training config lacked keys added
    since, which ``resolved`` holds at their defaults. Stage 6 then finds an upgraded checkout's
    model already trained (or resumes it) instead of refusing it as another config's."""
    identity = training_identity(resolved)
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        return identity
    stored = training_identity(read_config(model_dir))
    try:
        filled = {**stored, "train": dataclasses.asdict(from_dict(TrainConfig, stored["train"], str(path)))}
    except (MtbiError, KeyError, TypeError):  # not a config this version reads: compared as it is
        return identity
    return stored if filled == identity else identity


def read_config(model_dir: str | Path) -> dict:
    """The resolved config of ``config.yaml``."""
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise MtbiError(f"{path} is missing; it is made by stage 6 (training)")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def record_generation(model_dir: str | Path, generation: dict) -> None:
    """Record the decoding parameters ``generation`` in the trained ``model_dir``'s ``config.yaml``
    (they are not part of what training made, so a trained dir takes the teacher's current ones)."""
    resolved = read_config(model_dir)
    if resolved.get("generation") != generation:
        write_config(model_dir, {**resolved, "generation": generation})


def check_same_config(model_dir: str | Path, identity: dict) -> None:
    """Refuse to resume checkpoints that another config wrote (``identity``: see :func:`training_identity`)."""
    model_dir = Path(model_dir)
    if (model_dir / CONFIG_FILE).is_file() and (model_dir / CHECKPOINT_DIR).is_dir():
        if training_identity(read_config(model_dir)) != identity:
            raise MtbiError(f"{model_dir} holds checkpoints of another config ({model_dir / CONFIG_FILE}); "
                            "remove the dir or train under another tag")


def checkpoint_path(model_dir: str | Path, step: int) -> Path:
    """The checkpoint dir of ``step``."""
    return Path(model_dir) / CHECKPOINT_DIR / f"step_{step:07d}"


def checkpoints(model_dir: str | Path) -> list[Path]:
    """The complete checkpoints of ``model_dir``, oldest first."""
    found = [p for p in (Path(model_dir) / CHECKPOINT_DIR).glob("step_*") if (p / TRAINER_STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def write_trainer_state(checkpoint: Path, state: dict) -> None:
    """Write a checkpoint's ``trainer_state.json`` (step, world size, training seconds)."""
    (checkpoint / TRAINER_STATE).write_text(json.dumps(state))


def read_trainer_state(checkpoint: Path) -> dict:
    """A checkpoint's ``trainer_state.json``."""
    return json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))


def training_summary(model_dir: str | Path) -> tuple[int | None, float | None]:
    """(steps, training seconds) of the last checkpoint; (None, None) without one."""
    found = checkpoints(model_dir)
    if not found:
        return None, None
    state = read_trainer_state(found[-1])
    return state["step"], state.get("train_seconds")


def weights_path(model_dir: str | Path, checkpoint: str | None = None) -> Path:
    """The final weights, or those of ``checkpoints/<checkpoint>``."""
    model_dir = Path(model_dir)
    return model_dir / CHECKPOINT_DIR / checkpoint / WEIGHTS_FILE if checkpoint else model_dir / WEIGHTS_FILE


def generation_params(model_dir: str | Path) -> GenerationParams:
    """How the model of ``model_dir`` answers by default: its teacher's decoding parameters, or
    the defaults for a dir trained before they were recorded."""
    recorded = read_config(model_dir).get("generation")
    if recorded is None:
        logger.warning("%s records no decoding parameters (trained by an older mtbi); answering with "
                       "at most %d new tokens", Path(model_dir) / CONFIG_FILE, GenerationParams().max_new_tokens)
        return GenerationParams()
    return from_dict(GenerationParams, recorded, str(Path(model_dir) / CONFIG_FILE))


def load_sllm(model_dir: str | Path, checkpoint: str | None = None,
              device: str | torch.device = "cpu") -> tuple[SpeechLLMModel, PreTrainedTokenizerBase]:
    """The SLLM trained in ``model_dir`` (its final weights, or those of ``checkpoints/<checkpoint>``),
    in eval mode on ``device``, and its tokenizer (with the dir's own chat template, if it has one)."""
    weights = weights_path(model_dir, checkpoint)
    resolved = read_config(model_dir)
    if not weights.is_file():
        raise MtbiError(f"{weights} is missing; it is made by stage 6 (training)")
    config_file = Path(model_dir) / CONFIG_FILE
    if "llm" not in resolved:
        raise MtbiError(f"{config_file} was written by an older mtbi (absolute llm_dir); remove "
                        f"{model_dir} and run stage 6 again to train it with this version")
    config = from_dict(TrainConfig, resolved["train"], str(config_file))
    llm = resolve_model(resolved["llm"]["model"], resolved["llm"]["revision"], model_dir, what=f"{config_file}: llm")
    model, tokenizer = build_speech_llm(config.model, Path(model_dir) / resolved["encoder_dir"], llm.path,
                                        resolved["llm_dtype"], device)
    model.load_trainable_state_dict(load_file(weights), str(weights))
    template = Path(model_dir) / CHAT_TEMPLATE_FILE
    if template.is_file():
        tokenizer.chat_template = template.read_text(encoding="utf-8")
    return model.eval(), tokenizer
