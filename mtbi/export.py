"""Export a trained SLLM dir as a self-contained, relocatable dir to share (``mtbi.bin.export``)::

    <out dir>/config.yaml          the resolved config; llm and encoder by hub id + commit, or ./llm, ./encoder
    <out dir>/model.safetensors    the trainable weights (connector, LoRA, the encoder if trained)
    <out dir>/encoder/             encoder.yaml (+ the Conformer's weights, or ./whisper when copied)
    <out dir>/llm/                 the frozen LLM, when it is a local dir (a recipe-trained teacher) or copied
    <out dir>/chat_template.jinja  the chat template the prompts were rendered with
    <out dir>/README.md            the model card (:mod:`mtbi.model_card`)

Models that come from the hub are referenced by id and commit unless ``copy_models``; local
ones are always copied (only the files a model needs: :data:`mtbi.hub.MODEL_FILES`).
``SpeechLLM.from_pretrained(<out dir>)`` loads it on any machine that has those hub models.
"""

from __future__ import annotations

import fnmatch
import logging
import shutil
from dataclasses import replace
from pathlib import Path

from mtbi import __version__
from mtbi.config import load_config, save_config
from mtbi.errors import MtbiError
from mtbi.hub import MODEL_FILES, ResolvedModel, resolve_model
from mtbi.models.encoders import CONFIG_FILE as ENCODER_CONFIG
from mtbi.models.encoders import WEIGHTS_FILE as ENCODER_WEIGHTS
from mtbi.models.encoders import EncoderConfig
from mtbi.stage import atomic_dir
from mtbi.train import sllm_dir

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"


def copy_model_files(source: Path, dest: Path) -> None:
    """Copy the files of the model dir ``source`` that loading it needs into ``dest``."""
    dest.mkdir(parents=True)
    for path in sorted(source.iterdir()):
        if path.is_file() and any(fnmatch.fnmatch(path.name, p) for p in MODEL_FILES):
            shutil.copy2(path, dest / path.name)


def _model_reference(model: ResolvedModel, dest: Path, name: str, copy_models: bool) -> dict:
    """The exported dir's reference to ``model``: its hub id and commit, or a copy in ``dest/name``."""
    if model.hub_id and not copy_models:
        return {"model": model.hub_id, "revision": model.commit}
    copy_model_files(model.path, dest / name)
    return {"model": f"./{name}", "revision": None}


def export_encoder(encoder_dir: Path, dest: Path, copy_models: bool) -> EncoderConfig:
    """An encoder dir in ``dest``: the Conformer's config and weights, or Whisper's config with
    its model referenced (or copied into ``dest/whisper``). Returns the config written."""
    config = load_config(encoder_dir / ENCODER_CONFIG, EncoderConfig)
    dest.mkdir()
    if config.kind == "whisper":
        whisper = resolve_model(config.model_dir, config.revision, encoder_dir, what=f"{encoder_dir}: model_dir")
        reference = _model_reference(whisper, dest, "whisper", copy_models)
        config = replace(config, model_dir=reference["model"], revision=reference["revision"])
    else:
        shutil.copy2(encoder_dir / ENCODER_WEIGHTS, dest / ENCODER_WEIGHTS)
    save_config(config, dest / ENCODER_CONFIG)
    return config


def _check_out_dir(model_dir: Path, out_dir: Path) -> None:
    """Refuse to replace anything but an earlier export, and to export into the model dir."""
    if out_dir.resolve() == model_dir.resolve() or model_dir.resolve().is_relative_to(out_dir.resolve()):
        raise MtbiError(f"--out_dir {out_dir} is (or holds) the model dir {model_dir}; export somewhere else")
    if out_dir.exists() and any(out_dir.iterdir()):
        config = out_dir / sllm_dir.CONFIG_FILE
        if not (config.is_file() and "export" in sllm_dir.read_config(out_dir)):
            raise MtbiError(f"{out_dir} exists and is not an exported SLLM dir; remove it or choose another --out_dir")


def export_sllm(model_dir: str | Path, out_dir: str | Path, checkpoint: str | None = None,
                copy_models: bool = False, name: str | None = None) -> Path:
    """Write the exported dir of the trained ``model_dir`` (its final weights, or those of
    ``checkpoints/<checkpoint>``) to ``out_dir``, replacing an earlier export there. Returns it."""
    from transformers import AutoTokenizer

    from mtbi.model_card import model_card

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    weights = sllm_dir.weights_path(model_dir, checkpoint)
    resolved = sllm_dir.read_config(model_dir)
    if not weights.is_file():
        raise MtbiError(f"{weights} is missing; it is made by stage 6 (training)")
    if "llm" not in resolved:
        raise MtbiError(f"{model_dir / sllm_dir.CONFIG_FILE} was written by an older mtbi (absolute llm_dir); "
                        "retrain it with this version to export it")
    _check_out_dir(model_dir, out_dir)
    llm = resolve_model(resolved["llm"]["model"], resolved["llm"]["revision"], model_dir,
                        what=f"{model_dir / sllm_dir.CONFIG_FILE}: llm")
    with atomic_dir(out_dir) as tmp:
        llm_reference = _model_reference(llm, tmp, "llm", copy_models)
        logger.info("LLM: %s", "copied into llm/" if llm_reference["revision"] is None
                    else f"{llm.hub_id} at commit {llm.commit}")
        encoder = export_encoder(model_dir / resolved["encoder_dir"], tmp / "encoder", copy_models)
        shutil.copy2(weights, tmp / sllm_dir.WEIGHTS_FILE)
        template = AutoTokenizer.from_pretrained(llm.path).chat_template
        own_template = model_dir / sllm_dir.CHAT_TEMPLATE_FILE
        if own_template.is_file():
            template = own_template.read_text(encoding="utf-8")
        if template:
            (tmp / sllm_dir.CHAT_TEMPLATE_FILE).write_text(template, encoding="utf-8")
        exported = {**resolved, "llm": llm_reference, "encoder_dir": "./encoder",
                    "export": {"from": model_dir.resolve().name, "checkpoint": checkpoint, "mtbi": __version__}}
        sllm_dir.write_config(tmp, exported)
        card = model_card(name or out_dir.name, model_dir, exported, encoder, weights, checkpoint)
        (tmp / CARD_FILE).write_text(card, encoding="utf-8")
    return out_dir


def push_to_hub(out_dir: str | Path, repo_id: str, private: bool = False) -> str:
    """Upload the exported ``out_dir`` to the hub repo ``repo_id`` (created if needed); returns its URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(out_dir), repo_id=repo_id, commit_message="Upload an mtbi SLLM")
    except HfHubHTTPError as err:
        raise MtbiError(f"pushing {out_dir} to {repo_id} failed ({str(err).splitlines()[0]}); log in with "
                        "hf auth login (or set HF_TOKEN) and check the repo name") from None
    return f"https://huggingface.co/{repo_id}"
